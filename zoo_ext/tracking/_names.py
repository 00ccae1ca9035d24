"""The MLflow keys of a study's params, metrics and tags, and the record of the names MLflow would have rejected.

A name MLflow rejects is logged under the key :func:`~zoo_ext.tracking._mapping.mlflow_keys` gives;
the parent run's artifact :data:`~zoo_ext.tracking._mapping.NAMES_ARTIFACT` maps each such original
name to its key, merged with what other processes saved there.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_ext.tracking._connection import Connection
from zoo_ext.tracking._mapping import NAMES_ARTIFACT, mlflow_keys, text

if TYPE_CHECKING:
    from mlflow.entities import Metric, Param, RunTag


def now_ms() -> int:
    """Return the current time in milliseconds, MLflow's timestamps."""
    return int(time.time() * 1000)


class Names:
    """Turns original names into MLflow entities with keys MLflow accepts; remembers the renamed ones to save them."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self._save_lock = threading.Lock()
        #: kind (params, metrics, tags) → original name → MLflow key, for the names MLflow would reject.
        self._renamed: dict[str, dict[str, str]] = {}
        self._saved = True

    def keys(self, kind: str, names: Iterable[str]) -> dict[str, str]:
        """Return :func:`mlflow_keys` of ``names``; remember the renamed ones (``kind``) for :data:`NAMES_ARTIFACT`."""
        keys = mlflow_keys(names)
        renamed = {name: key for name, key in keys.items() if name != key}
        if renamed:
            with self._lock:
                known = self._renamed.setdefault(kind, {})
                if any(name not in known for name in renamed):
                    self._saved = False
                for name, key in renamed.items():
                    known.setdefault(name, key)
        return keys

    def params(self, params: Mapping[str, Any]) -> list[Param]:
        """Return ``params`` (original name → value) as MLflow params, values as text within MLflow's limit."""
        from mlflow.entities import Param

        keys = self.keys("params", params)
        return [Param(keys[name], text(value)) for name, value in params.items()]

    def metrics(self, points: Iterable[tuple[str, float, int]], timestamp: int | None = None) -> list[Metric]:
        """Return metric ``points`` (original name, value, step) as MLflow metrics at ``timestamp`` (default: now)."""
        from mlflow.entities import Metric

        timestamp = now_ms() if timestamp is None else timestamp
        points = list(points)
        keys = self.keys("metrics", (name for name, _, _ in points))
        return [Metric(keys[name], value, timestamp, step) for name, value, step in points]

    def tags(self, tags: Mapping[str, str]) -> list[RunTag]:
        """Return ``tags`` (original name → value) as MLflow tags."""
        from mlflow.entities import RunTag

        keys = self.keys("tags", tags)
        return [RunTag(keys[name], value) for name, value in tags.items()]

    def save(self, run_id: str) -> None:
        """Merge the renamed names into run ``run_id``'s (the parent run's) :data:`NAMES_ARTIFACT`, if new ones came."""
        if self._saved or not run_id or not self._connection.enabled:
            return
        with self._save_lock:
            with self._lock:
                names = {kind: dict(mapping) for kind, mapping in self._renamed.items()}
                self._saved = True
            self._connection.call(self._upload, run_id, names)

    def _upload(self, run_id: str, names: dict[str, dict[str, str]]) -> None:
        client = self._connection.client
        with tempfile.TemporaryDirectory(prefix="zoo_ext_") as tmp:
            if any(item.path == NAMES_ARTIFACT for item in client.list_artifacts(run_id)):
                saved = client.download_artifacts(run_id, NAMES_ARTIFACT, tmp)
                for kind, mapping in json.loads(Path(saved).read_text()).items():
                    names[kind] = {**mapping, **names.get(kind, {})}
            path = Path(tmp) / NAMES_ARTIFACT
            path.write_text(json.dumps(names, indent=2, sort_keys=True))
            client.log_artifact(run_id, str(path))

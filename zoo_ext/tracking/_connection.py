"""The connection to MLflow: one ``MlflowClient``, the study's experiment, and the error policy every call goes through.

Every run is addressed by id (never through the fluent API's per-thread active run), so threads
and worker processes log side by side. Error policy: a connection failure (the server or database
cannot be reached, a 5xx answer) logs one warning and switches tracking off for this process; a
call MLflow rejects (an invalid value, a run that already exists, ...) is a warning and tracking
goes on; any error while connecting leaves the study untracked, with one warning. A SQLite store is
opened under a file lock (``<database>.lock``): MLflow breaks a new store that two processes create
at the same moment.
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import threading
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from zoo_ext.storage import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

_logger = logging.getLogger("zoo_ext.tracking")

#: Params or tags per ``log_batch`` call (MLflow's limit).
_BATCH = 100
#: HTTP statuses of the MLflow errors that reject one call (invalid value, already exists, not found, conflict).
_REJECTED = frozenset({400, 404, 409})
#: Seconds to wait for another process creating the same SQLite store (creation takes about 7 s).
_STORE_LOCK_TIMEOUT = 300
#: ``Connection.tracking_uri`` until MLflow tells the default one (no URI given, mlflow not imported yet).
_UNRESOLVED_URI = "the default tracking URI"


def is_outage(exc: BaseException) -> bool:
    """Return True for a failure to reach MLflow (connection, database, 5xx), False for a rejected call."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.get_http_status_code() not in _REJECTED
    return isinstance(exc, OSError)


def first_line(exc: BaseException) -> str:
    """Return the first line of ``exc``'s message (its type when empty), passwords redacted."""
    return redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Hold ``<database>.lock`` while a ``sqlite:///`` store is opened (and maybe created); other URIs: no lock."""
    database = None
    if uri.startswith("sqlite:///"):
        from sqlalchemy.engine import make_url

        database = make_url(uri).database
    if not database or database == ":memory:":
        yield
        return
    from filelock import FileLock

    with FileLock(f"{database}.lock", timeout=_STORE_LOCK_TIMEOUT):
        yield


class Connection:
    """One study's way to MLflow: the client, the experiment, and whether tracking is still on (and if not, why).

    ``enabled`` is False until :meth:`connect` succeeded and once MLflow became unreachable;
    ``failure`` then says why. ``storage`` is the study's ``--storage`` value (None: in memory),
    named in the ``mlflow-sync`` command the warnings give; with ``quiet`` there is no such
    warning: the caller reports ``failure``.
    """

    client: MlflowClient

    def __init__(
        self,
        *,
        tracking_uri: str | None,
        experiment: str,
        study_name: str,
        study_uid: str,
        storage: str | None = None,
        quiet: bool = False,
    ) -> None:
        self._requested_uri = tracking_uri
        self.tracking_uri = tracking_uri or _UNRESOLVED_URI
        self.experiment_name = experiment
        self.experiment_id = ""
        self.study_name = study_name
        #: The study's id in MLflow: every run of the study is tagged with it and found by it.
        self.study_uid = study_uid
        self.storage = storage
        self.quiet = quiet
        #: Why tracking is off ("MLflow at URI is unavailable (reason)"); "" while it is on or not set up yet.
        self.failure = ""
        self.enabled = False
        self._warned = False
        self._rejections: set[str] = set()
        self._lock = threading.Lock()

    def connect(self) -> None:
        """Import mlflow, open (maybe create) the store and the experiment; on any error warn once, stay off."""
        try:
            import mlflow
            from mlflow import MlflowClient

            self.tracking_uri = self._requested_uri or mlflow.get_tracking_uri()
            if self._reachable():
                with _store_lock(self.tracking_uri):
                    self.client = MlflowClient(tracking_uri=self.tracking_uri)
                    self._open_experiment()
                self.enabled = True
        except Exception as exc:  # noqa: BLE001 - MLflow failing at start-up must not stop the study
            self.warn(exc)

    def _reachable(self) -> bool:
        if not self.tracking_uri.startswith(("http://", "https://")):
            return True
        try:
            with urllib.request.urlopen(f"{self.tracking_uri.rstrip('/')}/health", timeout=5):
                return True
        except OSError as exc:
            self.warn(exc)
            return False

    def _open_experiment(self) -> None:
        """Set ``experiment_id``, creating the experiment unless it exists (or another process just created it)."""
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                self.experiment_id = self.client.create_experiment(self.experiment_name)
            except Exception:
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
                self.experiment_id = experiment.experiment_id
        else:
            self.experiment_id = experiment.experiment_id

    def sync_command(self) -> str | None:
        """Return the ``mlflow-sync`` command that logs this study later, shell-quoted, passwords redacted.

        It names the study's storage, the tracking URI once known and the experiment; None for a study in memory.
        """
        if self.storage is None:
            return None
        argv = ["python", "-m", "zoo_ext", "mlflow-sync", "--storage", redact(self.storage),
                "--study-name", self.study_name]  # fmt: skip
        if self.tracking_uri != _UNRESOLVED_URI:
            argv += ["--mlflow-tracking-uri", redact(self.tracking_uri)]
        return shlex.join([*argv, "--mlflow-experiment", self.experiment_name])

    def sync_hint(self, purpose: str) -> str:
        """Return how to log the study later: run the ``mlflow-sync`` command for ``purpose``, or why nothing can."""
        command = self.sync_command()
        if command is None:
            return "the study is in memory (no --storage): nothing can log it later"
        return f"run `{command}` {purpose}"

    def warn(self, exc: BaseException) -> None:
        """Say once that this process tracks no more, why, and how to log the study later (``quiet``: only why)."""
        if not self._warned:
            self._warned = True
            state = "is unavailable" if is_outage(exc) else "cannot be used"
            self.failure = f"MLflow at {redact(self.tracking_uri)} {state} ({first_line(exc)})"
            if not self.quiet:
                _logger.warning(
                    "%s: the study goes on without tracking; %s", self.failure, self.sync_hint("later to log it")
                )

    def switch_off(self, exc: BaseException) -> None:
        """Stop tracking in this process because of ``exc`` (one warning, see :meth:`warn`)."""
        self.enabled = False
        self.warn(exc)

    def attempt(self, fn: Callable[..., Any], *args: Any, quiet: bool = False, **kwargs: Any) -> tuple[bool, Any]:
        """Run an MLflow call; return (True, its result), or (False, None) if tracking is off or the call failed.

        A connection failure switches tracking off for this process (one warning); a call MLflow
        rejects is logged as a warning (unless ``quiet``; once per message) and tracking stays on.
        """
        if not self.enabled:
            return False, None
        try:
            return True, fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a tracking failure must not stop the study
            if is_outage(exc):
                self.switch_off(exc)
            elif not quiet:
                message = first_line(exc)
                with self._lock:
                    new = message not in self._rejections
                    self._rejections.add(message)
                if new:
                    _logger.warning("MLflow: %s failed (%s); tracking goes on", getattr(fn, "__name__", fn), message)
            return False, None

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run an MLflow call under the error policy (see :meth:`attempt`); return its result or None."""
        return self.attempt(fn, *args, **kwargs)[1]

    def log(
        self,
        run_id: str,
        metrics: Sequence[Metric] = (),
        params: Sequence[Param] = (),
        tags: Sequence[RunTag] = (),
    ) -> None:
        """Log in batches within MLflow's limits; a rejected batch is logged again item by item (the rest gets in)."""
        for start in range(0, max(len(metrics), len(params), len(tags)), _BATCH):
            chunk = (metrics[start : start + _BATCH], params[start : start + _BATCH], tags[start : start + _BATCH])
            done, _ = self.attempt(self.client.log_batch, run_id, *chunk, quiet=True)
            if done or not self.enabled:
                continue
            for metric in chunk[0]:
                self.call(self.client.log_batch, run_id, metrics=[metric])
            for param in chunk[1]:
                self.call(self.client.log_batch, run_id, params=[param])
            for tag in chunk[2]:
                self.call(self.client.log_batch, run_id, tags=[tag])

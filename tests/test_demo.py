"""The README's first command on a fresh machine: ``scripts/setup.sh`` and ``scripts/demo.sh`` in a copied checkout.

Each test copies what a clone would hold of the working tree (tracked and untracked-not-ignored files: the
uncommitted work under test, never generated files such as ``demo/`` or ``.venv/``), and installs zoo_ext
there into a virtual environment of its own that sees this interpreter's packages through a plain path line
in a ``.pth`` file, so set-up finds torch, MLflow, ... installed and adds zoo_ext only, editable from the copy.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import ROOT, run
from mlflow import MlflowClient
from optuna.trial import TrialState

#: The demo's budget here (the default, 20000 steps x 8 trials, is what users get).
DEMO_TIMESTEPS, DEMO_TRIALS = 1024, 3


def _copy_checkout(dest: Path) -> Path:
    """Copy the tracked and untracked-not-ignored files of the working tree to ``dest``; return ``dest``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split(b"\0")):
        source = ROOT / os.fsdecode(name)
        if source.is_file():  # a tracked file deleted in the working tree is in no clone of it either
            target = dest / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    return dest


def _share_packages(venv: Path) -> Path:
    """Let the virtual environment ``venv`` see this interpreter's packages; return its ``python``.

    A plain path line in a ``.pth`` file is added to ``sys.path`` without processing the ``.pth`` files of that
    folder, so this environment's own zoo_ext install (editable from /work/main or a CI checkout) stays out of it.
    """
    python = venv / "bin" / "python"
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], venv).stdout
    Path(purelib.strip(), "shared_packages.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return python


def _installed_from(python: Path | str, cwd: Path) -> tuple[Path, str]:
    """Return where ``python`` imports zoo_ext from, and the ``direct_url.json`` of its zoo_ext distribution."""
    code = (
        "import importlib.metadata, zoo_ext; print(zoo_ext.__file__); "
        "print(importlib.metadata.distribution('zoo_ext').read_text('direct_url.json'))"
    )
    module, direct_url = run([str(python), "-c", code], cwd).stdout.split("\n", 1)
    return Path(module), json.loads(direct_url)["url"]


def _assert_main_install_untouched() -> None:
    """The editable install the other tests use still points at the project root."""
    module, url = _installed_from(sys.executable, ROOT)
    assert module.is_relative_to(ROOT / "zoo_ext"), module
    assert url == ROOT.as_uri(), url


def _system_python(folder: Path) -> tuple[Path, Path]:
    """Make at ``folder`` a Python like Debian's; return its ``bin`` and site-packages folders.

    It is no virtual environment, and its pip refuses to install: an ``EXTERNALLY-MANAGED`` file is in its stdlib
    folder (PEP 668, what pip checks). It is a copy of the base interpreter's executable, with the stdlib linked in
    and pip in its site-packages.
    """
    stdlib = Path(sysconfig.get_path("stdlib"))
    lib = folder / "lib" / stdlib.name
    lib.mkdir(parents=True)
    for entry in stdlib.iterdir():
        if entry.name not in ("site-packages", "dist-packages", "EXTERNALLY-MANAGED"):
            (lib / entry.name).symlink_to(entry)
    (lib / "EXTERNALLY-MANAGED").write_text("[externally-managed]\nError=Use apt, or a virtual environment.\n")
    for shared_lib in Path(sys.base_prefix, "lib").glob("libpython*"):  # interpreters linked to $ORIGIN/../lib
        (folder / "lib" / shared_lib.name).symlink_to(shared_lib)
    (folder / "bin").mkdir()
    python3 = folder / "bin" / "python3"
    shutil.copy2(getattr(sys, "_base_executable", sys.executable), python3)
    site_dir = run([str(python3), "-c", "import site; print(site.getsitepackages()[0])"], folder).stdout.strip()
    Path(site_dir).mkdir(parents=True)
    pip_spec = importlib.util.find_spec("pip")
    assert pip_spec is not None and pip_spec.origin is not None
    (Path(site_dir) / "pip").symlink_to(Path(pip_spec.origin).parent)
    return folder / "bin", Path(site_dir)


@pytest.mark.slow
def test_setup_makes_and_uses_a_venv_when_python3_is_an_externally_managed_system_python(tmp_path: Path) -> None:
    tree = _copy_checkout(tmp_path / "clone")
    system_bin, system_site = _system_python(tmp_path / "system")
    env = {"PATH": f"{system_bin}{os.pathsep}{os.environ['PATH']}", "PYTHON": ""}
    # What the set-up used to do, and Debian or Ubuntu refuse: pip install into python3 itself.
    refused = run(["python3", "-m", "pip", "install", "--quiet", "torch==2.13.0"], tree, env=env, check=False)
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, refused.stderr
    # No .venv yet: the interpreter choice creates one from python3.
    chosen = run(["bash", "-c", 'source scripts/_python.sh && echo "$PYTHON"'], tree, env=env).stdout.strip()
    assert chosen == str(tree / ".venv" / "bin" / "python")
    prefixes = run([chosen, "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"], tree).stdout.split()
    assert prefixes == [str(tree / ".venv"), str(tmp_path / "system")]

    # The full set-up installs into that .venv (which sees torch & co. here, so only zoo_ext is installed).
    _share_packages(tree / ".venv")
    setup = run(["bash", "scripts/setup.sh"], tree, env=env, timeout=300)
    assert f"Installing zoo_ext into {tree / '.venv'}" in setup.stderr
    module, url = _installed_from(chosen, tree)
    assert module == tree / "zoo_ext" / "__init__.py"
    assert url == tree.as_uri()
    assert [p.name for p in system_site.iterdir()] == ["pip"], "the set-up installed into the system Python"
    _assert_main_install_untouched()


@pytest.mark.slow
def test_demo_runs_from_a_fresh_clone_and_its_best_trial_retrains(tmp_path: Path) -> None:
    tree = _copy_checkout(tmp_path / "clone")
    assert not (tree / "demo").exists() and not (tree / ".venv").exists()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tree / ".venv")], check=True)
    python = _share_packages(tree / ".venv")
    env = {
        "PYTHON": str(python),
        "ZOO_EXT_DEMO_TIMESTEPS": str(DEMO_TIMESTEPS),
        "ZOO_EXT_DEMO_TRIALS": str(DEMO_TRIALS),
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    env_without_tracking_uri = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    demo = subprocess.run(
        ["bash", "scripts/demo.sh"], cwd=tree, env={**env_without_tracking_uri, **env},
        capture_output=True, text=True, timeout=540, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, f"--- stdout\n{demo.stdout[-4000:]}\n--- stderr\n{demo.stderr[-6000:]}"
    hint = ".venv/bin/python -m rl_zoo3.train --algo ppo --env Pendulum-v1 --conf-file demo/best.yml"
    assert hint in demo.stdout, demo.stdout

    # The demo ran the clone's zoo_ext, installed editable into the clone's venv; the main install is untouched.
    module, url = _installed_from(python, tree)
    assert module == tree / "zoo_ext" / "__init__.py" and url == tree.as_uri()
    _assert_main_install_untouched()

    demo_dir = tree / "demo"
    study = optuna.load_study(storage=f"sqlite:///{demo_dir / 'demo.db'}", study_name="ppo-pendulum")
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == DEMO_TRIALS
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    best = study.best_trial
    assert best.state == TrialState.COMPLETE
    assert f"Wrote trial {best.number} of study 'ppo-pendulum'" in demo.stdout

    client = MlflowClient(f"sqlite:///{demo_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("ppo-Pendulum-v1")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    study_runs = [r for r in runs if r.data.tags.get("zoo_ext.role") == "study"]
    trial_runs = [r for r in runs if r.data.tags.get("zoo_ext.role") == "trial"]
    assert len(study_runs) == 1
    assert len(trial_runs) == DEMO_TRIALS
    assert {r.data.tags.get("mlflow.parentRunId") for r in trial_runs} == {study_runs[0].info.run_id}

    # best.yml re-trains with the stock command, and that run saves exactly the exported hyperparameters.
    exported = yaml.safe_load((demo_dir / "best.yml").read_text())["Pendulum-v1"]
    retrain = tmp_path / "retrain"
    retrain.mkdir()
    stock = [str(python), "-m", "rl_zoo3.train", "--algo", "ppo", "--env", "Pendulum-v1"]
    run([*stock, "--conf-file", str(demo_dir / "best.yml"), "-n", "256", "--eval-freq", "-1", "--num-threads", "1",
         "-f", "logs"], retrain)  # fmt: skip
    (config_file,) = retrain.glob("logs/ppo/Pendulum-v1_*/Pendulum-v1/config.yml")
    saved = dict(yaml.unsafe_load(config_file.read_text()))
    assert saved == exported

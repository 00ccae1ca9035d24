"""``export``, ``report``, ``mlflow-sync`` and ``--trial-id`` on wrong input: messages and exit 2, never a traceback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from helpers import STOCK, free_port, load, optimize_args, run
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from stable_baselines3 import A2C

pytestmark = pytest.mark.slow

ZOO_EXT = [sys.executable, "-m", "zoo_ext"]
#: The three commands that read a study, with the flags each needs besides --storage/--study-name.
COMMANDS = {"export": ["-o", "out.yml"], "report": [], "mlflow-sync": []}
#: Study user attributes zoo_ext sets, copied from the real study into the hand-made one.
ZOO_ATTRS = ("zoo_config", "algo", "env_id", "objectives", "zoo_ext_uid")


def _journal(path: Path) -> optuna.storages.JournalStorage:
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding ``study.log``: a real 2-trial study ``s``, and ``hand.log``: studies made by hand.

    ``hand.log`` holds ``h`` (zoo_ext's attributes, trial 0 COMPLETE, 1 FAIL, 2 PRUNED, each with
    the record of the real trial 0 or 1) and ``stock`` (no zoo_ext attributes).
    """
    folder = tmp_path_factory.mktemp("cli")
    run([*STOCK, *optimize_args("a2c", "CartPole-v1", n=256, trials=2)], folder)
    real = load(folder)
    hand = _journal(folder / "hand.log")
    made = optuna.create_study(storage=hand, study_name="h", direction="maximize")
    for key in ZOO_ATTRS:
        made.set_user_attr(key, real.user_attrs[key])
    for number, state in ((0, TrialState.COMPLETE), (1, TrialState.FAIL), (0, TrialState.PRUNED)):
        source = real.trials[number]
        user_attrs = dict(source.user_attrs)
        if state == TrialState.FAIL:
            user_attrs["fail_reason"] = "diverged: the evaluation return of seed 4 is not finite"
        made.add_trial(
            optuna.create_trial(
                state=state,
                value=source.value if state == TrialState.COMPLETE else None,
                intermediate_values={0: 1.0} if state == TrialState.PRUNED else None,
                params=source.params,
                distributions=source.distributions,
                user_attrs=user_attrs,
            )
        )
    optuna.create_study(storage=hand, study_name="stock").optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return folder


def _fails(proc: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Assert ``proc`` exited 2 with a ``zoo_ext: error:`` message holding each of ``expected``."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "zoo_ext: error: " in proc.stderr
    for text in expected:
        assert text in proc.stderr, proc.stderr[-3000:]


def _retrain(
    folder: Path, *flags: str, storage: str = "study.log", check: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the stock command re-training a trial (tiny budget, no evaluation)."""
    train = ["--env", "CartPole-v1", "-n", "64", "--eval-freq", "-1", "--storage", storage, "--num-threads", "1"]
    return run([*STOCK, *train, *flags], folder, check=check)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unknown_study_lists_the_studies(tuned: Path, command: str) -> None:
    proc = run([*ZOO_EXT, command, "--storage", "hand.log", "--study-name", "hh", *COMMANDS[command]], tuned,
               check=False)  # fmt: skip
    _fails(proc, "no study 'hh' in --storage hand.log. Did you mean 'h'? Studies there: h, stock.")


def test_trial_id_of_unknown_study_lists_the_studies(tuned: Path) -> None:
    proc = _retrain(tuned, "--algo", "a2c", "--study-name", "S", "--trial-id", "0")
    _fails(proc, "no study 'S' in --storage study.log. Did you mean 's'? Studies there: s.")


@pytest.mark.parametrize("storage", ["sqlite:///study.db", "logs/study.log"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_missing_storage_file_is_an_error_not_created(tmp_path: Path, storage: str, command: str) -> None:
    proc = run([*ZOO_EXT, command, "--storage", storage, "--study-name", "s", *COMMANDS[command]], tmp_path,
               check=False)  # fmt: skip
    path = storage.removeprefix("sqlite:///")
    kind = "journal file" if storage.endswith(".log") else "SQLite database"
    _fails(proc, f"--storage {storage}: no {kind} {path!r}")
    assert not any(tmp_path.iterdir())


def test_trial_id_with_missing_journal_creates_nothing(tmp_path: Path) -> None:
    proc = _retrain(tmp_path, "--algo", "a2c", "--study-name", "s", "--trial-id", "0")
    _fails(proc, "--storage study.log: no journal file 'study.log'")
    assert not (tmp_path / "study.log").exists()


def test_unreachable_database_is_reported_without_password(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    storage = f"postgresql://zoo:s3cr3t-Pw@127.0.0.1:{port}/optuna"
    proc = run([*ZOO_EXT, "report", "--storage", storage, "--study-name", "s"], tmp_path, check=False)
    _fails(proc, f"cannot open --storage postgresql://zoo:***@127.0.0.1:{port}/optuna: ", "Connection refused")
    assert "s3cr3t-Pw" not in proc.stdout + proc.stderr


def test_study_not_made_by_zoo_ext_is_refused(tuned: Path) -> None:
    for command in ("export", "mlflow-sync"):
        proc = run([*ZOO_EXT, command, "--storage", "hand.log", "--study-name", "stock", *COMMANDS[command]], tuned,
                   check=False)  # fmt: skip
        _fails(proc, "study 'stock' was not created by zoo_ext")
    assert not (tuned / "out.yml").exists()


def test_unknown_trial_is_refused(tuned: Path) -> None:
    proc = run([*ZOO_EXT, "export", "--storage", "study.log", "--study-name", "s", "--trial", "99", "-o", "t99.yml"],
               tuned, check=False)  # fmt: skip
    _fails(proc, "study 's' has no trial 99: its trials are 0 to 1")
    assert not (tuned / "t99.yml").exists()
    _fails(_retrain(tuned, "--algo", "a2c", "--study-name", "s", "--trial-id", "99"), "study 's' has no trial 99")


def test_fail_trial_is_refused_unless_forced(tuned: Path) -> None:
    export = [*ZOO_EXT, "export", "--storage", "hand.log", "--study-name", "h", "--trial", "1", "-o", "fail.yml"]
    _fails(run(export, tuned, check=False), "trial 1 of study 'h' is FAIL (diverged: ", "--force")
    assert not (tuned / "fail.yml").exists()
    retrain = _retrain(tuned, "--algo", "a2c", "--study-name", "h", "--trial-id", "1", storage="hand.log")
    _fails(retrain, "trial 1 of study 'h' is FAIL")

    out = run([*export, "--force"], tuned).stdout
    assert "Wrote trial 1 (FAIL) of study 'h'" in out
    entry = yaml.safe_load((tuned / "fail.yml").read_text())["CartPole-v1"]
    record = load(tuned).trials[1].user_attrs["hyperparams"]
    assert entry["learning_rate"] == pytest.approx(record["learning_rate"])
    assert entry["n_steps"] == record["n_steps"]

    pruned = [*ZOO_EXT, "export", "--storage", "hand.log", "--study-name", "h", "--trial", "2", "-o", "pruned.yml"]
    assert "Wrote trial 2 (PRUNED) of study 'h'" in run(pruned, tuned).stdout


def test_pick_that_does_not_apply(tuned: Path) -> None:
    export = [*ZOO_EXT, "export", "--storage", "study.log", "--study-name", "s", "-o", "pick.yml"]
    _fails(run([*export, "--pick", "knee"], tuned, check=False), "--pick knee: study 's' has one objective")
    _fails(run([*export, "--pick", "test"], tuned, check=False), "no test scores")
    _fails(run([*export, "--pick", "mean_rewrd"], tuned, check=False), "Did you mean 'mean_reward'?")
    both = run([*export, "--pick", "knee", "--trial", "0"], tuned, check=False)
    assert both.returncode == 2 and "not allowed with argument" in both.stderr
    assert not (tuned / "pick.yml").exists()


def test_trial_id_with_another_algo_is_refused(tuned: Path) -> None:
    proc = _retrain(tuned, "--algo", "ppo", "--study-name", "s", "--trial-id", "0", "-f", "ppo")
    _fails(proc, "study 's' tuned a2c, not ppo: run with --algo a2c")
    assert not (tuned / "ppo").exists()


def test_trial_id_retrains_with_the_trials_seed(tuned: Path) -> None:
    trial = load(tuned).trials[1]
    recorded = trial.user_attrs["seed"]
    for folder, flags, expected in (("own", [], recorded), ("given", ["--seed", "11"], 11)):
        _retrain(tuned, "--algo", "a2c", "--study-name", "s", "--trial-id", "1", "-f", folder, *flags, check=True)
        (run_dir,) = (tuned / folder / "a2c").glob("CartPole-v1_*")
        assert A2C.load(run_dir / "CartPole-v1.zip").seed == expected
        args = dict(yaml.unsafe_load((run_dir / "CartPole-v1" / "args.yml").read_text()))
        assert args["seed"] == expected
        shutil.rmtree(tuned / folder)


def test_multiobjective_report_plots(tmp_path: Path) -> None:
    study = optuna.create_study(
        storage=_journal(tmp_path / "mo.log"), study_name="mo", directions=["maximize", "minimize"]
    )
    study.set_user_attr("objectives", ["mean_reward", "n_params"])
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=6)
    out = run([*ZOO_EXT, "report", "--storage", "mo.log", "--study-name", "mo", "-o", "r"], tmp_path).stdout
    assert "Pareto-optimal trials" in out
    names = {p.name for p in (tmp_path / "r").iterdir()}
    for plot in (
        "pareto_front",
        "param_importances",
        "optimization_history_mean_reward",
        "optimization_history_n_params",
    ):
        assert {f"{plot}.html", f"{plot}.png"} <= names, names


def test_trial_id_0_prints_one_seed_line_the_trials(tuned: Path) -> None:
    recorded = load(tuned).trials[0].user_attrs["seed"]
    proc = _retrain(tuned, "--algo", "a2c", "--study-name", "s", "--trial-id", "0", "-f", "seed0", check=True)
    seed_lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "Seed: " in line]
    assert seed_lines == [f"Seed: {recorded}, the one trial 0 trained with (--seed overrides it)"], seed_lines
    shutil.rmtree(tuned / "seed0")


def test_mlflow_sync_with_mlflow_down_is_an_error_of_that_command(tmp_path: Path) -> None:
    study = optuna.create_study(storage=_journal(tmp_path / "down.log"), study_name="s", direction="maximize")
    for key, value in {"zoo_config": {}, "algo": "a2c", "env_id": "CartPole-v1", "zoo_ext_uid": "u"}.items():
        study.set_user_attr(key, value)
    study.add_trial(optuna.create_trial(state=TrialState.COMPLETE, value=1.0))
    sync = [*ZOO_EXT, "mlflow-sync", "--storage", "down.log", "--study-name", "s", "--mlflow-tracking-uri",
            "http://127.0.0.1:9"]  # fmt: skip
    proc = run(sync, tmp_path, check=False)
    _fails(proc, "no run created for study 's'; run the same command again once MLflow works")
    assert proc.stderr.startswith("zoo_ext: error: MLflow at http://127.0.0.1:9 is unavailable ("), proc.stderr
    assert "goes on without tracking" not in proc.stderr and proc.stdout == ""


def _main_exits(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``python -m zoo_ext *argv`` in this process; return its exit status, stdout and stderr."""
    from zoo_ext import cli

    with pytest.raises(SystemExit) as info:
        cli.main(list(argv))
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def test_list_algo_is_checked_and_matched_case_insensitively(capsys: pytest.CaptureFixture[str]) -> None:
    from zoo_ext import adapter

    algos = ", ".join(sorted(adapter.algo_classes()))
    assert _main_exits(capsys, "list", "--algo", "foo") == (
        2, "", f"zoo_ext: error: unknown --algo 'foo'. Valid choices: {algos}\n"
    )  # fmt: skip
    assert _main_exits(capsys, "list", "--algo", "pp") == (
        2, "", f"zoo_ext: error: unknown --algo 'pp'. Did you mean 'ppo'? Valid choices: {algos}\n"
    )  # fmt: skip
    status, out, err = _main_exits(capsys, "list", "--algo", "PPO")
    spaces = [line.split()[2:4] for line in out.splitlines() if line.startswith("search space")]
    assert (status, err) == (0, "") and ["zoo", "[ppo]"] in spaces and ["conditional", "[ppo]"] in spaces, out
    assert all(algos == "[ppo]" for _, algos in spaces), spaces


@pytest.mark.parametrize(
    ("command", "output", "message"),
    [
        ("report", "/proc/zoo_report", "cannot create the folder '/proc/zoo_report': No such file or directory"),
        ("report", "/dev/null/report", "cannot create the folder '/dev/null/report': '/dev/null' is not a folder"),
        ("export", "/dev/null/out.yml", "cannot create the folder '/dev/null': '/dev/null' is not a folder"),
        ("export", "/proc/out.yml", "cannot write in the folder '/proc': No such file or directory"),
    ],
)
def test_unwritable_output_exits_2_before_reading_the_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, output: str, message: str
) -> None:
    storage = str(tmp_path / "missing.log")  # never opened: the output is checked first
    status, out, err = _main_exits(capsys, command, "--storage", storage, "--study-name", "s", "-o", output)
    assert (status, out, err) == (2, "", f"zoo_ext: error: -o/--output {output!r}: {message}\n")
    assert not any(tmp_path.iterdir())


def test_help_texts_show_no_restructuredtext(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = [run([*STOCK, "--help"], tmp_path).stdout]
    for command in ("--help", "list --help", "export --help", "report --help", "mlflow-sync --help"):
        status, out, _ = _main_exits(capsys, *command.split())
        assert status == 0
        texts.append(out)
    assert "python -m zoo_ext: train (the stock zoo command" in texts[1]
    assert "(zoo_ext: any name from 'python -m zoo_ext list')" in texts[0].replace("\n", " ").replace("  ", "")
    for text in texts:
        assert "`" not in text and ":class:" not in text and ":func:" not in text, text

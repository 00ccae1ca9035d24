"""The live progress line: its content from a real study, the terminal it needs, and the stock command on a pty."""

from __future__ import annotations

import argparse
import io
import logging
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from fcntl import ioctl
from pathlib import Path
from typing import Literal

import optuna
import pytest
from helpers import STOCK, load, optimize_args, run, zoo_env
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from rich.console import Console

from zoo_ext import options, progress
from zoo_ext.progress import LiveProgress, StudyProgress, describe
from zoo_ext.storage import quiet_optuna

STEPS = "env_steps"
CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    """A clock the test moves by hand, so the ETA is exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _add(study: optuna.Study, state: TrialState, value: float | None = None, steps: int = 0) -> None:
    study.add_trial(
        create_trial(
            state=state,
            value=value if state == TrialState.COMPLETE else None,
            params={"x": 0.5},
            distributions={"x": FloatDistribution(0, 1)},
            user_attrs={STEPS: steps},
            intermediate_values={0: -500.0} if state == TrialState.PRUNED else None,
        )
    )


def _study(direction: Literal["minimize", "maximize"] = "maximize") -> optuna.Study:
    with quiet_optuna():
        return optuna.create_study(direction=direction)


def test_line_shows_trials_of_budget_states_best_and_eta() -> None:
    study = _study("maximize")
    _add(study, TrialState.COMPLETE, -300.0)
    clock = Clock()
    reader = StudyProgress(study, total_trials=10, clock=clock)
    first = reader.snapshot()
    assert (first.done, first.total, first.complete, first.best, first.eta) == (1, 10, 1, -300.0, None)
    assert describe(first) == "trials 1/10 · best -300 · ETA -:--:-- · 1 complete, 0 pruned, 0 failed"

    clock.now += 120  # three more trials finish in two minutes: 40 s each, 6 left
    _add(study, TrialState.COMPLETE, -120.5)
    _add(study, TrialState.PRUNED)
    _add(study, TrialState.FAIL)  # failed trials do not count towards the budget
    _add(study, TrialState.COMPLETE, -800.0)
    study.ask()  # a running trial
    snap = reader.snapshot()
    assert (snap.done, snap.complete, snap.pruned, snap.failed, snap.running) == (4, 3, 1, 1, 1)
    assert snap.best == -120.5
    assert snap.eta == pytest.approx(6 * 40)
    assert describe(snap) == "trials 4/10 · best -120.5 · ETA 0:04:00 · 3 complete, 1 pruned, 1 failed, 1 running"


def test_best_follows_the_first_objective_and_its_direction() -> None:
    study = _study("minimize")
    _add(study, TrialState.COMPLETE, 3.0)
    _add(study, TrialState.COMPLETE, 1.25)
    _add(study, TrialState.COMPLETE, 2.0)
    assert StudyProgress(study, total_trials=5).snapshot().best == 1.25

    with quiet_optuna():
        multi = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([10.0, 5.0], [30.0, 9.0], [20.0, 1.0]):
        multi.add_trial(create_trial(state=TrialState.COMPLETE, values=values))
    assert StudyProgress(multi, total_trials=5).snapshot().best == 30.0


def test_step_budget_counts_env_steps_of_every_trial() -> None:
    study = _study()
    _add(study, TrialState.COMPLETE, -200.0, steps=4096)
    clock = Clock()
    reader = StudyProgress(study, total_trials=500, budget_steps=20_000, clock=clock)
    first = describe(reader.snapshot())
    assert first == "env steps 4,096/20,000 · best -200 · ETA -:--:-- · 1 complete, 0 pruned, 0 failed"
    clock.now += 60
    _add(study, TrialState.PRUNED, steps=1024)
    _add(study, TrialState.FAIL, steps=512)
    running = study.ask()
    running.set_user_attr(STEPS, 2560)  # a running trial's steps so far count, as for the stop rule
    snap = reader.snapshot()
    assert (snap.unit, snap.done, snap.total) == ("env steps", 8192, 20_000)
    assert snap.eta == pytest.approx((20_000 - 8192) * 60 / 4096)
    assert "ETA 0:02:53" in describe(snap)
    _add(study, TrialState.COMPLETE, -100.0, steps=20_000)
    assert reader.snapshot().eta == 0.0


def test_no_progress_flag_and_yaml_key() -> None:
    parser = argparse.ArgumentParser()
    options.add_arguments(parser, argparse.Action)
    assert parser.parse_args(["--no-progress"]).no_progress is True
    assert options.resolve(argparse.Namespace(), {"no_progress": True}, algo="ppo").no_progress is True
    assert options.resolve(argparse.Namespace(), {}, algo="ppo").no_progress is False
    with pytest.raises(options.OptionError, match="no_progress must be true or false"):
        options.resolve(argparse.Namespace(), {"no_progress": "yes"}, algo="ppo")


def test_shown_only_on_a_terminal_without_no_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        monkeypatch.setenv("TERM", "xterm")
        assert progress.shown(False, terminal)
        assert not progress.shown(True, terminal)
        assert not progress.shown(False, io.StringIO())
        monkeypatch.setenv("TERM", "dumb")  # cannot redraw a line
        assert not progress.shown(False, terminal)
    os.close(master)


def _screen(raw: str) -> list[str]:
    """Return the lines a terminal shows for ``raw``: carriage returns overwrite, erase-line codes clear."""
    lines, line, col = [], "", 0
    for token in re.split(r"(\r|\n|\x1b\[[0-9;?]*[A-Za-z])", raw):
        if token == "\n":
            lines.append(line)
            line, col = "", 0
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            line = ""
        elif token and not CSI.fullmatch(token):
            line = line[:col].ljust(col) + token + line[col + len(token) :]
            col += len(token)
    return [*lines, line]


def test_live_line_draws_and_log_records_go_above_it() -> None:
    study = _study()
    _add(study, TrialState.COMPLETE, -150.0)
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160, color_system=None)
    logger = logging.getLogger("zoo_ext.test_progress")
    handler = logging.StreamHandler(out)
    logger.addHandler(handler)
    try:
        with LiveProgress(StudyProgress(study, total_trials=4), console=console, interval=0.05):
            logger.warning("trial 1 finished")
            _add(study, TrialState.PRUNED)
            time.sleep(0.3)  # the thread redraws from the storage
            assert handler.stream is not out  # sent through rich's proxy while the line is drawn
        assert handler.stream is out
    finally:
        logger.removeHandler(handler)
    screen = _screen(out.getvalue())
    assert "trial 1 finished" in screen  # a line of its own, no bar text glued to it
    last = [line for line in screen if line.strip()][-1]
    assert re.fullmatch(r"trials ━+ +2/4 · best -150 · ETA 0:00:0\d · 1 complete, 1 pruned, 0 failed", last), last


def test_a_drawing_error_is_logged_once_and_switches_the_line_off(caplog: pytest.LogCaptureFixture) -> None:
    study = _study()
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    line = LiveProgress(StudyProgress(study, total_trials=3), console=console, interval=0.02)
    stderr = sys.stderr
    with caplog.at_level(logging.WARNING, logger="zoo_ext.progress"), line:
        assert line.active and sys.stderr is not stderr  # prints go above the line
        out.close()  # the terminal goes away: every draw now raises
        time.sleep(0.2)
        line.refresh()
        assert not line.active
        assert sys.stderr is stderr  # redirection undone at once
    warnings = [r for r in caplog.records if r.name == "zoo_ext.progress"]
    assert len(warnings) == 1 and "switched off" in warnings[0].getMessage()
    assert "closed file" in warnings[0].getMessage()


def test_relay_copies_worker_output_line_by_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = "import sys; print('out 1'); print('err 1', file=sys.stderr); print('out 2', end='')"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with progress.Relay(timeout=30) as relay:
        relay.start([process])
        process.wait()
    captured = capsys.readouterr()
    assert captured.out == "out 1\nout 2\n"
    assert captured.err == "err 1\n"


def _run_on_pty(cmd: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """Run ``cmd`` with a pseudo-terminal (200 columns) as stdin, stdout and stderr; return its status and output."""
    master, slave = pty.openpty()
    ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
    env = zoo_env(cwd, {"TERM": "xterm"})
    env.pop("COLUMNS", None)
    process = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
        else:
            process.kill()
            raise AssertionError(f"{cmd} did not end in {timeout} s")
    finally:
        os.close(master)
    return process.wait(timeout=30), b"".join(chunks).decode(errors="replace")


PROGRESS = re.compile(r"trials \S* ?\d+/\d+ · best ")


@pytest.mark.slow
def test_stock_command_on_a_terminal_shows_the_study_total_once(workdir: Path) -> None:
    args = [*optimize_args("a2c", "CartPole-v1", trials=4), "--n-workers", "2", "--no-mlflow",
            "--sampler", "random", "--pruner", "none", "-params", "n_envs:2"]  # fmt: skip
    status, output = _run_on_pty([*STOCK, *args], workdir)
    assert status == 0, output[-4000:]
    screen = _screen(output)
    lines = [line for line in screen if PROGRESS.search(line)]
    assert lines, output[-4000:]
    # The launcher's line counts every worker's trials (the study's total, from the storage) ...
    assert re.fullmatch(r"trials ━+ 4/4 · best \S+ · ETA 0:00:00 · 4 complete, 0 pruned, 0 failed", lines[-1].strip())
    study = load(workdir)
    # Two workers finishing together may create a fifth trial, failed unrun (not_run): it is no failure on the line.
    assert len([t for t in study.trials if t.user_attrs.get("fail_kind") != "not_run"]) == 4
    # ... and the worker, whose output is relayed above the line, draws none of its own: one line, kept once.
    assert sum("4/4" in line for line in lines) == 1
    finished = [line for line in screen if re.search(r"Trial \d+ finished", line)]
    assert len(finished) == 4 and all(line.lstrip().startswith("[I ") for line in finished), finished


@pytest.mark.slow
def test_piped_output_and_no_progress_show_no_line(workdir: Path) -> None:
    args = [*optimize_args("a2c", "CartPole-v1", trials=2), "--no-mlflow", "-params", "n_envs:2"]
    piped = run([*STOCK, *args], workdir)
    assert "Trial 1 finished" in piped.stderr
    for text in (piped.stdout, piped.stderr):
        assert "\r" not in text and "ETA" not in text and not PROGRESS.search(text)

    other = workdir / "no-progress"
    other.mkdir()
    status, output = _run_on_pty([*STOCK, *args, "--no-progress"], other)
    assert status == 0, output[-4000:]
    assert "Trial 1 finished" in output  # the terminal got the run's output ...
    assert "ETA" not in output and not PROGRESS.search(output)  # ... and no progress line

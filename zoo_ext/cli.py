"""``python -m zoo_ext``: train (the stock zoo command, zoo_ext on), list, export, report, mlflow-sync and -mirror."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from zoo_ext.attrs import StudyAttr
from zoo_ext.errors import TrackingError, ZooExtError
from zoo_ext.integration import exit_with_error

if TYPE_CHECKING:
    import optuna

__all__ = ["main"]


def _train(argv: Sequence[str]) -> int:
    """Run ``rl_zoo3.train`` with zoo_ext active, with exactly the stock command's flags."""
    from zoo_ext import _startup

    sys.argv = ["python -m zoo_ext train", *argv]
    _startup.arm()
    from zoo_ext import adapter

    adapter.run_train()
    return 0


def _algo_name(name: str) -> str:
    """Return rl_zoo3's name of algorithm ``name`` (case-insensitive); exit with status 2 listing them if unknown."""
    import difflib

    from zoo_ext import adapter, options

    algos = sorted(adapter.algo_classes())
    by_lower = {algo.lower(): algo for algo in algos}
    if name.lower() in by_lower:
        return by_lower[name.lower()]
    close = difflib.get_close_matches(name.lower(), algos, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    exit_with_error(options.OptionError(f"unknown --algo {name!r}.{hint} Valid choices: {', '.join(algos)}"))


def _list(args: argparse.Namespace) -> int:
    from zoo_ext.objectives import OBJECTIVES
    from zoo_ext.presets import PRESETS
    from zoo_ext.pruners import PRUNERS
    from zoo_ext.samplers import SAMPLERS
    from zoo_ext.schedules import LIVE_KEYS
    from zoo_ext.spaces import SEARCH_SPACES

    algo = None if args.algo is None else _algo_name(args.algo)
    rows: list[tuple[str, str, str, str]] = []
    for entry in SEARCH_SPACES.entries(algo):
        algos = ",".join(sorted(entry.algos)).replace("*", "all algos")
        rows.append(("search space", f"{entry.name} [{algos}]", entry.source, entry.description))
    registries = (("preset", PRESETS), ("sampler", SAMPLERS), ("pruner", PRUNERS), ("objective", OBJECTIVES))
    for kind, registry in registries:
        rows.extend((kind, e.name, e.source, e.description) for e in registry.entries())
    rows.append(("sampler", "hub:PACKAGE", "OptunaHub", "any OptunaHub sampler package (cache or --hub-registry)"))
    rows.append(("pruner", "hub:PACKAGE", "OptunaHub", "any OptunaHub pruner package (cache or --hub-registry)"))
    for name, keys in LIVE_KEYS.items():  # what --scheduler pbt|pb2 perturbs by default
        if algo is None or name == algo:
            rows.append(("pbt keys", name, "zoo_ext", ", ".join(keys)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
    return 0


def _export_comment(study: optuna.Study, trial: optuna.trial.FrozenTrial, names: Sequence[str]) -> str:
    """Return the comment block heading an exported YAML: the study, the trial, and its result card if re-evaluated."""
    values = "".join(f", {name} {value:.6g}" for name, value in zip(names, trial.values or (), strict=False))
    algo, env_id = study.user_attrs[StudyAttr.ALGO], study.user_attrs[StudyAttr.ENV_ID]
    lines = [f"zoo_ext export: study {study.study_name!r} ({algo} on {env_id}), trial {trial.number} "
             f"({trial.state.name}{values})"]  # fmt: skip
    entry = study.user_attrs.get(StudyAttr.TEST_SCORES, {}).get(str(trial.number))
    baseline = study.user_attrs.get(StudyAttr.TEST_SCORES, {}).get("baseline")
    if entry is not None and "iqm" in entry:
        lines.append(f"re-evaluated on {len(entry['seeds'])} fresh seeds {entry['seeds']}:")
        for name in names:
            ci = (entry.get("ci95") or {}).get(name)
            interval = "" if ci is None else f" [95% CI {ci[0]:.6g}, {ci[1]:.6g}]"
            line = f"  {name}: median {entry['median'][name]:.6g}, IQM {entry['iqm'][name]:.6g}{interval}"
            p = (entry.get("p_improvement") or {}).get(name)
            if baseline is not None and p is not None:
                line += (
                    f"; P(improvement) {p:.2f} over the baseline ({baseline['kind']}, same seeds: median "
                    f"{baseline['median'][name]:.6g}, IQM {baseline['iqm'][name]:.6g})"
                )
            lines.append(line)
    return "".join(f"# {line}\n" for line in lines)


def _export(args: argparse.Namespace) -> int:
    import yaml

    from zoo_ext import options, pbt, record, reports, storage

    try:
        output = Path(args.output)
        if output.is_dir():
            raise options.OptionError(f"-o/--output {args.output!r} is a folder: give the YAML file to write")
        options.check_writable_folder(output.parent, "-o/--output", value=args.output)
        study = storage.load_existing_study(args.storage, args.study_name, zoo_ext=True)
        population = pbt.is_population(study)
        if args.trial is not None:
            number = args.trial
        else:
            number = pbt.best_segment(study) if population and args.pick is None else reports.pick(study, args.pick)
        trial = storage.finished_trial(study, number, storage=args.storage, force=args.force)
        if record.RECORD_ATTR not in trial.user_attrs:
            raise record.RecordError(f"trial {number} failed before its hyperparameters were recorded")
        attrs = study.user_attrs
        if population:  # the member's values over its training, as schedules
            entries = {attrs[StudyAttr.ENV_ID]: pbt.schedule_entry(study, number)}
        else:
            # A --tune-envs study: one entry per env, the same sampled values on each env's own config.
            configs = {
                attrs[StudyAttr.ENV_ID]: attrs[StudyAttr.ZOO_CONFIG],
                **attrs.get(StudyAttr.ZOO_CONFIG_PER_ENV, {}),
            }
            entries = {
                env: record.merge(config, record.trial_hyperparams(study, number, attrs[StudyAttr.ALGO], env))
                for env, config in configs.items()
            }
    except (ZooExtError, ValueError) as exc:  # an unwritable -o, StudyError, RecordError, a --pick that does not apply
        exit_with_error(exc)
    comment = _export_comment(study, trial, reports.objective_names(study))
    output.write_text(comment + yaml.safe_dump(entries, sort_keys=True))
    state = "" if trial.state.name == "COMPLETE" else f" ({trial.state.name})"
    where = f"study {args.study_name!r} ({attrs['algo']} on {attrs['env_id']})"
    print(f"Wrote trial {number}{state} of {where} to {output}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from zoo_ext import options, reports, storage

    folder = Path(args.output or f"report_{args.study_name}")
    try:
        options.check_writable_folder(folder, "-o/--output")
        study = storage.load_existing_study(args.storage, args.study_name)
    except ZooExtError as exc:
        exit_with_error(exc)
    print(reports.describe_best(study))
    written = reports.write_report(study, folder)
    print(f"Wrote {len(written)} file(s) to {folder}: {', '.join(p.name for p in written)}")
    return 0


def _mlflow_sync(args: argparse.Namespace) -> int:
    from zoo_ext import storage, tracking

    try:
        study = storage.load_existing_study(args.storage, args.study_name)
        tracker = tracking.sync_tracker(study, tracking_uri=args.mlflow_tracking_uri, experiment=args.mlflow_experiment)
    except ZooExtError as exc:
        exit_with_error(exc)
    retry = "run the same command again once MLflow works (or give the right --mlflow-tracking-uri)"
    if not tracker.enabled:
        message = f"{tracker.failure}: no run created for study {args.study_name!r}; {retry}"
        exit_with_error(TrackingError(message))
    created = tracking.sync_study(study, tracker)
    tracker.close_stale_runs(study)
    tracker.end_study()
    if not tracker.enabled:
        done = f"{len(created)} run(s) created first (trials {created})" if created else "no run created"
        exit_with_error(TrackingError(f"{tracker.failure} during the sync: {done}; {retry}"))
    print(f"Created {len(created)} run(s) in experiment {tracker.experiment_name!r}: trials {created}")
    return 0


def _mlflow_mirror(args: argparse.Namespace) -> int:
    from zoo_ext import storage, tracking

    # SIGINT/SIGTERM only ask it to stop: one arriving while MLflow creates its store's schema would break the store.
    stop, stopped_by = threading.Event(), []

    def request_stop(signum: int, frame: object) -> None:
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, request_stop)
    try:
        study = storage.load_existing_study(args.storage, args.study_name)
        tracker = tracking.sync_tracker(study, tracking_uri=args.mlflow_tracking_uri, experiment=args.mlflow_experiment)
    except ZooExtError as exc:
        exit_with_error(exc)
    if not tracker.enabled:
        exit_with_error(TrackingError(f"{tracker.failure}: study {args.study_name!r} cannot be mirrored"))
    where = storage.redact(args.storage)
    until = f", until {args.idle:g} s without a running trial" if args.idle else ", until stopped"
    print(f"Mirroring study {args.study_name!r} ({where}) into experiment {tracker.experiment_name!r} every "
          f"{args.interval:g} s{until}", flush=True)  # fmt: skip
    mirror = tracking.Mirror(tracker, models=args.models, log_models=args.log_models)
    mirror.run(study, interval=args.interval, idle=args.idle, stop=stop)
    if stopped_by:
        print(f"Stopped by {stopped_by[0]}: a last pass", flush=True)
    mirror.finish(study)
    if not tracker.enabled:
        exit_with_error(TrackingError(f"{tracker.failure}; run the same command again once MLflow works"))
    print("The runs are up to date with the storage")
    return 0


def _storage_proxy(args: argparse.Namespace) -> int:
    from optuna.storages import RDBStorage, run_grpc_proxy_server

    from zoo_ext import storage

    if not storage.is_database(args.storage):
        print("zoo_ext: error: storage-proxy serves a database storage (postgresql://, mysql://, sqlite://)",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"Serving {storage.redact(args.storage)} on grpc://{args.host}:{args.port} (Ctrl-C stops)", flush=True)
    for stop in (signal.SIGINT, signal.SIGTERM):  # also when started with SIGINT ignored (background, test runners)
        signal.signal(stop, signal.default_int_handler)
    try:
        with storage.experimental():
            run_grpc_proxy_server(RDBStorage(args.storage), host=args.host, port=args.port)
    except KeyboardInterrupt:
        pass
    return 0


def _space_schema(args: argparse.Namespace) -> int:
    import json

    from zoo_ext.spaces import _schema

    print(json.dumps(_schema.json_schema(), indent=2))
    return 0


def _parser() -> argparse.ArgumentParser:
    from zoo_ext.registry import plain_text

    parser = argparse.ArgumentParser(prog="python -m zoo_ext", description=plain_text(__doc__ or ""))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("train", help="python -m rl_zoo3.train with zoo_ext active (same flags)", add_help=False)
    listing = sub.add_parser("list", help="list search spaces, samplers and pruners")
    listing.add_argument("--algo", default=None, help="only search spaces for this algorithm")
    export = sub.add_parser("export", help="write a trial's hyperparameters as an rl_zoo3 hyperparams YAML")
    export.add_argument("--storage", required=True, help="Optuna storage (URL or journal .log path)")
    export.add_argument("--study-name", required=True)
    export.add_argument("-o", "--output", required=True, help="YAML file to write")
    which = export.add_mutually_exclusive_group()
    which.add_argument("--trial", type=int, default=None, help="trial number (default: the best trial)")
    which.add_argument(
        "--pick",
        default=None,
        help="which trial: the best (default), 'knee' (Pareto knee point, several objectives), 'test' (best "
        "re-evaluation score), or an objective name (the Pareto trial best on it)",
    )
    export.add_argument(
        "--force", action="store_true", help="also export a FAIL or RUNNING trial (it did not train to the end)"
    )
    report = sub.add_parser("report", help="print the best trial or the Pareto front and write the plots")
    report.add_argument("--storage", required=True, help="Optuna storage (URL or journal .log path)")
    report.add_argument("--study-name", required=True)
    report.add_argument("-o", "--output", default=None, help="folder to write (default: report_<study name>)")
    sync = sub.add_parser("mlflow-sync", help="create the MLflow runs missing for a study's finished trials")
    sync.add_argument("--storage", required=True, help="Optuna storage (URL or journal .log path)")
    sync.add_argument("--study-name", required=True)
    sync.add_argument("--mlflow-tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    sync.add_argument(
        "--mlflow-experiment", default=None, help="default: <algo>-<env id>, or the one zoo_ext.mlflow.track used"
    )
    mirror = sub.add_parser(
        "mlflow-mirror", help="follow a study in its storage and mirror it into MLflow (workers: --no-mlflow)"
    )
    stored = os.environ.get("ZOO_EXT_STORAGE")  # a URL with a password stays off the command line
    mirror.add_argument(
        "--storage", default=stored, required=stored is None, help="Optuna storage (default: $ZOO_EXT_STORAGE)"
    )
    mirror.add_argument("--study-name", required=True)
    mirror.add_argument("--mlflow-tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or ./mlflow.db")
    mirror.add_argument("--mlflow-experiment", default=None, help="default: <algo>-<env id>")
    mirror.add_argument("--interval", type=float, default=1.0, help="seconds between two passes (default 1)")
    mirror.add_argument(
        "--idle", type=float, default=0.0, help="stop after this many seconds with no trial running (0: until stopped)"
    )
    mirror.add_argument(
        "--models", type=Path, default=None, help="folder where the workers leave trial_<number>.zip (--mlflow-mirror)"
    )
    mirror.add_argument("--log-models", action="store_true", help="upload every model, not only each new best one's")
    proxy = sub.add_parser(
        "storage-proxy", help="serve a database storage to many workers over gRPC (workers: --storage grpc://HOST:PORT)"
    )
    proxy.add_argument("--storage", required=True, help="database URL; the password may come from PGPASSWORD/.pgpass")
    proxy.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    proxy.add_argument("--port", type=int, default=13000)
    sub.add_parser("schema", help="print the JSON Schema of YAML search-space files (for editors)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m zoo_ext``; exits with the command's status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        sys.exit(_train(argv[1:]))
    args = _parser().parse_args(argv)
    handlers = {"list": _list, "export": _export, "report": _report, "mlflow-sync": _mlflow_sync,
                "mlflow-mirror": _mlflow_mirror, "storage-proxy": _storage_proxy, "schema": _space_schema}  # fmt: skip
    handler = handlers[args.command]
    sys.exit(handler(args))

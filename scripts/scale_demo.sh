#!/usr/bin/env bash
# Scaling out, on one machine: a throw-away PostgreSQL server and an MLflow server on it, then 3
# independent workers (scripts/launch_workers.sh) sharing one study with --max-total-trials 9.
# Needs Debian's postgresql (scripts/setup.sh --test installs it). Prints the study's trial counts.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1 || command -v initdb)")
work=$(mktemp -d /tmp/zoo_ext_scale.XXXXXX)
as_pg=()
if [[ "$(id -u)" == 0 ]]; then as_pg=(runuser -u postgres --); chown postgres "$work"; fi
port=$("$PYTHON" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
export PGPASSWORD="demo-$RANDOM$RANDOM"  # libpq reads it: no password in any URL below
printf '%s' "$PGPASSWORD" >"$work/pw"; [[ ${#as_pg[@]} -gt 0 ]] && chown postgres "$work/pw"
"${as_pg[@]}" "$bin/initdb" -D "$work/data" -U zoo -A scram-sha-256 --pwfile="$work/pw" --no-sync >/dev/null
"${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -l "$work/server.log" -w start \
    -o "-p $port -k $work -c listen_addresses=127.0.0.1" >/dev/null
mlflow_pid=""
cleanup() {
    [[ -n "$mlflow_pid" ]] && kill "$mlflow_pid" 2>/dev/null
    "${as_pg[@]}" "$bin/pg_ctl" -D "$work/data" -m fast stop >/dev/null || true
}
trap cleanup EXIT
db="postgresql://zoo@127.0.0.1:$port"
"$bin/createdb" -h 127.0.0.1 -p "$port" -U zoo optuna
"$bin/createdb" -h 127.0.0.1 -p "$port" -U zoo mlflow
mlflow_port=$("$PYTHON" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "$PYTHON" -m mlflow server --host 127.0.0.1 --port "$mlflow_port" \
    --workers 1 --backend-store-uri "$db/mlflow" --artifacts-destination "$work/artifacts" >"$work/mlflow.log" 2>&1 &
mlflow_pid=$!
export MLFLOW_TRACKING_URI="http://127.0.0.1:$mlflow_port"
until curl -sf "$MLFLOW_TRACKING_URI/health" >/dev/null; do sleep 1; done
echo "PostgreSQL on 127.0.0.1:$port, MLflow on $MLFLOW_TRACKING_URI, work folder $work"
cd "$work"
# A2C: its sampled hyperparameters barely change a trial's cost, so the demo takes about a minute.
WORKER_LOG_DIR="$work" PYTHON="$PYTHON" bash "$OLDPWD/scripts/launch_workers.sh" 3 --algo a2c --env CartPole-v1 \
    -optimize -n 4096 --n-trials 100 --max-total-trials 9 --n-evaluations 2 --sampler tpe --pruner median \
    --storage "$db/optuna" --study-name scale-demo --no-optim-plots
grep -h "Trial states" "$work"/worker-*.log
"$PYTHON" - "$db/optuna" <<'PY'
import sys
import optuna
from mlflow import MlflowClient

optuna.logging.set_verbosity(optuna.logging.WARNING)
study = optuna.load_study(storage=sys.argv[1], study_name="scale-demo")
numbers = [t.number for t in study.trials]
workers = {t.user_attrs["worker"]["pid"] for t in study.trials}
print(f"study: {len(numbers)} trials, numbers {numbers}, states {sorted({t.state.name for t in study.trials})}, "
      f"from {len(workers)} worker processes")
client = MlflowClient()
runs = client.search_runs([client.get_experiment_by_name("a2c-CartPole-v1").experiment_id])
roles = [r.data.tags.get("zoo_ext.role") for r in runs]
print(f"MLflow: {roles.count('study')} study run, {roles.count('trial')} trial runs, "
      f"statuses {sorted({r.info.status for r in runs})}")
PY

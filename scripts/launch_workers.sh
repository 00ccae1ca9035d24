#!/usr/bin/env bash
# Start N workers of one study on this machine and wait for them; Ctrl-C or SIGTERM stops them all.
#
#   bash scripts/launch_workers.sh 4 --algo ppo --env Pendulum-v1 -optimize \
#       --storage postgresql://zoo@db.example/optuna --study-name ppo-pendulum --max-total-trials 200
#
# Every worker runs `python -m rl_zoo3.train <flags>` with one torch thread; a worker joining the
# study samples with its own seed. Give --storage (shared) and --study-name; --max-total-trials
# is the study's total budget. Each worker's output goes to worker-<i>.log (WORKER_LOG_DIR, default .).
set -euo pipefail
if (( $# < 2 )) || ! [[ "$1" =~ ^[0-9]+$ ]]; then
    echo "usage: $0 N <rl_zoo3.train flags, with --storage and --study-name>" >&2
    exit 2
fi
n="$1"; shift
PYTHON="${PYTHON:-python3}"
log_dir="${WORKER_LOG_DIR:-.}"
mkdir -p "$log_dir"
pids=()
stop() { kill -INT "${pids[@]}" 2>/dev/null || true; }
trap stop INT TERM
for ((i = 0; i < n; i++)); do
    "$PYTHON" -m rl_zoo3.train "$@" --num-threads 1 >"$log_dir/worker-$i.log" 2>&1 &
    pids+=($!)
done
echo "started $n workers: ${pids[*]} (logs: $log_dir/worker-*.log)"
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || status=$?
done
exit "$status"

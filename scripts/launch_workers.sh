#!/usr/bin/env bash
# Start N workers of one study on this machine and wait for them; Ctrl-C or SIGTERM stops them all.
#
#   bash scripts/launch_workers.sh 4 --algo ppo --env Pendulum-v1 -optimize \
#       --storage postgresql://zoo@db.example/optuna --study-name ppo-pendulum --max-total-trials 200
#
# Every worker runs `python -m rl_zoo3.train <flags>` with one torch thread; a worker joining the
# study samples with its own seed. Give --storage (shared) and --study-name; --max-total-trials
# is the study's total budget. Each worker's output goes to worker-<i>.log (WORKER_LOG_DIR, default .).
# Exit status: 0 when the study's budget is done, 130/143 when stopped by SIGINT/SIGTERM (resume with
# the same command), otherwise the last failing worker's status (1: trials kept failing). A worker
# killed by a signal nobody here sent (kill -9, out of memory) does not fail the study if another
# finished it: the survivors fail its trial, retry it and exit 0 only once the budget is done.
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
signalled=""
# Pass the signal received on to every worker (each records its trial as interrupted by it) and
# exit like a process it stopped: 130 after SIGINT, 143 after SIGTERM.
stop() { signalled="$1"; kill -"$1" "${pids[@]}" 2>/dev/null || true; }
trap 'stop INT' INT
trap 'stop TERM' TERM
for ((i = 0; i < n; i++)); do
    "$PYTHON" -m rl_zoo3.train "$@" --num-threads 1 >"$log_dir/worker-$i.log" 2>&1 &
    pids+=($!)
done
echo "started $n workers: ${pids[*]} (logs: $log_dir/worker-*.log)"
failed=0
killed=0
finished=""
for pid in "${pids[@]}"; do
    # A trapped signal interrupts `wait`: wait again until this worker has really exited.
    while true; do
        rc=0
        wait "$pid" || rc=$?
        kill -0 "$pid" 2>/dev/null || break
    done
    if (( rc == 0 )); then
        finished=1
    elif (( rc > 128 )); then
        killed=$rc
    else
        failed=$rc
    fi
done
case "$signalled" in
    INT) exit 130 ;;
    TERM) exit 143 ;;
esac
if (( failed != 0 )); then
    exit "$failed"
elif [[ -z "$finished" ]]; then
    exit "$killed"
fi
exit 0

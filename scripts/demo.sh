#!/usr/bin/env bash
# Set up, then tune PPO on Pendulum-v1 with the unchanged stock command on embedded defaults
# (SQLite study storage, MLflow's local store), and export the best trial as an rl_zoo3 file.
# ZOO_EXT_DEMO_TIMESTEPS and ZOO_EXT_DEMO_TRIALS shrink the budget (CI); the defaults are 20000 and 8.
set -euo pipefail
start_dir="$PWD"
cd "$(dirname "$0")/.."
root="$PWD"
source scripts/_python.sh
bash scripts/setup.sh
# A path as typed from the folder the demo was started in (relative when below it), for the commands printed.
shown() { if [[ "$1" == "$start_dir/"* ]]; then printf '%s' "${1#"$start_dir/"}"; else printf '%s' "$1"; fi; }
# Its arguments as one shell-quoted command line (shlex.join): a printed command can be copied as it is.
quoted() { "$PYTHON" -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "$@"; }
python_shown="$(shown "$PYTHON")"
# optuna-dashboard (a dependency) has no "python -m" entry: its console script sits next to the interpreter.
dashboard="$("$PYTHON" -c 'import pathlib, sys; print(pathlib.Path(sys.executable).with_name("optuna-dashboard"))')"
dashboard_shown="$(shown "$dashboard")"
mkdir -p demo
cd demo
"$PYTHON" -m rl_zoo3.train --algo ppo --env Pendulum-v1 -optimize \
    -n "${ZOO_EXT_DEMO_TIMESTEPS:-20000}" --n-trials "${ZOO_EXT_DEMO_TRIALS:-8}" --n-evaluations 4 --n-startup-trials 4 \
    --search-space conditional --warm-start --sampler tpe --pruner median \
    --seed 0 --num-threads 1 --storage sqlite:///demo.db --study-name ppo-pendulum
"$PYTHON" -m zoo_ext export --storage sqlite:///demo.db --study-name ppo-pendulum -o best.yml
best="$(shown "$root/demo/best.yml")"
retrain="$(quoted "$python_shown" -m rl_zoo3.train --algo ppo --env Pendulum-v1 --conf-file "$best")"
browse="$(quoted "$python_shown" -m mlflow ui --backend-store-uri "sqlite:///$(shown "$root/demo/mlflow.db")")"
dashboard_command="$(quoted "$dashboard_shown" "sqlite:///$(shown "$root/demo/demo.db")")"
cat <<TXT
Re-train the best trial:  $retrain
Browse the trials:        $browse   (experiment ppo-Pendulum-v1)
Optuna dashboard:         $dashboard_command   (then open http://127.0.0.1:8080)
TXT

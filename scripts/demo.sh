#!/usr/bin/env bash
# Set up, then tune PPO on Pendulum-v1 with the unchanged stock command on embedded defaults
# (SQLite study storage, MLflow's local store), and export the best trial as an rl_zoo3 file.
# ZOO_EXT_DEMO_TIMESTEPS and ZOO_EXT_DEMO_TRIALS shrink the budget (CI); the defaults are 20000 and 8.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
bash scripts/setup.sh
python_shown="${PYTHON#"$PWD/"}"
# optuna-dashboard (a dependency) has no "python -m" entry: its console script sits next to the interpreter.
dashboard="$("$PYTHON" -c 'import pathlib, sys; print(pathlib.Path(sys.executable).with_name("optuna-dashboard"))')"
dashboard_shown="${dashboard#"$PWD/"}"
mkdir -p demo
cd demo
"$PYTHON" -m rl_zoo3.train --algo ppo --env Pendulum-v1 -optimize \
    -n "${ZOO_EXT_DEMO_TIMESTEPS:-20000}" --n-trials "${ZOO_EXT_DEMO_TRIALS:-8}" --n-evaluations 4 --n-startup-trials 4 \
    --search-space conditional --warm-start --sampler tpe --pruner median \
    --seed 0 --num-threads 1 --storage sqlite:///demo.db --study-name ppo-pendulum
"$PYTHON" -m zoo_ext export --storage sqlite:///demo.db --study-name ppo-pendulum -o best.yml
cat <<TXT
Re-train the best trial:  $python_shown -m rl_zoo3.train --algo ppo --env Pendulum-v1 --conf-file demo/best.yml
Browse the trials:        $python_shown -m mlflow ui --backend-store-uri sqlite:///demo/mlflow.db   (experiment ppo-Pendulum-v1)
Optuna dashboard:         $dashboard_shown sqlite:///demo/demo.db   (then open http://127.0.0.1:8080)
TXT

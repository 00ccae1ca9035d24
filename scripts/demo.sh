#!/usr/bin/env bash
# Set up, then tune PPO on Pendulum-v1 with the unchanged stock command (SQLite storage),
# and export the best trial as an rl_zoo3 hyperparams file.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/setup.sh
mkdir -p demo
cd demo
"$PYTHON" -m rl_zoo3.train --algo ppo --env Pendulum-v1 -optimize \
    -n 20000 --n-trials 8 --n-evaluations 4 --n-startup-trials 4 \
    --sampler tpe --pruner median --seed 0 --num-threads 1 --no-optim-plots \
    --storage sqlite:///demo.db --study-name ppo-pendulum
"$PYTHON" -m zoo_ext export --storage sqlite:///demo.db --study-name ppo-pendulum -o best.yml
echo "Re-train the best trial: python -m rl_zoo3.train --algo ppo --env Pendulum-v1 --conf-file demo/best.yml"

#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite on 2 processes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
bash scripts/setup.sh --test
"$PYTHON" -m ruff check zoo_ext tests scripts
"$PYTHON" -m mypy
"$PYTHON" -m pytest -n 2 -p no:benchmark "$@"

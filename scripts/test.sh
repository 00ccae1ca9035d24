#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite on 2 processes, with the interpreter set-up installed into.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
bash scripts/setup.sh --test
"$PYTHON" -m ruff check zoo_ext tests scripts
"$PYTHON" -m mypy
"$PYTHON" -m pytest -n 2 -p no:benchmark "$@"

#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the whole test suite on 2 processes, with the interpreter set-up installed into.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
bash scripts/setup.sh --test
"$PYTHON" -m ruff check zoo_ext tests scripts
"$PYTHON" -m mypy
# import-linter: the layers and "only the adapter imports rl_zoo3" contracts of pyproject.toml
"$PYTHON" -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'
"$PYTHON" -m pytest -n 2 -p no:benchmark "$@"

#!/usr/bin/env bash
# Set up (scripts/setup.sh --test), lint (ruff), type-check (mypy), check the import contracts (import-linter) and
# run the test suite on 2 processes, with the interpreter set-up installed into.
#   bash scripts/test.sh            everything (what .ci/run calls)
#   bash scripts/test.sh --fast     the same checks, but only the tests not marked slow (pytest -m "not slow")
# Other arguments are passed on to pytest, e.g. bash scripts/test.sh --fast tests/study -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
fast=()
args=()
for arg in "$@"; do
    if [[ "$arg" == "--fast" ]]; then
        fast=(-m "not slow")
    else
        args+=("$arg")
    fi
done
bash scripts/setup.sh --test
"$PYTHON" -m ruff check zoo_ext tests scripts
"$PYTHON" -m mypy
# import-linter: the layers and "only the adapter imports rl_zoo3" contracts of pyproject.toml
"$PYTHON" -c 'import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())'
"$PYTHON" -m pytest -n 2 -p no:benchmark "${fast[@]}" "${args[@]}"

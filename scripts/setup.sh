#!/usr/bin/env bash
# Install zoo_ext and its dependencies, with the CPU build of torch, into $PYTHON, else into python3 when it
# runs in a virtual environment, else into the project's .venv (created if missing): see scripts/_python.sh.
# With --test, also what the tests need: the test extras, Debian's Chromium (for the MLflow UI test) and
# Debian's PostgreSQL server (the tests start throw-away clusters on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_python.sh
echo "Installing zoo_ext into $("$PYTHON" -c 'import sys; print(sys.prefix)')" >&2
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
"$PYTHON" -m pip install --quiet "torch==2.13.0"
if [[ "${1:-}" == "--test" ]]; then
    "$PYTHON" -m pip install --quiet -e ".[test]"
    missing=()
    command -v chromium >/dev/null || missing+=(chromium)
    compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
    if (( ${#missing[@]} )); then
        SUDO=""
        [[ "$(id -u)" != 0 ]] && SUDO="sudo"
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
else
    "$PYTHON" -m pip install --quiet -e .
fi

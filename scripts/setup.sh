#!/usr/bin/env bash
# Install zoo_ext and its dependencies into the current Python, with the CPU build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
"$PYTHON" -m pip install --quiet "torch==2.13.0"
"$PYTHON" -m pip install --quiet -e ".[test]"

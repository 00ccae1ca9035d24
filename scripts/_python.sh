# shellcheck shell=bash
# Sourced from the project root by setup.sh, demo.sh and test.sh: exports PYTHON, the interpreter zoo_ext is
# installed into and run with. An explicit PYTHON=... wins; else python3 when it runs in a virtual environment;
# else the project's .venv, created if missing (a system Python may refuse pip installs: PEP 668).
if [[ -z "${PYTHON:-}" ]]; then
    if [[ "$(python3 -c 'import sys; print(sys.prefix != sys.base_prefix)')" == True ]]; then
        PYTHON=python3
    else
        if [[ ! -x .venv/bin/python ]]; then
            echo "Creating the virtual environment .venv (python3 is not in one)" >&2
            python3 -m venv .venv || {
                rm -rf .venv
                echo "zoo_ext: error: python3 -m venv .venv failed (Debian/Ubuntu: apt-get install python3-venv)" >&2
                exit 1
            }
        fi
        PYTHON="$PWD/.venv/bin/python"
    fi
fi
export PYTHON

#!/usr/bin/env bash
# Run the whole test suite on a fresh machine with Python 3.11: creates .venv, installs
# memaudit with its cpu, train (PyTorch, for the train -> export -> serve tests) and dev
# extras, then runs ruff, hadolint (Dockerfile) and pytest. The PostgreSQL tests start their own throwaway cluster
# from the Debian `postgresql` server binaries (skipped, with a message, when those are not
# installed).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[cpu,dev,train]"
.venv/bin/ruff check .
.venv/bin/hadolint Dockerfile
exec .venv/bin/python -m pytest "$@"

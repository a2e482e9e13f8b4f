#!/usr/bin/env bash
# Start memaudit on the embedded SQLite default (./data/memaudit.db) at http://127.0.0.1:8000
# (Swagger UI at /docs). Creates .venv and installs memaudit[cpu] on first use.
# Environment variables (see README) change the database, limits and bind address.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/memaudit ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[cpu]"
fi
exec .venv/bin/memaudit serve --host "${MEMAUDIT_HOST:-127.0.0.1}" --port "${MEMAUDIT_PORT:-8000}" "$@"

#!/usr/bin/env bash
# Start memaudit on the embedded SQLite default (./data/memaudit.db) at http://127.0.0.1:8000
# (Swagger UI at /docs). Creates .venv and installs memaudit[cpu] on first use.
# MEMAUDIT_HOST / MEMAUDIT_PORT set the bind address; other environment variables (see
# README) change the database and limits.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec .venv/bin/memaudit serve --host "${MEMAUDIT_HOST:-127.0.0.1}" --port "${MEMAUDIT_PORT:-8000}" "$@"

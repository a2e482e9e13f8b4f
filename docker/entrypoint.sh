#!/bin/sh
# Container start: migrate the database to the newest schema, then serve.
# MEMAUDIT_WORKERS sets the uvicorn worker processes (default 1); MEMAUDIT_HOME is where
# alembic.ini and migrations/ live (the image's /srv/memaudit); MEMAUDIT_PORT the port.
set -eu
alembic -c "${MEMAUDIT_HOME:-/srv/memaudit}/alembic.ini" upgrade head
exec uvicorn app.main:create_app --factory --host "${MEMAUDIT_HOST:-0.0.0.0}" \
  --port "${MEMAUDIT_PORT:-8000}" \
  --workers "${MEMAUDIT_WORKERS:-1}" --proxy-headers

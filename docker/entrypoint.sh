#!/bin/sh
# Container start: migrate the database to the newest schema, then serve.
# MEMAUDIT_WORKERS sets the uvicorn worker processes (default 1); MEMAUDIT_HOME is where
# alembic.ini and migrations/ live (the image's /srv/memaudit); MEMAUDIT_PORT the port.
# MEMAUDIT_HOST is 0.0.0.0 inside the container (compose publishes the port on the host's
# loopback unless MEMAUDIT_PUBLISH_ADDRESS says otherwise); exported so the app knows it.
set -eu
MEMAUDIT_HOST="${MEMAUDIT_HOST:-0.0.0.0}"
export MEMAUDIT_HOST
alembic -c "${MEMAUDIT_HOME:-/srv/memaudit}/alembic.ini" upgrade head
# `memaudit serve` applies the front-door limits (MEMAUDIT_MAX_HEADER_BYTES ..., README
# "Security") to uvicorn; X-Forwarded-* are trusted from 127.0.0.1 only (uvicorn's default).
exec memaudit serve --host "${MEMAUDIT_HOST}" --port "${MEMAUDIT_PORT:-8000}" \
  --workers "${MEMAUDIT_WORKERS:-1}"

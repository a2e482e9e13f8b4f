#!/usr/bin/env bash
# The whole audit on synthetic data in one command: see `memaudit demo --help`.
# Creates .venv and installs memaudit[cpu] on first use; writes ./memaudit-demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
exec .venv/bin/memaudit demo "$@"

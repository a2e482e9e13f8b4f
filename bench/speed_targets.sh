#!/usr/bin/env bash
# Every speed benchmark of issue 4, one after the other (see bench/README.md). By hand:
#   bash bench/speed_targets.sh [/tmp/memaudit-10k]
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-/tmp/memaudit-10k}
py=.venv/bin/python
[ -d "$data/generated" ] || $py bench/make_generated.py "$data"
run() { echo; echo "### $*"; flock /tmp/memaudit-bench.lock $py "$@"; }
run bench/bench_hashing.py
run bench/bench_compare_match.py "$data"
run bench/bench_search.py
run bench/bench_classify.py "$data"
run bench/bench_hash_import.py "$data" --generated 100
run bench/bench_replicas.py "$data"

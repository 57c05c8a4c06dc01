#!/usr/bin/env bash
# A bounded soak (default 60 s) of mixed load through a release memgate
# over real memcached: exits non-zero if any acknowledged write was lost or
# memgate's memory kept growing. Not part of scripts/test.sh (too slow).
#   scripts/soak.sh --seconds 300
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p memgate-server -p memgate-bench
exec target/release/memgate-bench --memgate-bin target/release/memgate soak "$@"

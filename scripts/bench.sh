#!/usr/bin/env bash
# Benchmarks memgate side by side with memcached direct and twemproxy (if
# `nutcracker` is installed: apt-get install nutcracker), release builds
# only. Arguments go to `memgate-bench compare` (see --help), e.g.
#   scripts/bench.sh --seconds 10 --concurrency 64
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p memgate-server -p memgate-bench
exec target/release/memgate-bench --memgate-bin target/release/memgate compare "$@"

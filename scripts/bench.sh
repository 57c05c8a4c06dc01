#!/usr/bin/env bash
# Server CPU per operation, throughput and latency of memcached direct,
# twemproxy (if `nutcracker` is installed: apt-get install nutcracker),
# memgate and a do-nothing tonic server, over the same memcached processes:
# one markdown table on stdout. Release builds only. Arguments go to
# `memgate-bench compare` (see --help), e.g.
#   scripts/bench.sh --seconds 10 --rounds 3
#   scripts/bench.sh --seconds 2 --only memgate,twemproxy --workloads get
#   scripts/bench.sh --memgate-arg=--max-idle-conns=4
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p memgate-server -p memgate-bench
exec "${CARGO_TARGET_DIR:-target}/release/memgate-bench" \
  --memgate-bin "${CARGO_TARGET_DIR:-target}/release/memgate" compare "$@"

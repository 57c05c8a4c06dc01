#!/usr/bin/env bash
# Server CPU per operation, throughput and latency of memcached direct,
# twemproxy (nutcracker, installed from Debian if missing),
# memgate and a do-nothing tonic server, over the same memcached processes:
# one markdown table on stdout. Release builds only. Arguments go to
# `memgate-bench compare` (see --help), e.g.
#   scripts/bench.sh --seconds 10 --rounds 3
#   scripts/bench.sh --seconds 2 --only memgate,twemproxy --workloads get
#   scripts/bench.sh --memgate-arg=--max-idle-conns=4
# Every target gets the same load shape: a workload's N in-flight callers
# share 4 connections per target address (HTTP/2 multiplexed for memgate and
# the null server; memcached text pipelined for twemproxy and, per shard,
# memcached direct). --text-conns-per-caller gives the text targets the old
# shape instead: one connection per caller, one request at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh >&2
if ! command -v nutcracker >/dev/null && [ ! -x /usr/sbin/nutcracker ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nutcracker >&2
fi
cargo build --release -q -p memgate-server -p memgate-bench
exec "${CARGO_TARGET_DIR:-target}/release/memgate-bench" \
  --memgate-bin "${CARGO_TARGET_DIR:-target}/release/memgate" compare "$@"

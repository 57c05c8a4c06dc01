#!/usr/bin/env bash
# Runs a command against a live stack: 3 real memcached processes on free
# loopback ports and a memgate in front of them. The command sees
#   MEMGATE_TARGET     host:port of memgate (plaintext gRPC)
#   MEMGATE_MEMCACHED  the memcached addresses, comma-separated
# Everything started here is stopped when the command ends.
#
#   scripts/with-stack.sh pytest client/python/tests
#
# MEMGATE_BIN picks the memgate binary (default: target/debug/memgate,
# built if missing); SHARDS the number of memcached processes (default 3).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${MEMGATE_BIN:-$root/target/debug/memgate}
cli=${MEMGATE_CLI:-$(dirname "$bin")/memgate-cli}
export MEMGATE_BIN=$bin
shards=${SHARDS:-3}
work=$(mktemp -d)
chmod 0777 "$work"  # memcached writes its port file after dropping to nobody
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

[ -x "$bin" ] && [ -x "$cli" ] || (cd "$root" && cargo build -q -p memgate-server -p memgate-client)

user_flag=()
[ "$(id -u)" = 0 ] && user_flag=(-u nobody)

addrs=()
for i in $(seq 1 "$shards"); do
  MEMCACHED_PORT_FILENAME="$work/mc$i.port" memcached "${user_flag[@]}" -l 127.0.0.1 -p -1 -U 0 -m 64 &
  pids+=($!)
done
for i in $(seq 1 "$shards"); do
  for _ in $(seq 1 100); do
    [ -s "$work/mc$i.port" ] && grep -q 'TCP INET' "$work/mc$i.port" && break
    sleep 0.05
  done
  port=$(sed -n 's/^TCP INET: //p' "$work/mc$i.port")
  [ -n "$port" ] || { echo "memcached $i did not start" >&2; exit 1; }
  addrs+=("127.0.0.1:$port")
done
MEMGATE_MEMCACHED=$(IFS=,; echo "${addrs[*]}")

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MEMGATE_TARGET=127.0.0.1:$port
# MEMGATE_ARGS adds flags, e.g. MEMGATE_ARGS="--default-ttl 60".
# shellcheck disable=SC2086
MEMGATE_LOG=${MEMGATE_LOG:-warn} "$bin" --listen "$MEMGATE_TARGET" --memcached "$MEMGATE_MEMCACHED" ${MEMGATE_ARGS:-} &
pids+=($!)

# Ready when health says SERVING (the pool has answered), not after a sleep.
ready=""
for _ in $(seq 1 200); do
  if "$cli" --target "http://$MEMGATE_TARGET" --timeout 500ms health >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.05
done
[ -n "$ready" ] || { echo "memgate at $MEMGATE_TARGET never reported SERVING" >&2; exit 1; }

export MEMGATE_TARGET MEMGATE_MEMCACHED
"$@"

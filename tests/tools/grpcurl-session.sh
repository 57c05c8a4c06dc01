#!/usr/bin/env bash
# The README's grpcurl session and health probes, run with the real tools
# (grpcurl, grpc-health-probe) against a live memgate through reflection:
# no .proto file is given to either tool. Run inside scripts/with-stack.sh.
set -euo pipefail
: "${MEMGATE_TARGET:?run me inside scripts/with-stack.sh}"
t=$MEMGATE_TARGET
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }

services=$(grpcurl -plaintext "$t" list)
for s in memgate.v1.Cache grpc.health.v1.Health grpc.reflection.v1.ServerReflection; do
  grep -qx "$s" <<<"$services" || fail "list lacks $s: $services"
done
ok "grpcurl list shows the cache, health and reflection services"

desc=$(grpcurl -plaintext "$t" describe memgate.v1.Cache)
for rpc in Get Set Delete List BatchGet BatchSet BatchDelete BatchGetStream BatchSetStream BatchDeleteStream Stats Locate Increment Touch; do
  grep -q "rpc $rpc (" <<<"$desc" || fail "describe lacks rpc $rpc"
done
ok "grpcurl describe memgate.v1.Cache shows all fourteen RPCs"

key="readme-$$-$RANDOM"
out=$(grpcurl -plaintext -d "{\"key\": \"$key\", \"value\": \"aGVsbG8gd29ybGQ=\", \"ttl_seconds\": 300}" "$t" memgate.v1.Cache/Set)
grep -q '"stored": true' <<<"$out" || fail "Set answered $out"
out=$(grpcurl -plaintext -d "{\"key\": \"$key\"}" "$t" memgate.v1.Cache/Get)
grep -q '"found": true' <<<"$out" && grep -q '"value": "aGVsbG8gd29ybGQ="' <<<"$out" || fail "Get answered $out"
ok "grpcurl Set then Get round-trips a base64 value"

out=$(grpcurl -plaintext -d "{\"prefix\": \"$key\"}" "$t" memgate.v1.Cache/List)
grep -q "\"$key\"" <<<"$out" || fail "List answered $out"
ok "grpcurl List finds the key by prefix"

out=$(grpcurl -plaintext "$t" memgate.v1.Cache/Stats)
: "${MEMGATE_MEMCACHED:?run me inside scripts/with-stack.sh}"
IFS=, read -ra shards <<<"$MEMGATE_MEMCACHED"
for addr in "${shards[@]}"; do
  grep -q "\"address\": \"$addr\"" <<<"$out" || fail "Stats lacks shard $addr: $out"
done
[ "$(grep -c '"up": true' <<<"$out")" -eq "${#shards[@]}" ] || fail "Stats: not every shard up: $out"
grep -q '"currItems": "[1-9]' <<<"$out" || fail "Stats: no shard holds the key just set: $out"
grep -q '"version": "[0-9]' <<<"$out" || fail "Stats: no version: $out"
ok "grpcurl Stats through reflection names every shard, up, with memcached's figures"

out=$(grpcurl -plaintext -d "{\"keys\": [\"$key\"]}" "$t" memgate.v1.Cache/Locate)
where=$(python3 -c 'import json,sys; l=json.load(sys.stdin)["locations"][0]; assert l["up"], l; print(l["shard"])' <<<"$out") ||
  fail "Locate answered $out"
[[ ",$MEMGATE_MEMCACHED," == *",$where,"* ]] || fail "Locate names $where, not a pool member"
ok "grpcurl Locate names the key's live shard"

ctr="$key-ctr"
out=$(grpcurl -plaintext -d "{\"key\": \"$ctr\", \"delta\": 5, \"initial_value\": 10, \"ttl_seconds\": 300}" "$t" memgate.v1.Cache/Increment)
grep -q '"value": "10"' <<<"$out" || fail "Increment (create) answered $out"
out=$(grpcurl -plaintext -d "{\"key\": \"$ctr\", \"delta\": -3}" "$t" memgate.v1.Cache/Increment)
grep -q '"value": "7"' <<<"$out" || fail "Increment answered $out"
out=$(grpcurl -plaintext -d "{\"key\": \"$ctr\", \"ttl_seconds\": 600}" "$t" memgate.v1.Cache/Touch)
grep -q '"found": true' <<<"$out" || fail "Touch answered $out"
set +e
out=$(grpcurl -plaintext -d "{\"key\": \"$key\", \"delta\": 1}" "$t" memgate.v1.Cache/Increment 2>&1); code=$?
set -e
[ "$code" -ne 0 ] && grep -q "FailedPrecondition" <<<"$out" && grep -q '"reason": "NOT_A_NUMBER"' <<<"$out" ||
  fail "Increment of text gave exit $code: $out"
ok "grpcurl Increment creates, decrements, refuses text (NOT_A_NUMBER); Touch finds the counter"

# Conditional writes with CAS, leases and invalidation, as the README shows.
k="readme-cas-$$-$RANDOM"
out=$(grpcurl -plaintext -d "{\"key\": \"$k\", \"value\": \"djE=\", \"condition\": \"SET_CONDITION_ABSENT\"}" "$t" memgate.v1.Cache/Set)
grep -q '"stored": true' <<<"$out" || fail "Set ABSENT on a new key answered $out"
out=$(grpcurl -plaintext -d "{\"key\": \"$k\", \"value\": \"djI=\", \"condition\": \"SET_CONDITION_ABSENT\"}" "$t" memgate.v1.Cache/Set)
grep -q '"stored"' <<<"$out" && fail "Set ABSENT on an existing key answered $out"
cas=$(grpcurl -plaintext -d "{\"key\": \"$k\"}" "$t" memgate.v1.Cache/Get | sed -n 's/.*"cas": "\([0-9]*\)".*/\1/p')
[ -n "$cas" ] || fail "Get gave no cas"
out=$(grpcurl -plaintext -d "{\"key\": \"$k\", \"value\": \"djM=\", \"condition\": \"SET_CONDITION_CAS_MATCH\", \"cas\": \"$cas\"}" "$t" memgate.v1.Cache/Set)
grep -q '"stored": true' <<<"$out" || fail "Set CAS_MATCH with the current token answered $out"
out=$(grpcurl -plaintext -d "{\"key\": \"$k\", \"value\": \"djQ=\", \"condition\": \"SET_CONDITION_CAS_MATCH\", \"cas\": \"$cas\"}" "$t" memgate.v1.Cache/Set)
grep -q '"stored"' <<<"$out" && fail "Set CAS_MATCH with a used token answered $out"
ok "grpcurl Set ABSENT stores once; CAS_MATCH stores with the current token only"

lk="readme-lease-$$-$RANDOM"
out=$(grpcurl -plaintext -d "{\"key\": \"$lk\", \"lease_ttl_seconds\": 30}" "$t" memgate.v1.Cache/Get)
grep -q '"lease": "LEASE_STATE_WON"' <<<"$out" || fail "first leased Get answered $out"
out=$(grpcurl -plaintext -d "{\"key\": \"$lk\", \"lease_ttl_seconds\": 30}" "$t" memgate.v1.Cache/Get)
grep -q '"lease": "LEASE_STATE_HELD"' <<<"$out" || fail "second leased Get answered $out"
grpcurl -plaintext -d "{\"key\": \"$lk\", \"value\": \"ZmlsbGVk\"}" "$t" memgate.v1.Cache/Set >/dev/null
out=$(grpcurl -plaintext -d "{\"key\": \"$lk\", \"invalidate\": true}" "$t" memgate.v1.Cache/Delete)
grep -q '"deleted": true' <<<"$out" || fail "invalidating Delete answered $out"
out=$(grpcurl -plaintext -d "{\"key\": \"$lk\", \"lease_ttl_seconds\": 30}" "$t" memgate.v1.Cache/Get)
grep -q '"stale": true' <<<"$out" && grep -q '"lease": "LEASE_STATE_WON"' <<<"$out" \
  && grep -q '"value": "ZmlsbGVk"' <<<"$out" || fail "leased Get of a stale item answered $out"
ok "grpcurl leases: one WON then HELD; after an invalidating Delete the stale value comes with the lease"

set +e
out=$(grpcurl -plaintext -d '{"key": "bad key"}' "$t" memgate.v1.Cache/Get 2>&1); code=$?
set -e
[ "$code" -ne 0 ] && grep -q "InvalidArgument" <<<"$out" || fail "bad key gave exit $code: $out"
ok "grpcurl sees InvalidArgument for a key with a space"
# The details' types come through reflection too, so grpcurl decodes them.
grep -q '"reason": "KEY_INVALID"' <<<"$out" && grep -q '"field": "key"' <<<"$out" || fail "bad key details not decoded: $out"
ok "grpcurl decodes the error details (ErrorInfo KEY_INVALID, BadRequest field key)"

out=$(grpcurl -plaintext -d '{"service": "memgate.v1.Cache"}' "$t" grpc.health.v1.Health/Check)
grep -q SERVING <<<"$out" || fail "health via grpcurl: $out"
ok "grpcurl calls the health service through reflection"

grpc-health-probe -addr "$t" >/dev/null 2>&1 || fail "grpc-health-probe for \"\" exited $?"
grpc-health-probe -addr "$t" -service memgate.v1.Cache >/dev/null 2>&1 || fail "grpc-health-probe for memgate.v1.Cache exited $?"
ok "grpc-health-probe: both services SERVING (exit 0)"

set +e
grpc-health-probe -addr "$t" -service no.such.Service >/dev/null 2>&1; code=$?
set -e
[ "$code" -eq 3 ] || fail "unknown service: expected exit 3 (RPC failure NOT_FOUND), got $code"
ok "grpc-health-probe: unknown service exits 3"

# A memgate whose only shard is unreachable must say NOT_SERVING (exit 4).
dead_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
lone_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MEMGATE_LOG=error "${MEMGATE_BIN:?}" --listen "127.0.0.1:$lone_port" --memcached "127.0.0.1:$dead_port" &
lone=$!
trap 'kill $lone 2>/dev/null || true' EXIT
code=2
for _ in $(seq 1 100); do
  set +e; grpc-health-probe -addr "127.0.0.1:$lone_port" -service memgate.v1.Cache >/dev/null 2>&1; code=$?; set -e
  [ "$code" -ne 2 ] && break   # 2: not listening yet
  sleep 0.1
done
[ "$code" -eq 4 ] || fail "memgate without a live shard: expected exit 4 (NOT_SERVING), got $code"
ok "grpc-health-probe: NOT_SERVING (exit 4) when no shard answers"

echo "$pass passed, 0 failed"

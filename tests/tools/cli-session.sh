#!/usr/bin/env bash
# memgate-cli as an operator types it, against a live memgate over real
# memcached. Run inside scripts/with-stack.sh.
set -euo pipefail
: "${MEMGATE_TARGET:?run me inside scripts/with-stack.sh}"
root=$(cd "$(dirname "$0")/../.." && pwd)
cli=${MEMGATE_CLI:-$root/target/debug/memgate-cli}
export MEMGATE_TARGET="http://$MEMGATE_TARGET"
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }
k="cli-$$-$RANDOM"

"$cli" set "$k:a" "hello world"
[ "$("$cli" get "$k:a")" = "hello world" ] || fail "get after set"
ok "set from an argument, get prints the raw value"

printf 'from\0stdin\r\n' | "$cli" set "$k:b" --ttl 300
"$cli" get "$k:b" | cmp - <(printf 'from\0stdin\r\n') || fail "stdin value changed"
ok "set from stdin keeps binary bytes"

head -c 4096 /dev/urandom > "$BASH_SOURCE.tmp.$$"
trap 'rm -f "$BASH_SOURCE.tmp.$$"' EXIT
"$cli" set "$k:c" --file "$BASH_SOURCE.tmp.$$"
"$cli" get "$k:c" | cmp - "$BASH_SOURCE.tmp.$$" || fail "file value changed"
ok "set from a file"

set +e; "$cli" get "$k:missing" >/dev/null; code=$?; set -e
[ "$code" -eq 1 ] || fail "a miss exits $code, want 1"
ok "a miss exits 1"

[ "$("$cli" --json get "$k:a")" = "{\"found\":true,\"key\":\"$k:a\",\"value\":\"hello world\"}" ] ||
  fail "json get: $("$cli" --json get "$k:a")"
printf '\xff\xfe\x00' | "$cli" set "$k:bin"
"$cli" --json get "$k:bin" | grep -q '"value_base64":"//4A"' || fail "non-UTF-8 json is not base64: $("$cli" --json get "$k:bin")"
"$cli" delete "$k:bin" >/dev/null
ok "--json prints text values as text and binary as base64"

got=$("$cli" list "$k:" 2>&1) || true
[ "$got" = "$(printf '%s\n' "$k:a" "$k:b" "$k:c")" ] || fail "list: $got"
ok "list by prefix"

"$cli" batch-set "$k:x=1" "$k:y=2" | grep -qx "stored 2" || fail "batch-set"
out=$("$cli" batch-get "$k:x" "$k:y" "$k:z" || true)
[ "$out" = "$(printf '%s\t1\n%s\t2\n%s\t(miss)' "$k:x" "$k:y" "$k:z")" ] || fail "batch-get: $out"
"$cli" batch-delete "$k:x" "$k:y" "$k:z" | grep -qx "deleted 2" || fail "batch-delete"
ok "batch-set, batch-get, batch-delete"

"$cli" delete "$k:a" >/dev/null || fail "delete of an existing key"
set +e; "$cli" delete "$k:a"; code=$?; set -e
[ "$code" -eq 1 ] || fail "deleting a missing key exits $code, want 1"
ok "delete exits 0 when the key existed, 1 when not"

[ "$("$cli" health)" = SERVING ] && [ "$("$cli" health --service memgate.v1.Cache)" = SERVING ] || fail health
ok "health of both services"

out=$("$cli" stats) || fail "stats exited $? with every shard up: $out"
IFS=, read -ra shards <<<"${MEMGATE_MEMCACHED:?run me inside scripts/with-stack.sh}"
grep -q "^SHARD  *UP  *SHARE  *ITEMS  *BYTES / LIMIT  *EVICTIONS  *HIT RATIO  *VERSION  *UPTIME$" <<<"$out" ||
  fail "stats: no shard table header: $out"
for addr in "${shards[@]}"; do
  grep -Eq "^$addr +up +[0-9.]+% +[0-9]+ +[0-9.]+ [KMG]?i?B / 64.0 MiB" <<<"$out" || fail "stats: no row for $addr: $out"
done
grep -q "^memgate [0-9]" <<<"$out" || fail "stats: no memgate line: $out"
"$cli" --json stats | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert len(s["shards"]) == int(sys.argv[1]), s
assert all(sh["up"] and sh["backend"]["version"] for sh in s["shards"]), s
assert abs(sum(sh["ring_share"] for sh in s["shards"]) - 1) < 1e-9, s
' "${#shards[@]}" || fail "stats --json"
ok "stats prints a row per shard (up, share, items, bytes/limit) and --json"

"$cli" set "$k:loc" located
out=$("$cli" locate "$k:loc") || fail "locate exited $?: $out"
where=$(awk 'NR == 2 && $3 == "yes" { print $2 }' <<<"$out")
[[ ",$MEMGATE_MEMCACHED," == *",$where,"* ]] || fail "locate: no live shard of the pool: $out"
# The key really is there, asked of that memcached directly.
python3 - "$where" "$k:loc" <<'PY' || fail "locate: $k:loc is not on $where"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
with socket.create_connection((host, int(port))) as s:
    s.sendall(b"get %s\r\n" % sys.argv[2].encode())
    reply = b""
    while not reply.endswith(b"END\r\n"):
        reply += s.recv(4096)
assert reply.startswith(b"VALUE "), reply
PY
ok "locate names the memcached that really holds the key"

# Conditional writes: add, replace and compare-and-swap exit 1 when their
# condition fails, and then leave the value alone.
"$cli" add "$k:add" first || fail "add of a missing key"
set +e; "$cli" add "$k:add" second; code=$?; set -e
[ "$code" -eq 1 ] || fail "add of an existing key exits $code, want 1"
[ "$("$cli" get "$k:add")" = first ] || fail "a refused add changed the value"
set +e; "$cli" replace "$k:nothing" v; code=$?; set -e
[ "$code" -eq 1 ] || fail "replace of a missing key exits $code, want 1"
set +e; "$cli" get "$k:nothing" >/dev/null; code=$?; set -e
[ "$code" -eq 1 ] || fail "a refused replace wrote the key"
"$cli" replace "$k:add" replaced || fail "replace of an existing key"
[ "$("$cli" get "$k:add")" = replaced ] || fail "replace did not store"
ok "add and replace exit 1 when the condition fails, and write nothing"

"$cli" set "$k:cas" v1 --ttl 300
meta=$("$cli" get --meta "$k:cas" | head -1)
[[ "$meta" =~ ^cas=([0-9]+)\ ttl=(29[89]|300)\ stale=false$ ]] || fail "get --meta: $meta"
token=${BASH_REMATCH[1]}
[ "$token" -ne 0 ] || fail "cas 0 on memcached: $meta"
[ "$("$cli" get --meta "$k:cas" | tail -n +2)" = v1 ] || fail "get --meta: no value after the meta line"
"$cli" set "$k:cas" v2 --ttl 300 --cas "$token" || fail "set --cas with the current token"
set +e; "$cli" set "$k:cas" v3 --cas "$token"; code=$?; set -e
[ "$code" -eq 1 ] || fail "set --cas with a stale token exits $code, want 1"
[ "$("$cli" get "$k:cas")" = v2 ] || fail "a refused CAS changed the value"
out=$("$cli" --json add "$k:cas" v4 || true)
[ "$out" = "{\"cas\":0,\"key\":\"$k:cas\",\"stored\":false}" ] || fail "json add: $out"
"$cli" --json set "$k:fresh" v | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["stored"] is True and r["cas"] > 0, r' || fail "json set has no cas"
"$cli" --json get --meta "$k:cas" | python3 -c '
import json, sys
r = json.load(sys.stdin)
assert r["value"] == "v2" and r["cas"] > 0 and 0 < r["ttl_remaining_seconds"] <= 300 and r["stale"] is False, r
' || fail "json get --meta: $("$cli" --json get --meta "$k:cas")"
ok "get --meta prints cas, ttl and stale; set --cas is compare-and-swap, exit 1 on a stale token"

"$cli" get --touch 600 "$k:cas" >/dev/null || fail "get --touch"
meta=$("$cli" get --meta "$k:cas" | head -1)
[[ "$meta" =~ \ ttl=(59[89]|600)\  ]] || fail "ttl after get --touch 600: $meta"
"$cli" set "$k:forever" v --ttl 0
[[ "$("$cli" get --meta "$k:forever" | head -1)" == *" ttl=never "* ]] || fail "ttl of a never-expiring item"
ok "get --touch sets the TTL (read back); ttl=never for items that never expire"

[ "$("$cli" incr "$k:ctr" 0 --initial 10)" = 10 ] || fail "incr --initial"
[ "$("$cli" decr "$k:ctr" 3)" = 7 ] || fail "decr"
[ "$("$cli" decr "$k:ctr" 100)" = 0 ] || fail "decr stops at 0"
ok "decr subtracts, stopping at 0"

"$cli" set "$k:inv" old
"$cli" delete --invalidate "$k:inv" || fail "delete --invalidate of an existing key"
[ "$("$cli" get "$k:inv")" = old ] || fail "an invalidated key no longer reads its old value"
[[ "$("$cli" get --meta "$k:inv" | head -1)" == *" stale=true" ]] || fail "invalidated key not stale: $("$cli" get --meta "$k:inv")"
set +e; "$cli" delete --invalidate "$k:never-there"; code=$?; set -e
[ "$code" -eq 1 ] || fail "delete --invalidate of a missing key exits $code, want 1"
"$cli" set "$k:inv" new
[[ "$("$cli" get --meta "$k:inv" | head -1)" == *" stale=false" ]] || fail "a set did not clear the stale state"
ok "delete --invalidate keeps the old value readable, flagged stale, until a set"

set +e; err=$("$cli" set "bad key" v 2>&1); code=$?; set -e
[ "$code" -eq 2 ] && grep -q "InvalidArgument\|invalid argument\|Client specified an invalid argument" <<<"$err" || fail "bad key: exit $code: $err"
grep -q "spaces" <<<"$err" || fail "bad key message: $err"
ok "a bad key is a clear error, exit 2"

echo "$pass passed, 0 failed"

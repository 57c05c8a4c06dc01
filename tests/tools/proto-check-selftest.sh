#!/usr/bin/env bash
# Proves that scripts/proto-check.sh can fail: it runs the real script in
# throwaway git repositories holding a copy of proto/ (with buf.yaml), whose
# last commit makes a compatible change, an incompatible one, or a lint
# error, and checks the verdict and the reason each time. Also covers the
# first commit and shallow clones. Needs git and the pinned buf
# (scripts/setup.sh); no memgate.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
check=$root/scripts/proto-check.sh
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
repo=$tmp/repo
mkdir "$repo"
cp -r "$root/proto" "$repo/proto"
proto=$repo/proto/memgate/v1/cache.proto
g() { git -C "$repo" -c user.name=selftest -c user.email=selftest@example.invalid "$@"; }
g init -q -b main
g add proto
g commit -q -m "the contract as it is"
good=$(g rev-parse HEAD)

# run DIR: runs the check in DIR, output in $out, exit status in $code.
run() {
  set +e
  out=$(cd "$1" && "$check" 2>&1)
  code=$?
  set -e
}
# edit PERL: applies a perl substitution to cache.proto and commits it;
# fails unless the file changed, so a stale pattern cannot pass unnoticed.
edit() {
  cp "$proto" "$tmp/before"
  perl -0pi -e "$1" "$proto"
  ! cmp -s "$proto" "$tmp/before" || fail "the edit '$1' changed nothing"
  g commit -q -am "$2"
}
reset_to_good() { g reset -q --hard "$good"; }

run "$repo"
[ "$code" = 0 ] && grep -q "first commit" <<<"$out" || fail "first commit: exit $code: $out"
ok "the first commit has nothing to compare against and passes lint"

edit 's/(message GetResult \{[^}]*?int32 error_code = 5;)/$1\n  uint32 extra = 6;/s' "add a field"
run "$repo"
[ "$code" = 0 ] && grep -q "compatible with HEAD~1" <<<"$out" || fail "adding a field: exit $code: $out"
ok "adding a field is compatible"

reset_to_good
edit 's/(message GetRequest \{[^}]*?string key = )1;/${1}9;/s' "renumber GetRequest.key"
renumbered=$(g rev-parse HEAD)
run "$repo"
[ "$code" != 0 ] && grep -q 'field "1" with name "key" on message "GetRequest" was deleted' <<<"$out" ||
  fail "renumbering GetRequest.key: exit $code: $out"
ok "renumbering a field fails buf breaking"

reset_to_good
edit 's/(message GetResponse \{[^}]*?bool )found = 1;/${1}hit = 1;/s' "rename GetResponse.found"
run "$repo"
[ "$code" != 0 ] && grep -q 'Field "1" on message "GetResponse" changed name from "found" to "hit"' <<<"$out" || fail "renaming GetResponse.found: exit $code: $out"
ok "renaming a field (same number) fails buf breaking"

reset_to_good
edit 's/\n  rpc List\(ListRequest\) returns \(ListResponse\);//' "remove List"
run "$repo"
[ "$code" != 0 ] && grep -q 'RPC "List" on service "Cache" was deleted' <<<"$out" || fail "removing an RPC: exit $code: $out"
ok "removing an RPC fails buf breaking"

reset_to_good
edit 's/$/\nmessage bad_name {}\n/s' "a message named against the style"
run "$repo"
[ "$code" != 0 ] && grep -q 'bad_name' <<<"$out" && grep -q 'PascalCase' <<<"$out" ||
  fail "a lint error: exit $code: $out"
ok "a lint error fails buf lint"

reset_to_good
edit 's/$/\n\/\/ buf:lint:ignore MESSAGE_PASCAL_CASE\nmessage bad_name {}\n/s' "a lint error with an ignore comment"
run "$repo"
[ "$code" != 0 ] && grep -q 'bad_name' <<<"$out" || fail "a buf:lint:ignore comment: exit $code: $out"
ok "exceptions live only in buf.yaml: a buf:lint:ignore comment does not silence a rule"

# Shallow clones: the check deepens one from origin and sees the break.
g reset -q --hard "$renumbered"
git clone -q --depth 1 "file://$repo" "$tmp/shallow"
[ "$(git -C "$tmp/shallow" rev-parse --is-shallow-repository)" = true ] || fail "the clone is not shallow"
run "$tmp/shallow"
[ "$code" != 0 ] && grep -q "fetching one more commit" <<<"$out" && grep -q 'field "1" with name "key" on message "GetRequest" was deleted' <<<"$out" ||
  fail "shallow clone: exit $code: $out"
ok "a shallow clone fetches the previous commit and still fails on the break"

# A shallow clone that cannot fetch fails rather than skip the check.
git clone -q --depth 1 "file://$repo" "$tmp/orphan"
git -C "$tmp/orphan" remote remove origin
run "$tmp/orphan"
[ "$code" != 0 ] && grep -q "cannot see the base commit" <<<"$out" || fail "shallow clone, no origin: exit $code: $out"
ok "a shallow clone that cannot fetch history fails instead of skipping"

echo "$pass passed, 0 failed"

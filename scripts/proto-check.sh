#!/usr/bin/env bash
# Checks the API contract in proto/ with the pinned buf (tools/buf, installed
# by scripts/setup.sh):
#   1. buf lint: the rules in proto/buf.yaml (STANDARD, with the exceptions
#      listed and explained there);
#   2. buf breaking: proto/ as it is now (the working tree) against proto/
#      of the base commit, HEAD~1 by default, with the FILE rules: a
#      renumbered, renamed, retyped or removed field, message, RPC or option
#      fails.
#
#   scripts/proto-check.sh                  # against HEAD~1
#   PROTO_BASE_REF=origin/main scripts/proto-check.sh
#
# History: in a shallow clone without the base commit it fetches one more
# commit from origin (git fetch --deepen=1) and fails if it still cannot see
# the base. Only when the repository truly has no previous commit (HEAD is
# the first one), or the base commit has no proto/ yet, is there nothing to
# compare; it says so and runs lint alone. Run from anywhere inside the
# repository to check (the self-test, tests/tools/proto-check-selftest.sh,
# runs it in temporary repositories); BUF overrides the buf binary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
buf=${BUF:-$here/../tools/buf/node_modules/.bin/buf}
if [ ! -x "$buf" ]; then
  echo "proto-check: no buf at $buf; run scripts/setup.sh (npm ci in tools/buf)" >&2
  exit 2
fi

# The repository to check is the one around the current directory.
root=$(git rev-parse --show-toplevel) || {
  echo "proto-check: $(pwd) is not inside a git repository" >&2
  exit 2
}
cd "$root"
base=${PROTO_BASE_REF:-HEAD~1}

echo "== buf lint proto ($("$buf" --version))"
"$buf" lint proto

echo "== buf breaking proto against $base:proto"
has_commit() { git rev-parse --verify --quiet "$1^{commit}" >/dev/null; }
if ! has_commit "$base" && [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  echo "shallow clone without $base: fetching one more commit"
  git fetch --quiet --deepen=1 origin || true
fi
if ! has_commit "$base"; then
  if [ "$base" = HEAD~1 ] && [ "$(git rev-parse --is-shallow-repository)" = false ] &&
     [ -z "$(git rev-list --parents -n 1 HEAD | cut -s -d' ' -f2)" ]; then
    echo "HEAD is the first commit: no previous proto/ to compare against"
    exit 0
  fi
  echo "proto-check: cannot see the base commit $base (a shallow clone? fetch more history, or set PROTO_BASE_REF)" >&2
  exit 1
fi
if [ -z "$(git ls-tree -d "$base" proto)" ]; then
  echo "$base has no proto/: nothing to compare against"
  exit 0
fi

against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git archive "$base" proto | tar -x -C "$against"
"$buf" breaking proto --against "$against/proto"
echo "proto/ is compatible with $base ($(git rev-parse --short "$base"))"

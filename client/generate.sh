#!/usr/bin/env bash
# Regenerates every language's stubs from proto/ with pinned tools.
# Rust needs nothing here: build.rs generates its code on every build.
# Each language's ci.sh fails when the committed stubs differ from what its
# generator produces, so stale stubs cannot land.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
for lang in go python node; do
  echo "== $lang"
  (cd "$here/$lang" && ./generate.sh)
done

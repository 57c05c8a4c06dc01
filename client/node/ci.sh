#!/usr/bin/env bash
# CI for the Node client. Run it inside scripts/with-stack.sh, which starts
# memcached and memgate and sets MEMGATE_TARGET:
#
#   MEMGATE_BIN=/tmp/memgate-bin/memgate scripts/with-stack.sh bash client/node/ci.sh
#
# Steps: npm ci (node_modules in client/node), build with tsc, type-check the
# tests, check that the committed generated code in src/gen/ is what
# generate.sh makes now, run the tests against $MEMGATE_TARGET.
# Needs Node >= 20, npm, and protoc (scripts/setup.sh installs it).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if [ -z "${MEMGATE_TARGET:-}" ]; then
  echo "ci.sh: MEMGATE_TARGET is not set; run me inside scripts/with-stack.sh" >&2
  exit 2
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "ci.sh: Node >= 20 is required, found $(node --version)" >&2
  exit 2
fi

echo "== npm ci (node $(node --version), npm $(npm --version))"
npm ci --no-audit --no-fund

echo "== build"
npm run --silent build
npm run --silent typecheck:test

echo "== generated code is up to date"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./generate.sh "$tmp/gen"
if ! diff -r src/gen "$tmp/gen"; then
  echo "ci.sh: src/gen/ differs from what generate.sh makes; run client/node/generate.sh and commit the result" >&2
  exit 1
fi

echo "== tests against $MEMGATE_TARGET"
node --test test/*.test.js

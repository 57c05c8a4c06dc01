#!/usr/bin/env bash
# CI for the Go client. Run it against a live server:
#
#   MEMGATE_BIN=/path/to/memgate scripts/with-stack.sh bash client/go/ci.sh
#
# 1. installs the pinned protoc-gen-go / protoc-gen-go-grpc (tools.env) and
#    checks that the committed stubs in gen/ are what they generate;
# 2. checks formatting and that go.mod/go.sum are tidy; runs go vet;
# 3. runs go test ./... against $MEMGATE_TARGET.
# Exits non-zero on the first failure.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if [ -z "${MEMGATE_TARGET:-}" ]; then
  echo "ci.sh: MEMGATE_TARGET is not set; run me inside scripts/with-stack.sh" >&2
  exit 1
fi

echo "== generated code is up to date"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
./generate.sh "$tmp"
if ! diff -r "$tmp/memgate" gen/memgate; then
  echo "ci.sh: gen/ is stale: run client/go/generate.sh and commit the result" >&2
  exit 1
fi

echo "== gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "ci.sh: not gofmt-ed:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go.mod / go.sum tidy"
go mod tidy -diff

echo "== go vet"
go vet ./...

echo "== go test (MEMGATE_TARGET=$MEMGATE_TARGET)"
go test -count=1 ./...

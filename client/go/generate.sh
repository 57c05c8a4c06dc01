#!/usr/bin/env bash
# Regenerates the Go stubs for proto/memgate/v1/cache.proto into
# gen/memgate/v1/ (or into OUT_DIR/memgate/v1/ when OUT_DIR is given).
#
#   client/go/generate.sh            # rewrite the committed stubs
#   client/go/generate.sh /tmp/out   # generate elsewhere (ci.sh diffs that)
#
# The plugins are installed at the versions pinned in tools.env into a
# versioned cache directory, so the output depends only on those versions
# and on protoc (Debian's /usr/bin/protoc, checked below). Running it twice
# gives byte-identical files.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=tools.env
. "$here/tools.env"

out=${1:-$here/gen}
protoc=${PROTOC:-/usr/bin/protoc}

have=$("$protoc" --version)
if [ "$have" != "$PROTOC_VERSION" ]; then
  echo "generate.sh: $protoc is '$have', expected '$PROTOC_VERSION' (apt-get install protobuf-compiler)" >&2
  exit 1
fi

bin=${MEMGATE_GO_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/memgate-go-tools/protoc-gen-go-$PROTOC_GEN_GO_VERSION-grpc-$PROTOC_GEN_GO_GRPC_VERSION}
if [ ! -x "$bin/protoc-gen-go" ] || [ ! -x "$bin/protoc-gen-go-grpc" ]; then
  mkdir -p "$bin"
  GOBIN=$bin go install "google.golang.org/protobuf/cmd/protoc-gen-go@$PROTOC_GEN_GO_VERSION"
  GOBIN=$bin go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$PROTOC_GEN_GO_GRPC_VERSION"
fi

mkdir -p "$out"
rm -f "$out"/memgate/v1/*.pb.go
"$protoc" \
  -I "$root/proto" \
  --plugin=protoc-gen-go="$bin/protoc-gen-go" \
  --plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
  --go_out="$out" --go_opt=paths=source_relative \
  --go-grpc_out="$out" --go-grpc_opt=paths=source_relative \
  memgate/v1/cache.proto

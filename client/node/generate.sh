#!/usr/bin/env bash
# Regenerates the TypeScript code in src/gen/ from the .proto files:
#   memgate/v1/cache.proto      from the repository's proto/ (the contract)
#   grpc/health/v1/health.proto from client/node/proto/ (the standard file)
#   google/rpc/status.proto and google/rpc/error_details.proto from
#                               client/node/proto/ (the error details the
#                               server sends; google/protobuf/{any,duration}
#                               come from protoc's own include directory)
#
# Uses Debian's protoc (/usr/bin/protoc, or $PROTOC) and the ts-proto plugin
# pinned in package.json's devDependencies (run `npm ci` first). The output
# is deterministic: running this twice gives byte-identical files.
#
#   ./generate.sh            write into src/gen/
#   ./generate.sh OUT_DIR    write into OUT_DIR instead (ci.sh uses this to
#                            check that the committed code is up to date)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo_proto=$(cd "$here/../../proto" && pwd)
out=${1:-$here/src/gen}
protoc=${PROTOC:-/usr/bin/protoc}
plugin=$here/node_modules/.bin/protoc-gen-ts_proto

command -v "$protoc" >/dev/null || { echo "generate.sh: protoc not found at $protoc (apt-get install protobuf-compiler)" >&2; exit 1; }
[ -x "$plugin" ] || { echo "generate.sh: $plugin missing; run 'npm ci' in $here first" >&2; exit 1; }

# Keep in sync with the README's "Regenerating" section.
opts=(
  outputServices=grpc-js      # @grpc/grpc-js client and service definitions
  env=node                    # bytes are Buffer
  esModuleInterop=true
  outputJsonMethods=false     # wire format only: no fromJSON/toJSON
  useExactTypes=false         # plain DeepPartial in create()/fromPartial()
  annotateFilesWithVersion=false  # no tool versions in headers: stable diffs
)
opt=$(IFS=,; echo "${opts[*]}")

rm -rf "$out"
mkdir -p "$out"
"$protoc" \
  --plugin=protoc-gen-ts_proto="$plugin" \
  --ts_proto_out="$out" \
  --ts_proto_opt="$opt" \
  -I "$repo_proto" -I "$here/proto" \
  memgate/v1/cache.proto grpc/health/v1/health.proto \
  google/rpc/status.proto google/rpc/error_details.proto

#!/usr/bin/env bash
# Regenerates the Python stubs from the repository's proto/ (the contract):
#
#   src/memgate/v1/cache_pb2.py       messages
#   src/memgate/v1/cache_pb2.pyi      their type hints
#   src/memgate/v1/cache_pb2_grpc.py  the Cache stub
#
# protoc comes from grpcio-tools, pinned in requirements-dev.txt and installed
# into client/python/.venv (created if missing; $PYTHON picks the Python that
# creates it, default python3). The output depends only on that pin: the same
# protoc always writes the same bytes, so running this twice gives identical
# files, on any machine. Works from any directory.
#
#   ./generate.sh            write into src/ (the committed stubs)
#   ./generate.sh OUT_DIR    write into OUT_DIR/memgate/v1/ instead (ci.sh
#                            uses this to check the committed stubs are current)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
proto=$(cd "$here/../../proto" && pwd)
out=${1:-$here/src}
venv=$here/.venv
pin=$(grep -E '^grpcio-tools==' "$here/requirements-dev.txt")
want=${pin#grpcio-tools==}

tools_version() {
  "$venv/bin/python" -c 'from importlib.metadata import version; print(version("grpcio-tools"))' 2>/dev/null || true
}

[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
if [ "$(tools_version)" != "$want" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -c "$here/requirements-dev.txt" "$pin"
fi
[ "$(tools_version)" = "$want" ] || { echo "generate.sh: could not install $pin into $venv" >&2; exit 1; }

mkdir -p "$out"
# -I proto with the path memgate/v1/cache.proto makes the modules
# memgate.v1.cache_pb2 and memgate.v1.cache_pb2_grpc, and makes the grpc
# module import its messages as `from memgate.v1 import cache_pb2`.
"$venv/bin/python" -m grpc_tools.protoc \
  -I "$proto" \
  --python_out="$out" \
  --pyi_out="$out" \
  --grpc_python_out="$out" \
  memgate/v1/cache.proto

# The package layout depends on that import; fail loudly if a new
# grpcio-tools ever writes it differently.
grep -q '^from memgate\.v1 import cache_pb2 as ' "$out/memgate/v1/cache_pb2_grpc.py" || {
  echo "generate.sh: $out/memgate/v1/cache_pb2_grpc.py does not import 'from memgate.v1 import cache_pb2'" >&2
  exit 1
}

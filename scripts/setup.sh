#!/usr/bin/env bash
# Installs what a fresh machine lacks for building and testing memgate:
# memcached (the real backend the tests start), twemproxy (a real server
# that speaks only the text protocol), protoc (for the Go and
# Node stub generators), the pinned Go tools users debug and probe
# with, and the pinned buf (npm @bufbuild/buf, in tools/buf) that
# scripts/proto-check.sh lints proto/ with. Idempotent: it skips what is
# already there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

GRPCURL_VERSION=v1.9.3
HEALTH_PROBE_VERSION=v0.4.61

need=()
command -v memcached >/dev/null || need+=(memcached)
command -v protoc >/dev/null || need+=(protobuf-compiler)
# twemproxy: a real server without the meta protocol, for the text fallback.
[ -x /usr/sbin/nutcracker ] || command -v nutcracker >/dev/null || need+=(nutcracker)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

gobin=$(go env GOPATH)/bin
installed_version() { go version -m "$gobin/$1" 2>/dev/null | awk '$1=="mod"{print $3; exit}'; }
[ "$(installed_version grpcurl)" = "$GRPCURL_VERSION" ] ||
  go install "github.com/fullstorydev/grpcurl/cmd/grpcurl@$GRPCURL_VERSION"
[ "$(installed_version grpc-health-probe)" = "$HEALTH_PROBE_VERSION" ] ||
  go install "github.com/grpc-ecosystem/grpc-health-probe@$HEALTH_PROBE_VERSION"

# buf: the version is pinned exactly in tools/buf/package.json and, with
# every platform's binary package and its integrity hash, in
# tools/buf/package-lock.json. The binary comes inside the npm package
# (@bufbuild/buf-<os>-<arch>), so no install script needs to run.
buf_version=$(node -p 'require(process.argv[1]).devDependencies["@bufbuild/buf"]' "$root/tools/buf/package.json")
[ "$("$root/tools/buf/node_modules/.bin/buf" --version 2>/dev/null)" = "$buf_version" ] ||
  (cd "$root/tools/buf" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)

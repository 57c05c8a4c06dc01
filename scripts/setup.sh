#!/usr/bin/env bash
# Installs what a fresh machine lacks for building and testing memgate:
# memcached (the real backend the tests start), twemproxy (a real server
# that speaks only the text protocol), protoc (for the Go and
# Node stub generators), and the pinned Go tools users debug and probe
# with. Idempotent: it skips what is already there.
set -euo pipefail

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

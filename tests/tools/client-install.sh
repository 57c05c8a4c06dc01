#!/usr/bin/env bash
# Installs each client from this checkout into a fresh, empty consumer
# project in a temporary directory, the way its README's "Install" section
# says, then imports it and makes real calls against the live memgate: Set
# a random value, Get it back and compare, Get a key never set (a miss).
# Run inside scripts/with-stack.sh:
#
#   scripts/with-stack.sh tests/tools/client-install.sh            # all four
#   scripts/with-stack.sh tests/tools/client-install.sh node go    # some
#
# Languages: rust (a crate outside the workspace with a path dependency),
# go (a module with a replace directive), python (pip install into a new
# venv), node (npm pack, then npm install of the tarball). Only the package
# registries are reached, through the usual caches (~/.npm, pip's cache,
# GOMODCACHE, ~/.cargo); the Rust consumer builds into $CARGO_TARGET_DIR
# (default: the workspace's target/) so it reuses what is compiled there.
set -euo pipefail
: "${MEMGATE_TARGET:?run me inside scripts/with-stack.sh}"
root=$(cd "$(dirname "$0")/../.." && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }
pass=0
ok() { pass=$((pass + 1)); echo "ok - $*"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"; rm -f "$root"/client/node/memgate-client-*.tgz' EXIT
# Every consumer program reads these, sets KEY to VALUE, reads it back and
# exits non-zero unless it got VALUE; then reads MISS, which must be absent.
export INSTALL_KEY="install-$$-$RANDOM" INSTALL_VALUE="value-$RANDOM-$RANDOM"
export INSTALL_MISS="install-miss-$$-$RANDOM"

# expect_output LANG OUT: the consumer printed what it read.
expect_output() {
  [ "$2" = "got $INSTALL_VALUE; miss ok" ] || fail "$1 consumer printed: $2"
}

install_rust() {
  echo "== rust: a crate outside the workspace, path dependency on client/"
  local app=$tmp/rust-app
  cargo new -q --vcs none --bin "$app"
  # The top-level README's [dependencies] lines (the Rust client has no
  # README of its own), with the checkout's path.
  cat >>"$app/Cargo.toml" <<EOF
memgate-client = { path = "$root/client" }
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
EOF
  cat >"$app/src/main.rs" <<'EOF'
use std::env::var;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = format!("http://{}", var("MEMGATE_TARGET")?);
    let client = memgate_client::Client::connect(target).await?;
    let (key, value) = (var("INSTALL_KEY")?, var("INSTALL_VALUE")?);
    client.set(&key, value.clone(), None).await?;
    let got = client.get(&key).await?.ok_or("get after set: a miss")?;
    let got = String::from_utf8(got.to_vec())?;
    if got != value {
        return Err(format!("get after set: {got:?}, want {value:?}").into());
    }
    if client.get(&var("INSTALL_MISS")?).await?.is_some() {
        return Err("a key never set was found".into());
    }
    println!("got {got}; miss ok");
    Ok(())
}
EOF
  local out
  out=$(cd "$app" && CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target} cargo run -q)
  expect_output rust "$out"
  ok "rust: path dependency from a crate outside the workspace; Set, Get, miss"
}

install_go() {
  echo "== go: a new module, replace directive to client/go"
  local app=$tmp/go-app
  mkdir "$app"
  cd "$app"
  go mod init example.com/consumer
  # The README's commands, with the checkout's path.
  go mod edit -require=github.com/memgate/memgate/client/go@v0.0.0 \
    -replace=github.com/memgate/memgate/client/go="$root/client/go"
  cat >main.go <<'EOF'
package main

import (
	"context"
	"fmt"
	"os"

	memgate "github.com/memgate/memgate/client/go"
)

func main() {
	ctx := context.Background()
	c, err := memgate.Dial(ctx, os.Getenv("MEMGATE_TARGET"))
	if err != nil {
		panic(err)
	}
	defer c.Close()
	key, value := os.Getenv("INSTALL_KEY"), os.Getenv("INSTALL_VALUE")
	if err := c.Set(ctx, key, []byte(value)); err != nil {
		panic(err)
	}
	got, found, err := c.Get(ctx, key)
	if err != nil || !found || string(got) != value {
		panic(fmt.Sprintf("get after set: %q found=%v err=%v, want %q", got, found, err, value))
	}
	if _, found, err := c.Get(ctx, os.Getenv("INSTALL_MISS")); err != nil || found {
		panic(fmt.Sprintf("a key never set: found=%v err=%v", found, err))
	}
	fmt.Printf("got %s; miss ok\n", got)
}
EOF
  go mod tidy
  local out
  out=$(go run .)
  cd "$root"
  expect_output go "$out"
  ok "go: replace directive from a new module; Set, Get, miss"
}

install_python() {
  echo "== python: pip install ./client/python into a new venv"
  local app=$tmp/python-app
  mkdir "$app"
  "${PYTHON:-python3}" -m venv "$app/.venv"
  # The README's command, from the checkout's root, with the venv's pip.
  (cd "$root" && "$app/.venv/bin/python" -m pip install -q --disable-pip-version-check ./client/python)
  cat >"$app/main.py" <<'EOF'
import os
import pathlib
import sys

import memgate

# The installed package, not the checkout's source tree.
where = pathlib.Path(memgate.__file__).resolve()
if pathlib.Path(sys.prefix).resolve() not in where.parents:
    sys.exit(f"memgate imported from {where}, not from the venv")
for typed in ("py.typed", "v1/cache_pb2.pyi"):
    if not (where.parent / typed).is_file():
        sys.exit(f"the installed package lacks {typed}")

key, value = os.environ["INSTALL_KEY"], os.environ["INSTALL_VALUE"].encode()
with memgate.Client(os.environ["MEMGATE_TARGET"]) as cache:
    cache.set(key, value)
    got = cache.get(key)
    if got != value:
        sys.exit(f"get after set: {got!r}, want {value!r}")
    if cache.get(os.environ["INSTALL_MISS"]) is not None:
        sys.exit("a key never set was found")
print(f"got {got.decode()}; miss ok")
EOF
  local out
  out=$(cd "$app" && .venv/bin/python main.py)
  expect_output python "$out"
  ok "python: pip install into a new venv, typed package; Set, Get, miss"
}

install_node() {
  echo "== node: npm pack client/node, npm install the tarball in a new project"
  local app=$tmp/node-app
  # The README's commands: build tools from the lock file, then pack
  # (prepack builds dist/). dist/ is removed first so that the commands,
  # not an earlier build, must make it.
  rm -rf "$root/client/node/dist"
  (cd "$root/client/node" && npm ci --no-audit --no-fund --loglevel=error && npm pack --loglevel=error >/dev/null)
  local tgz=("$root"/client/node/memgate-client-*.tgz)
  [ ${#tgz[@]} = 1 ] && [ -f "${tgz[0]}" ] || fail "npm pack made: ${tgz[*]}"
  mkdir "$app"
  cd "$app"
  npm init -y >/dev/null
  npm_config_audit=false npm_config_fund=false npm install --loglevel=error "${tgz[0]}"
  # A real copy with its own dependencies, not a link into the checkout.
  [ ! -L node_modules/memgate-client ] || fail "node_modules/memgate-client is a link"
  [ -d node_modules/@grpc/grpc-js ] || fail "@grpc/grpc-js was not installed"
  cat >main.js <<'EOF'
const { MemgateClient } = require("memgate-client");

(async () => {
  const cache = new MemgateClient(process.env.MEMGATE_TARGET);
  try {
    const key = process.env.INSTALL_KEY, value = process.env.INSTALL_VALUE;
    await cache.set(key, value);
    const got = await cache.get(key);
    if (got === undefined || got.toString("utf8") !== value) {
      throw new Error(`get after set: ${got}, want ${value}`);
    }
    if ((await cache.get(process.env.INSTALL_MISS)) !== undefined) {
      throw new Error("a key never set was found");
    }
    console.log(`got ${got.toString("utf8")}; miss ok`);
  } finally {
    cache.close();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
EOF
  # ESM and TypeScript consumers: the named export resolves, and the
  # declarations the README promises are in the package.
  cat >esm.mjs <<'EOF'
import { MemgateClient } from "memgate-client";
if (typeof MemgateClient !== "function") throw new Error("no MemgateClient export");
EOF
  node esm.mjs
  [ -f node_modules/memgate-client/dist/index.d.ts ] || fail "no dist/index.d.ts in the installed package"
  local out
  out=$(node main.js)
  cd "$root"
  expect_output node "$out"
  ok "node: npm install of the packed tarball, CommonJS and ESM; Set, Get, miss"
}

langs=("$@")
[ ${#langs[@]} -gt 0 ] || langs=(rust go python node)
for lang in "${langs[@]}"; do
  case $lang in
    rust | go | python | node) "install_$lang" ;;
    *) fail "unknown language $lang (rust, go, python, node)" ;;
  esac
done
echo "$pass passed, 0 failed"

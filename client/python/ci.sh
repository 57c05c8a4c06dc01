#!/usr/bin/env bash
# CI for the Python client. Run it against a live server, from anywhere:
#
#   scripts/with-stack.sh bash client/python/ci.sh
#
# 1. creates client/python/.venv ($PYTHON, default python3, makes it) and
#    installs the pinned tools of requirements-dev.txt into it;
# 2. checks that the committed stubs in src/memgate/v1/ are what
#    generate.sh makes from proto/ today;
# 3. installs the package as a user would: pip install ./client/python;
# 4. type-checks the client and the tests (mypy, strict);
# 5. runs the tests against $MEMGATE_TARGET.
# It needs only PyPI. Exits non-zero if any step fails; the checks of 2, 4
# and 5 all run either way, so one run reports every problem.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
venv=$here/.venv
py=$venv/bin/python

if [ -z "${MEMGATE_TARGET:-}" ]; then
  echo "ci.sh: MEMGATE_TARGET is not set; run it as: scripts/with-stack.sh bash client/python/ci.sh" >&2
  exit 2
fi

echo "== python client: tools (pinned, into $venv)"
[ -x "$py" ] || "${PYTHON:-python3}" -m venv "$venv"
"$py" -m pip install -q --disable-pip-version-check -r "$here/requirements-dev.txt"
"$py" --version

status=0

echo "== python client: committed stubs match proto/"
fresh=$(mktemp -d)
trap 'rm -rf "$fresh"' EXIT
"$here/generate.sh" "$fresh"
for f in cache_pb2.py cache_pb2.pyi cache_pb2_grpc.py; do
  if ! diff -u "$here/src/memgate/v1/$f" "$fresh/memgate/v1/$f"; then
    echo "ci.sh: src/memgate/v1/$f is stale: run client/python/generate.sh and commit the result" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "stubs are up to date"

echo "== python client: pip install ./client/python"
cd "$repo"
"$py" -m pip install -q --disable-pip-version-check ./client/python

echo "== python client: type check (mypy --strict, config in pyproject.toml)"
(cd "$here" && "$py" -m mypy) || status=1

echo "== python client: tests against $MEMGATE_TARGET"
# From the repository root, so the tests import the installed package,
# not the source tree.
"$py" -m pytest client/python/tests || status=1

exit "$status"

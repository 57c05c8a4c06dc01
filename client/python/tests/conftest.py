"""Fixtures for testing the client against a live memgate.

The tests need a real server: run them under scripts/with-stack.sh, which
starts memcached and memgate and sets MEMGATE_TARGET. The server is shared,
so every test writes under its own uuid key prefix.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable, Iterator, List, Mapping, Optional, TypeVar

import pytest

import memgate

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[3]
RUN_HINT = (
    "run the tests under scripts/with-stack.sh, e.g. from the repository root:\n"
    "  MEMGATE_BIN=/path/to/memgate scripts/with-stack.sh python -m pytest client/python/tests"
)


def pytest_sessionstart(session: pytest.Session) -> None:
    if not os.environ.get("MEMGATE_TARGET"):
        raise pytest.UsageError(f"MEMGATE_TARGET is not set; {RUN_HINT}")


def wait_for(probe: Callable[[], T], what: str, timeout: float = 10.0, interval: float = 0.05) -> T:
    """Polls ``probe`` until it returns something truthy; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def target() -> str:
    """The live server; with-stack.sh waits until it reports SERVING."""
    return os.environ["MEMGATE_TARGET"]


@pytest.fixture
def client(target: str) -> Iterator[memgate.Client]:
    with memgate.Client(target) as client:
        yield client


@pytest.fixture
def prefix() -> str:
    """A key prefix no other test (or run) uses."""
    return f"pytest:{uuid.uuid4().hex}:"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def start_memgate(target: str) -> Iterator[Callable[..., str]]:
    """Starts extra memgate servers with chosen flags; returns their targets.

    For behaviour the shared server cannot show: a dead shard (per-key
    errors), a --default-ttl other than 0, bearer tokens and TLS. Uses the
    binary with-stack.sh runs ($MEMGATE_BIN, default target/debug/memgate)
    and its memcached processes ($MEMGATE_MEMCACHED).
    """
    binary = Path(os.environ.get("MEMGATE_BIN") or REPO / "target" / "debug" / "memgate")
    if not binary.is_file():
        pytest.fail(f"memgate binary {binary} not found (set MEMGATE_BIN); {RUN_HINT}")
    procs: List[subprocess.Popen[bytes]] = []
    logs: List[IO[bytes]] = []

    def start(
        *args: str, expect: str = "SERVING", client_options: Optional[Mapping[str, Any]] = None
    ) -> str:
        """Starts ``memgate --listen ADDR *args``; returns ADDR once its
        health reports ``expect`` to a ``memgate.Client(ADDR,
        **client_options)`` (TLS arguments for a TLS server)."""
        listen = f"127.0.0.1:{free_port()}"
        log = tempfile.TemporaryFile()
        logs.append(log)
        proc = subprocess.Popen(
            [str(binary), "--listen", listen, *args],
            env={**os.environ, "MEMGATE_LOG": "warn"},
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        procs.append(proc)
        with memgate.Client(listen, timeout=1.0, **(client_options or {})) as client:

            def ready() -> bool:
                if proc.poll() is not None:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    pytest.fail(f"memgate {' '.join(args)} exited: {output}")
                try:
                    return client.health() == expect
                except memgate.MemgateError:
                    return False

            wait_for(ready, f"memgate {' '.join(args)} to report {expect}")
        return listen

    yield start
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for log in logs:
        log.close()


@pytest.fixture(scope="session")
def memcached() -> List[str]:
    """The addresses of with-stack.sh's memcached processes."""
    addrs = [a for a in os.environ.get("MEMGATE_MEMCACHED", "").split(",") if a]
    if not addrs:
        pytest.fail(f"MEMGATE_MEMCACHED is not set; {RUN_HINT}")
    return addrs

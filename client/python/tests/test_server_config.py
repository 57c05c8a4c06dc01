"""Behaviour the shared server cannot show, on extra memgate servers started
for these tests: a shard that is down (per-key errors in batches and
streams), no shard up (NOT_SERVING) and a --default-ttl other than 0
(ttl=None must mean "the server's default", not 0)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Callable, List, Tuple

import grpc
import pytest
from conftest import free_port, wait_for

import memgate
import memgate.aio


@pytest.fixture(scope="module")
def half_down(start_memgate: Callable[..., str], memcached: List[str]) -> str:
    """A memgate whose second shard is a port nothing listens on."""
    dead = f"127.0.0.1:{free_port()}"
    return start_memgate(
        "--memcached", f"{memcached[0]},{dead}", "--connect-timeout", "200ms", "--timeout", "500ms"
    )


def split_by_shard(client: memgate.Client, n: int = 40) -> Tuple[List[str], List[str]]:
    """Keys on the live shard and keys on the dead one, found by writing each."""
    prefix = f"pytest:{uuid.uuid4().hex}:"
    live, dead = [], []
    for i in range(n):
        key = f"{prefix}{i}"
        try:
            client.set(key, key.encode())
            live.append(key)
        except memgate.MemgateError as e:
            assert e.code == grpc.StatusCode.UNAVAILABLE, e
            dead.append(key)
    assert live and dead, "40 keys should land on both shards"
    return live, dead


def test_health_is_serving_while_one_shard_answers(half_down: str) -> None:
    with memgate.Client(half_down) as c:
        assert c.health() == "SERVING"


def test_single_key_on_a_dead_shard_is_unavailable(half_down: str) -> None:
    with memgate.Client(half_down) as c:
        live, dead = split_by_shard(c)
        with pytest.raises(memgate.MemgateError) as excinfo:
            c.get(dead[0])
        assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE
        assert c.get(live[0]) == live[0].encode()


def test_batches_raise_with_per_key_errors(half_down: str) -> None:
    with memgate.Client(half_down) as c:
        live, dead = split_by_shard(c)
        keys = live + dead

        with pytest.raises(memgate.MemgateError) as excinfo:
            c.get_many(keys)
        err = excinfo.value
        # Every failed key has the same code, yet the call's code stays
        # UNKNOWN: the live keys were read.
        assert err.code == grpc.StatusCode.UNKNOWN
        assert sorted(err.key_errors) == sorted(dead)
        assert all("unavailable" in m for m in err.key_errors.values()), err.key_errors
        assert err.key_error_codes == {k: grpc.StatusCode.UNAVAILABLE for k in dead}
        assert f"{len(dead)} key(s) could not be read" in err.details

        with pytest.raises(memgate.MemgateError) as excinfo:
            c.set_many({k: b"new" for k in keys})
        assert sorted(excinfo.value.key_errors) == sorted(dead)
        assert excinfo.value.key_error_codes == {k: grpc.StatusCode.UNAVAILABLE for k in dead}
        assert f"{len(dead)} of {len(keys)} item(s) were not stored" in excinfo.value.details
        assert all(c.get(k) == b"new" for k in live)  # the other items were stored

        with pytest.raises(memgate.MemgateError) as excinfo:
            c.delete_many(keys)
        assert sorted(excinfo.value.key_errors) == sorted(dead)
        assert excinfo.value.key_error_codes == {k: grpc.StatusCode.UNAVAILABLE for k in dead}
        assert all(c.get(k) is None for k in live)  # the other keys were deleted


def test_streams_raise_with_per_key_errors(half_down: str) -> None:
    with memgate.Client(half_down) as c:
        live, dead = split_by_shard(c)

        results = c.get_stream([live[0], dead[0], live[1]])
        assert next(results) == (live[0], live[0].encode())
        with pytest.raises(memgate.MemgateError) as excinfo:
            next(results)
        assert excinfo.value.code == grpc.StatusCode.UNKNOWN
        assert excinfo.value.key_error_codes == {dead[0]: grpc.StatusCode.UNAVAILABLE}

        # An invalid key in a stream: the stream goes on, the key reports
        # INVALID_ARGUMENT.
        results = c.get_stream([live[0], "bad key", live[1]])
        assert next(results) == (live[0], live[0].encode())
        with pytest.raises(memgate.MemgateError) as excinfo:
            next(results)
        assert excinfo.value.key_error_codes == {"bad key": grpc.StatusCode.INVALID_ARGUMENT}

        # Both kinds in one stream: each key keeps its own code.
        with pytest.raises(memgate.MemgateError) as excinfo:
            c.set_stream([(k, b"s") for k in live + dead] + [("bad key", b"s")])
        err = excinfo.value
        assert err.code == grpc.StatusCode.UNKNOWN
        assert sorted(err.key_errors) == sorted(dead + ["bad key"])
        assert err.key_error_codes == {
            **{k: grpc.StatusCode.UNAVAILABLE for k in dead},
            "bad key": grpc.StatusCode.INVALID_ARGUMENT,
        }
        assert c.get(live[0]) == b"s"

        with pytest.raises(memgate.MemgateError) as excinfo:
            c.delete_stream(live + dead + ["bad key"])
        assert excinfo.value.key_error_codes == {
            **{k: grpc.StatusCode.UNAVAILABLE for k in dead},
            "bad key": grpc.StatusCode.INVALID_ARGUMENT,
        }


def test_aio_batches_raise_with_per_key_errors(half_down: str) -> None:
    with memgate.Client(half_down) as c:
        live, dead = split_by_shard(c)

    async def main() -> None:
        async with memgate.aio.Client(half_down) as c:
            with pytest.raises(memgate.MemgateError) as excinfo:
                await c.get_many(live + dead)
            assert sorted(excinfo.value.key_errors) == sorted(dead)
            assert excinfo.value.key_error_codes == {k: grpc.StatusCode.UNAVAILABLE for k in dead}
            with pytest.raises(memgate.MemgateError) as excinfo:
                await c.set_many({k: b"v" for k in live + dead})
            assert sorted(excinfo.value.key_errors) == sorted(dead)
            assert excinfo.value.key_error_codes == {k: grpc.StatusCode.UNAVAILABLE for k in dead}
            results = c.get_stream([dead[0], "bad key"])
            with pytest.raises(memgate.MemgateError) as excinfo:
                await results.__anext__()
            assert excinfo.value.key_error_codes == {dead[0]: grpc.StatusCode.UNAVAILABLE}
            await results.aclose()
            with pytest.raises(memgate.MemgateError) as excinfo:
                await c.get(dead[0])
            assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(main())


def test_ttl_none_means_the_servers_default(
    start_memgate: Callable[..., str], memcached: List[str]
) -> None:
    target = start_memgate("--memcached", ",".join(memcached), "--default-ttl", "1")
    prefix = f"pytest:{uuid.uuid4().hex}:"
    with memgate.Client(target) as c:
        c.set(prefix + "default", b"v")  # ttl=None: --default-ttl 1 applies
        c.set(prefix + "forever", b"v", ttl=0)  # 0 is sent: never expires
        c.set_many({prefix + "batch": b"v"})
        c.set_stream([(prefix + "stream", b"v")])
        wait_for(
            lambda: c.get_many([prefix + k for k in ("default", "batch", "stream")]) == {},
            "items set without a ttl to expire under --default-ttl 1",
            timeout=5.0,
        )
        assert c.get(prefix + "forever") == b"v"
        c.delete(prefix + "forever")


def test_health_is_not_serving_when_no_shard_answers(start_memgate: Callable[..., str]) -> None:
    target = start_memgate(
        "--memcached",
        f"127.0.0.1:{free_port()}",
        "--connect-timeout",
        "200ms",
        expect="NOT_SERVING",
    )
    with memgate.Client(target) as c:
        assert c.health() == "NOT_SERVING"
        assert c.health("memgate.v1.Cache") == "NOT_SERVING"
        with pytest.raises(memgate.MemgateError) as excinfo:
            c.get("k")
        assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE

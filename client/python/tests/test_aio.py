"""The asyncio client against the live server.

Each test runs its own event loop with asyncio.run (no pytest plugin), and
creates its client inside it, as grpc.aio requires.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import AsyncIterator, Awaitable, Callable, List, TypeVar

import grpc
import pytest
from conftest import free_port

import memgate
import memgate.aio

T = TypeVar("T")


def run(target: str, test: Callable[[memgate.aio.Client], Awaitable[T]]) -> T:
    async def main() -> T:
        async with memgate.aio.Client(target) as client:
            return await test(client)

    return asyncio.run(main())


async def eventually(probe: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def agen(*items: T) -> AsyncIterator[T]:
    for item in items:
        await asyncio.sleep(0)
        yield item


def test_single_keys(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        assert await c.get(prefix + "k") is None
        await c.set(prefix + "k", b"\x00\r\nEND\r\n")
        assert await c.get(prefix + "k") == b"\x00\r\nEND\r\n"
        await c.set(prefix + "s", "grüße")
        assert await c.get(prefix + "s") == "grüße".encode()
        await c.set(prefix + "empty", b"")
        assert await c.get(prefix + "empty") == b""
        assert await c.delete(prefix + "k") is True
        assert await c.delete(prefix + "k") is False

    run(target, test)


def test_invalid_key_is_invalid_argument(target: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        for call in (c.get("bad key"), c.set("", b"v"), c.get_many(["ok", "a\r\nb"])):
            with pytest.raises(memgate.MemgateError) as excinfo:
                await call
            assert excinfo.value.code == grpc.StatusCode.INVALID_ARGUMENT
            assert excinfo.value.reason == "KEY_INVALID"
        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.get_many(["ok", "a\r\nb"])
        assert excinfo.value.metadata["field"] == "keys[1]"
        assert list(excinfo.value.field_violations) == ["keys[1]"]

    run(target, test)


def test_ttl_expires(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        # See the sync test: a ttl=1 item may legitimately expire at once.
        for _ in range(5):
            await c.set(prefix + "ttl", b"v", ttl=1)
            if await c.get(prefix + "ttl") == b"v":
                break
        else:
            pytest.fail("a ttl=1 item was never readable right after it was set")

        async def gone() -> bool:
            return await c.get(prefix + "ttl") is None

        await eventually(gone, "the ttl=1 item to expire")

    run(target, test)


def test_batches_and_list(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        assert await c.set_many({prefix + "a": b"1", prefix + "b": "2"}, ttl=60) == 2
        assert await c.get_many([prefix + "a", prefix + "x", prefix + "b"]) == {
            prefix + "a": b"1",
            prefix + "b": b"2",
        }
        assert await c.list(prefix) == [prefix + "a", prefix + "b"]
        assert await c.list(prefix, limit=1) == [prefix + "a"]
        assert await c.delete_many([prefix + "a", prefix + "x"]) == 1
        assert await c.list(prefix) == [prefix + "b"]

    run(target, test)


def test_streams_take_async_and_plain_iterables(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        keys = [f"{prefix}{i:04}" for i in range(600)]

        async def items() -> AsyncIterator[memgate.SetItem]:
            for i, k in enumerate(keys):
                if i % 100 == 0:
                    await asyncio.sleep(0)
                yield (k, k.encode() + b"\r\n", 60) if i % 2 else (k, k.encode() + b"\r\n")

        assert await c.set_stream(items()) == len(keys)
        got = [pair async for pair in c.get_stream(agen(keys[0], prefix + "none", keys[-1]))]
        assert got == [
            (keys[0], keys[0].encode() + b"\r\n"),
            (prefix + "none", None),
            (keys[-1], keys[-1].encode() + b"\r\n"),
        ]
        got = [pair async for pair in c.get_stream(keys)]  # a plain list
        assert got == [(k, k.encode() + b"\r\n") for k in keys]
        assert await c.delete_stream(agen(*keys[:300])) == 300
        assert await c.delete_stream(keys) == 300

    run(target, test)


def test_long_streams_of_tiny_keys_use_one_stream(target: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        n = 20_000
        p = f"t:{uuid.uuid4().hex[:8]}:"
        keys = [f"{p}{i}" for i in range(n)]
        assert await c.set_stream((k, b"v") for k in keys) == n
        all_sent = asyncio.Event()

        async def key_source() -> AsyncIterator[str]:
            for k in keys:
                yield k
            all_sent.set()

        # Read one result, then nothing until every key has been sent.
        results = c.get_stream(key_source())
        assert await results.__anext__() == (keys[0], b"v")
        await asyncio.wait_for(all_sent.wait(), 30)
        rest = [pair async for pair in results]
        assert rest == [(k, b"v") for k in keys[1:]]
        assert await c.delete_stream(agen(*keys)) == n
        assert await c.get(keys[0]) is None

    run(target, test)


def test_stream_per_key_errors(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.set_stream(agen((prefix + "a", b"1"), ("bad key", b"2")))
        assert excinfo.value.code == grpc.StatusCode.UNKNOWN
        assert list(excinfo.value.key_errors) == ["bad key"]
        assert await c.get(prefix + "a") == b"1"

        results = c.get_stream(agen(prefix + "a", "bad key"))
        assert await results.__anext__() == (prefix + "a", b"1")
        with pytest.raises(memgate.MemgateError) as excinfo:
            await results.__anext__()
        assert list(excinfo.value.key_errors) == ["bad key"]
        assert excinfo.value.key_error_codes == {"bad key": grpc.StatusCode.INVALID_ARGUMENT}

        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.delete_stream(["bad key"])
        assert list(excinfo.value.key_errors) == ["bad key"]

    run(target, test)


def test_get_stream_can_stop_early(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        async def endless() -> AsyncIterator[str]:
            i = 0
            while True:
                yield f"{prefix}{i}"
                i += 1
                await asyncio.sleep(0)

        results = c.get_stream(endless())
        assert await results.__anext__() == (prefix + "0", None)
        await asyncio.wait_for(results.aclose(), 5)
        assert await c.get(prefix + "0") is None

    run(target, test)


def test_exception_in_input_iterator_reaches_the_caller(target: str, prefix: str) -> None:
    class Boom(Exception):
        pass

    async def keys() -> AsyncIterator[str]:
        yield prefix + "a"
        raise Boom("input failed")

    async def test(c: memgate.aio.Client) -> None:
        with pytest.raises(Boom):
            [pair async for pair in c.get_stream(keys())]
        with pytest.raises(Boom):
            await c.delete_stream(keys())
        with pytest.raises(TypeError):
            await c.set_stream([prefix + "not-a-tuple"])  # type: ignore[list-item]
        assert await c.get(prefix + "a") is None  # the client still works

    run(target, test)


def test_cancelling_the_caller_still_cancels(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        never = asyncio.Event()

        async def stalled() -> AsyncIterator[memgate.SetItem]:
            yield (prefix + "a", b"v")
            await never.wait()

        task = asyncio.ensure_future(c.set_stream(stalled()))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run(target, test)


def test_one_client_is_shared_by_tasks(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        async def work(i: int) -> None:
            await c.set(f"{prefix}{i}", str(i))
            assert await c.get(f"{prefix}{i}") == str(i).encode()

        await asyncio.gather(*(work(i) for i in range(200)))
        assert len(await c.list(prefix)) == 200

    run(target, test)


def test_health(target: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        assert await c.health() == "SERVING"
        assert await c.health("memgate.v1.Cache") == "SERVING"
        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.health("no.such.Service")
        assert excinfo.value.code == grpc.StatusCode.NOT_FOUND

    run(target, test)


def test_unreachable_server_is_unavailable() -> None:
    async def main() -> None:
        async with memgate.aio.Client(f"127.0.0.1:{free_port()}") as c:
            with pytest.raises(memgate.MemgateError) as excinfo:
                await c.get("k")
            assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE
            with pytest.raises(memgate.MemgateError) as excinfo:
                [pair async for pair in c.get_stream(["k"])]
            assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(main())


def test_stream_timeout(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        never = asyncio.Event()

        async def stalled() -> AsyncIterator[str]:
            yield prefix + "a"
            await never.wait()

        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.delete_stream(stalled(), timeout=0.3)
        assert excinfo.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

    run(target, test)


def test_closed_client_raises(target: str) -> None:
    async def main() -> None:
        async with memgate.aio.Client(target) as c:
            assert await c.health() == "SERVING"
        with pytest.raises(ValueError, match="closed"):
            await c.get("k")
        await c.close()

    asyncio.run(main())


def test_increment(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        key = prefix + "counter"
        assert await c.increment(key, 5, initial_value=10, ttl=0) == 10
        assert await c.get(key) == b"10"
        assert await c.increment(key, 5, initial_value=99) == 15
        assert await c.increment(key, -20) == 0  # stops at 0
        assert await c.increment(key, 3) == 3

        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.increment(prefix + "missing", 1)
        assert excinfo.value.code == grpc.StatusCode.NOT_FOUND
        assert excinfo.value.reason == "KEY_NOT_FOUND"
        assert await c.get(prefix + "missing") is None

        await c.set(prefix + "text", "abc")
        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.increment(prefix + "text", 1)
        assert excinfo.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert excinfo.value.reason == "NOT_A_NUMBER"

        with pytest.raises(TypeError):
            await c.increment(key, 1.5)  # type: ignore[arg-type]

    run(target, test)


def test_touch(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        key = prefix + "touched"
        assert await c.touch(key, 60) is False
        assert await c.get(key) is None
        await c.set(key, b"v", ttl=0)
        assert await c.touch(key, 3600) is True
        assert await c.get(key) == b"v"
        assert await c.touch(key, 1) is True

        async def gone() -> bool:
            return await c.get(key) is None

        await eventually(gone, "the touched item to expire")

    run(target, test)


def test_locate_and_stats(target: str, prefix: str, memcached: List[str]) -> None:
    async def test(c: memgate.aio.Client) -> None:
        keys = [f"{prefix}{i}" for i in range(20)]
        locations = await c.locate(keys)
        assert list(locations) == keys
        assert all(loc.shard in memcached and loc.up is True for loc in locations.values())
        assert len({loc.shard for loc in locations.values()}) > 1

        stats = await c.stats()
        assert sorted(shard.address for shard in stats.shards) == sorted(memcached)
        assert all(shard.up is True for shard in stats.shards), [s.error for s in stats.shards]

    run(target, test)


# -- conditional writes, get_item, leases, invalidation, get_or_fill -----

NOT_STORED = memgate.SetResult(stored=False, cas=0)


def test_conditional_writes(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        key = prefix + "k"
        assert await c.replace(key, b"v") == NOT_STORED
        assert await c.get(key) is None
        added = await c.add(key, b"first", ttl=100)
        assert added and added.cas != 0
        assert await c.add(key, b"second") == NOT_STORED
        item = await c.get_item(key)
        assert (item.value, item.found, item.cas, item.stale) == (b"first", True, added.cas, False)
        assert item.ttl_remaining is not None and 90 <= item.ttl_remaining <= 100
        replaced = await c.replace(key, b"replaced")
        assert replaced and replaced.cas not in (0, added.cas)
        assert await c.cas(key, b"swapped", added.cas) == NOT_STORED  # spent token
        swapped = await c.cas(key, b"swapped", replaced.cas)
        assert swapped and (await c.get_item(key)).cas == swapped.cas
        assert await c.get(key) == b"swapped"
        assert await c.cas(prefix + "missing", b"v", swapped.cas) == NOT_STORED
        stored = await c.set(key, b"plain")
        assert stored.stored is True and stored.cas not in (0, swapped.cas)

    run(target, test)


def test_cas_race_has_exactly_one_winner(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        key = prefix + "k"
        token = (await c.set(key, b"start")).cas
        results = await asyncio.gather(*(c.cas(key, f"writer {i}", token) for i in range(16)))
        winners = [i for i, r in enumerate(results) if r.stored]
        assert len(winners) == 1, results
        assert sum(r == NOT_STORED for r in results) == 15
        item = await c.get_item(key)
        assert item.value == f"writer {winners[0]}".encode()
        assert item.cas == results[winners[0]].cas

    run(target, test)


def test_get_item_touch_lease_and_invalidate(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        miss = await c.get_item(prefix + "missing")
        assert miss == memgate.Item(None, False, 0, None, memgate.Lease.NONE, False)

        key = prefix + "touched"
        await c.set(key, b"v", ttl=100)
        touched = await c.get_item(key, touch_ttl=5000)
        assert touched.ttl_remaining is not None and 4990 <= touched.ttl_remaining <= 5000
        again = await c.get_item(key)
        assert again.ttl_remaining is not None and 4990 <= again.ttl_remaining <= 5000

        key = prefix + "leased"
        won = await c.get_item(key, lease_ttl=10)
        assert (won.found, won.lease) == (False, memgate.Lease.WON) and won.cas != 0
        held = await c.get_item(key, lease_ttl=10)
        assert (held.found, held.lease) == (False, memgate.Lease.HELD)
        assert await c.get(key) is None
        await c.set(key, b"filled")
        after = await c.get_item(key, lease_ttl=10)
        assert (after.found, after.value, after.lease) == (True, b"filled", memgate.Lease.NONE)

        assert await c.delete(key, invalidate=True) is True
        stale = await c.get_item(key)
        assert (stale.found, stale.value, stale.stale) == (True, b"filled", True)
        won = await c.get_item(key, lease_ttl=10)
        assert (won.value, won.stale, won.lease) == (b"filled", True, memgate.Lease.WON)
        held = await c.get_item(key, lease_ttl=10)
        assert (held.value, held.stale, held.lease) == (b"filled", True, memgate.Lease.HELD)
        await c.set(key, b"new")
        fresh = await c.get_item(key)
        assert (fresh.value, fresh.stale) == (b"new", False)
        assert await c.delete(prefix + "missing", invalidate=True) is False

    run(target, test)


def test_set_many_with_a_failing_condition(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        exists, a = prefix + "exists", prefix + "a"
        await c.set(exists, b"old")
        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.set_many({exists: b"new", a: b"1"}, condition=memgate.Condition.ABSENT)
        assert excinfo.value.code == grpc.StatusCode.UNKNOWN
        assert excinfo.value.key_error_codes == {exists: grpc.StatusCode.FAILED_PRECONDITION}
        assert excinfo.value.details.startswith("1 of 2 item(s) were not stored")
        assert await c.get_many([exists, a]) == {exists: b"old", a: b"1"}

        token = (await c.get_item(a)).cas
        stored = await c.set_many(
            {a: b"2"}, condition=memgate.Condition.CAS_MATCH, cas={a: token}
        )
        assert stored == 1 and await c.get(a) == b"2"

        with pytest.raises(memgate.MemgateError) as excinfo:
            await c.set_stream(
                agen((exists, b"x"), (prefix + "missing", b"y")),
                condition=memgate.Condition.PRESENT,
            )
        missing = {prefix + "missing": grpc.StatusCode.FAILED_PRECONDITION}
        assert excinfo.value.key_error_codes == missing
        assert await c.get_many([exists, prefix + "missing"]) == {exists: b"x"}

    run(target, test)


def test_get_or_fill_concurrent_tasks_fill_once(target: str, prefix: str) -> None:
    """50 tasks ask for one missing key: one (async) fill runs while, as
    checked, every other task has been told HELD; all get its value."""
    callers = 50
    held: set[asyncio.Task[object]] = set()
    won: List[object] = []

    class Observed(memgate.aio.Client):
        async def get_item(self, key: str, **options: object) -> memgate.Item:
            item = await super().get_item(key, **options)  # type: ignore[arg-type]
            if item.lease == memgate.Lease.WON:
                won.append(asyncio.current_task())
            elif item.lease == memgate.Lease.HELD:
                task = asyncio.current_task()
                assert task is not None
                held.add(task)
            return item

    fills: List[object] = []

    async def main() -> List[bytes]:
        async with Observed(target) as c:

            async def fill() -> bytes:
                fills.append(asyncio.current_task())

                async def all_held() -> bool:
                    return len(held) == callers - 1

                await eventually(all_held, "every other task to be told HELD", timeout=10)
                return b"filled"

            calls = (c.get_or_fill(prefix + "k", fill, 60, wait=30) for _ in range(callers))
            return await asyncio.gather(*calls)

    assert asyncio.run(main()) == [b"filled"] * callers
    assert len(fills) == 1
    assert won == fills


def test_get_or_fill_serves_stale_at_once_while_one_task_refreshes(
    target: str, prefix: str
) -> None:
    async def test(c: memgate.aio.Client) -> None:
        key = prefix + "k"
        await c.set(key, b"old")
        await c.delete(key, invalidate=True)
        callers = 20
        stale_served = asyncio.Event()
        results: List[bytes] = []
        fills = 0

        async def fill() -> bytes:
            nonlocal fills
            fills += 1
            await asyncio.wait_for(stale_served.wait(), 20)
            return b"new"

        async def call() -> None:
            results.append(await c.get_or_fill(key, fill, 60, wait=30))
            if results.count(b"old") == callers - 1:
                stale_served.set()

        await asyncio.gather(*(call() for _ in range(callers)))
        assert fills == 1
        assert sorted(results) == [b"new"] + [b"old"] * (callers - 1)
        item = await c.get_item(key)
        assert (item.value, item.stale) == (b"new", False)

    run(target, test)


def test_get_or_fill_takes_a_plain_fill_and_releases_on_failure(
    target: str, prefix: str
) -> None:
    async def test(c: memgate.aio.Client) -> None:
        key = prefix + "k"

        async def fail() -> bytes:
            raise RuntimeError("backend down")

        with pytest.raises(RuntimeError, match="backend down"):
            await c.get_or_fill(key, fail, 60, lease_ttl=30)
        # Released: the next reader wins at once instead of HELD for 30 s.
        assert (await c.get_item(key, lease_ttl=30)).lease == memgate.Lease.WON
        await c.delete(key)

        assert await c.get_or_fill(key, lambda: "plain ✓", 100) == "plain ✓".encode()

        def never() -> bytes:
            raise AssertionError("fill must not be called")

        assert await c.get_or_fill(key, never, 100) == "plain ✓".encode()
        item = await c.get_item(key)
        assert item.ttl_remaining is not None and 90 <= item.ttl_remaining <= 100

    run(target, test)


def test_get_or_fill_fills_itself_after_waiting(target: str, prefix: str) -> None:
    async def test(c: memgate.aio.Client) -> None:
        key = prefix + "k"
        assert (await c.get_item(key, lease_ttl=60)).lease == memgate.Lease.WON
        started = time.monotonic()
        filled_at: List[float] = []

        async def fill() -> bytes:
            filled_at.append(time.monotonic() - started)
            return b"mine"

        assert await c.get_or_fill(key, fill, 60, wait=0.3) == b"mine"
        assert len(filled_at) == 1 and 0.3 <= filled_at[0] < 2.0
        assert await c.get(key) == b"mine"

    run(target, test)

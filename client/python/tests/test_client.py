"""The blocking client against the live server (scripts/with-stack.sh)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from typing import Dict, Iterator, List

import grpc
import pytest
from conftest import free_port, wait_for

import memgate
from memgate import _common as common
from memgate.v1 import cache_pb2 as pb

# Values that break naive text protocols: memcached's own terminators, a fake
# END line, NUL, every byte value, and nothing at all.
BINARY_VALUES = [
    b"\x00",
    b"a\r\nb",
    b"\r\n",
    b"\n\r\x00\r\n",
    b"VALUE x 0 1\r\nEND\r\n",
    bytes(range(256)),
    b"",
]

# Keys the server must refuse, each for a different rule.
INVALID_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("has space", id="space"),
    pytest.param("a\r\nflush_all", id="crlf-injection"),
    pytest.param("tab\tkey", id="control"),
    pytest.param("k" * 251, id="too-long"),
]


def assert_invalid_argument(excinfo: pytest.ExceptionInfo[memgate.MemgateError]) -> None:
    assert excinfo.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.details  # the server names the rule


# -- single keys ---------------------------------------------------------


def test_miss_returns_none(client: memgate.Client, prefix: str) -> None:
    assert client.get(prefix + "never-set") is None


@pytest.mark.parametrize("value", BINARY_VALUES, ids=repr)
def test_binary_values_round_trip(client: memgate.Client, prefix: str, value: bytes) -> None:
    client.set(prefix + "v", value)
    assert client.get(prefix + "v") == value


def test_empty_value_is_found_not_a_miss(client: memgate.Client, prefix: str) -> None:
    client.set(prefix + "empty", b"")
    assert client.get(prefix + "empty") == b""


def test_str_values_are_stored_as_utf8(client: memgate.Client, prefix: str) -> None:
    client.set(prefix + "s", "grüße ✓")
    assert client.get(prefix + "s") == "grüße ✓".encode()


def test_unicode_key(client: memgate.Client, prefix: str) -> None:
    key = prefix + "clé-ключ-鍵"
    client.set(key, b"v")
    assert client.get(key) == b"v"
    assert client.list(prefix) == [key]


def test_large_value_round_trips(client: memgate.Client, prefix: str) -> None:
    value = bytes(range(256)) * 2048  # 512 KiB
    client.set(prefix + "big", value)
    assert client.get(prefix + "big") == value


def test_value_over_max_value_bytes_is_invalid_argument(
    client: memgate.Client, prefix: str
) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set(prefix + "huge", b"x" * (1024 * 1024 + 1))  # --max-value-bytes defaults to 1 MiB
    assert_invalid_argument(excinfo)
    assert client.get(prefix + "huge") is None


def test_set_overwrites(client: memgate.Client, prefix: str) -> None:
    client.set(prefix + "k", b"one")
    client.set(prefix + "k", b"two")
    assert client.get(prefix + "k") == b"two"


def test_delete_reports_whether_the_key_existed(client: memgate.Client, prefix: str) -> None:
    client.set(prefix + "k", b"v")
    assert client.delete(prefix + "k") is True
    assert client.get(prefix + "k") is None
    assert client.delete(prefix + "k") is False


@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_key_is_invalid_argument(client: memgate.Client, key: str) -> None:
    for call in (
        lambda: client.get(key),
        lambda: client.set(key, b"v"),
        lambda: client.delete(key),
    ):
        with pytest.raises(memgate.MemgateError) as excinfo:
            call()
        assert_invalid_argument(excinfo)


def test_error_text_names_code_and_rule(client: memgate.Client) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.get("has space")
    assert str(excinfo.value).startswith("INVALID_ARGUMENT: ")
    assert "space" in excinfo.value.details
    assert excinfo.value.key_errors == {}
    assert excinfo.value.key_error_codes == {}


def test_error_carries_the_servers_reason_and_field(client: memgate.Client, prefix: str) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.get(prefix + "has space")
    err = excinfo.value
    assert err.reason == "KEY_INVALID"
    assert err.metadata["field"] == "key"
    assert "spaces" in err.field_violations["key"]
    assert err.retry_delay is None  # a bad key never gets better
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_many({prefix + "ok": b"v", prefix + "big": b"x" * (2 << 20)})
    assert excinfo.value.reason == "VALUE_TOO_LARGE"
    assert excinfo.value.metadata["key"] == prefix + "big"


def test_key_error_codes_line_up_with_key_errors() -> None:
    # A key without a code (or with 0, from a server older than the code
    # fields) is UNKNOWN, so key_error_codes always has key_errors' keys.
    err = memgate.MemgateError(
        grpc.StatusCode.UNKNOWN, "x", {"a": "m", "b": "m"}, {"a": grpc.StatusCode.UNAVAILABLE}
    )
    assert err.key_error_codes == {"a": grpc.StatusCode.UNAVAILABLE, "b": grpc.StatusCode.UNKNOWN}
    results = [
        pb.GetResult(key="old", error="shard down"),  # error_code 0
        pb.GetResult(key="new", error="shard down", error_code=14),
        pb.GetResult(key="odd", error="?", error_code=99),
    ]
    with pytest.raises(memgate.MemgateError) as excinfo:
        common.values_of(results)
    assert excinfo.value.key_error_codes == {
        "old": grpc.StatusCode.UNKNOWN,
        "new": grpc.StatusCode.UNAVAILABLE,
        "odd": grpc.StatusCode.UNKNOWN,
    }


# -- TTL -------------------------------------------------------------------


def test_ttl_expires(client: memgate.Client, prefix: str) -> None:
    key = prefix + "ttl"
    # memcached counts expiry in whole seconds of its own clock, so a ttl=1
    # item lives between 0 and 1 s: one that expired before the first read
    # is legitimate. Retry the write until a read sees it, to prove that it
    # was stored at all before waiting for it to go.
    for _ in range(5):
        client.set(key, b"short-lived", ttl=1)
        if client.get(key) == b"short-lived":
            break
    else:
        pytest.fail("a ttl=1 item was never readable right after it was set")
    client.set(prefix + "forever", b"v", ttl=0)
    start = time.monotonic()
    wait_for(lambda: client.get(key) is None, "the ttl=1 item to expire", timeout=5.0)
    assert time.monotonic() - start < 3.0
    assert client.get(prefix + "forever") == b"v"


def test_ttl_over_30_days_is_not_an_absolute_date_in_1970(
    client: memgate.Client, prefix: str
) -> None:
    # memcached reads an exptime over 30 days as a unix time; the server
    # converts, so a 40-day item must not be born expired.
    client.set(prefix + "long", b"v", ttl=40 * 24 * 3600)
    assert client.get(prefix + "long") == b"v"


def test_ttl_past_2038_is_kept(client: memgate.Client, prefix: str) -> None:
    # memcached's expiry is a 32-bit unix time; the server caps a TTL that
    # ends after 2038-01-19 03:14:07 UTC there instead of losing the item.
    for ttl in (20 * 365 * 24 * 3600, 2**32 - 1):  # 20 years; the largest ttl_seconds
        client.set(f"{prefix}{ttl}", b"v", ttl=ttl)
        assert client.get(f"{prefix}{ttl}") == b"v"
    client.set_many({prefix + "batch": b"v"}, ttl=2**32 - 1)
    client.set_stream([(prefix + "stream", b"v", 2**32 - 1)])
    assert client.get_many([prefix + "batch", prefix + "stream"]) == {
        prefix + "batch": b"v",
        prefix + "stream": b"v",
    }


def test_bad_ttl_and_value_types_fail_before_sending(client: memgate.Client, prefix: str) -> None:
    with pytest.raises(ValueError):
        client.set(prefix + "k", b"v", ttl=-1)
    with pytest.raises(ValueError):
        client.set(prefix + "k", b"v", ttl=2**32)
    with pytest.raises(TypeError):
        client.set(prefix + "k", b"v", ttl=1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.set(prefix + "k", 42)  # type: ignore[arg-type]
    assert client.get(prefix + "k") is None


# -- batches ---------------------------------------------------------------


def test_set_many_get_many_delete_many(client: memgate.Client, prefix: str) -> None:
    items: Dict[str, memgate.Value] = {
        prefix + "a": b"\x00A\r\n",
        prefix + "b": "B",
        prefix + "c": b"",
    }
    assert client.set_many(items) == 3
    got = client.get_many(
        [prefix + "a", prefix + "missing", prefix + "b", prefix + "c", prefix + "a"]
    )
    assert got == {prefix + "a": b"\x00A\r\n", prefix + "b": b"B", prefix + "c": b""}
    assert client.delete_many([prefix + "a", prefix + "b", prefix + "missing"]) == 2
    assert client.get_many([prefix + "a", prefix + "b", prefix + "c"]) == {prefix + "c": b""}


def test_batches_accept_empty_input(client: memgate.Client) -> None:
    assert client.get_many([]) == {}
    assert client.set_many({}) == 0
    assert client.delete_many([]) == 0


def test_set_many_with_ttl(client: memgate.Client, prefix: str) -> None:
    assert client.set_many({prefix + "a": b"1", prefix + "b": b"2"}, ttl=1) == 2
    wait_for(
        lambda: client.get_many([prefix + "a", prefix + "b"]) == {},
        "batch ttl to expire",
        timeout=5.0,
    )


def test_invalid_key_fails_the_whole_batch_and_writes_nothing(
    client: memgate.Client, prefix: str
) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_many({prefix + "good": b"v", prefix + "bad key": b"v"})
    assert_invalid_argument(excinfo)
    assert client.get(prefix + "good") is None
    for call in (
        lambda: client.get_many([prefix + "good", "bad key"]),
        lambda: client.delete_many([prefix + "good", "bad key"]),
    ):
        with pytest.raises(memgate.MemgateError) as excinfo:
            call()
        assert_invalid_argument(excinfo)


def test_batch_over_max_batch_keys_is_invalid_argument(client: memgate.Client, prefix: str) -> None:
    keys = [f"{prefix}{i}" for i in range(1001)]  # --max-batch-keys defaults to 1000
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.get_many(keys)
    assert_invalid_argument(excinfo)
    assert "1000" in excinfo.value.details


def test_response_over_message_limit_is_resource_exhausted(
    client: memgate.Client, prefix: str
) -> None:
    # 18 values of 1000000 bytes make a BatchGet response over the server's
    # 16 MiB --max-message-bytes; the streams carry them one per message.
    value = b"v" * 1_000_000
    keys = [f"{prefix}{i}" for i in range(18)]
    assert client.set_stream((k, value) for k in keys) == len(keys)
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.get_many(keys)
    assert excinfo.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-message-bytes" in excinfo.value.details
    assert list(client.get_stream(keys)) == [(k, value) for k in keys]
    assert client.delete_many(keys) == len(keys)


def test_request_over_message_limit_is_resource_exhausted(
    client: memgate.Client, prefix: str
) -> None:
    items = {f"{prefix}{i}": b"v" * 1_000_000 for i in range(18)}  # > 16 MiB in one message
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_many(items)
    assert excinfo.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-message-bytes" in excinfo.value.details
    assert client.get_many(list(items)[:3]) == {}  # nothing was written
    assert client.get(prefix + "after") is None  # the connection is still fine


# -- list --------------------------------------------------------------------


def test_list_is_sorted_filtered_and_limited(client: memgate.Client, prefix: str) -> None:
    keys = [prefix + k for k in ("b", "a", "c/1", "c/2")]
    client.set_many({k: b"v" for k in keys})
    client.set(prefix[:-1] + "-other", b"v")  # shares all but the last character
    assert client.list(prefix) == sorted(keys)
    assert client.list(prefix, limit=2) == sorted(keys)[:2]
    assert client.list(prefix + "c/") == [prefix + "c/1", prefix + "c/2"]
    assert client.list(prefix + "nothing") == []
    client.delete(prefix + "a")
    assert prefix + "a" not in client.list(prefix)


def test_list_decodes_keys_memcached_escapes(client: memgate.Client, prefix: str) -> None:
    # memcached's metadump URL-encodes keys; List must return them as set.
    keys = [prefix + k for k in ("100%", "a+b", "x%2Fy", "é", "q?=&")]
    client.set_many({k: b"v" for k in keys})
    assert client.list(prefix) == sorted(keys)


def test_list_skips_expired_keys(client: memgate.Client, prefix: str) -> None:
    client.set(prefix + "gone", b"v", ttl=1)
    client.set(prefix + "kept", b"v")
    wait_for(
        lambda: client.list(prefix) == [prefix + "kept"],
        "the expired key to leave List",
        timeout=5.0,
    )


# -- streams -------------------------------------------------------------------


def test_streams_handle_more_keys_than_one_batch(client: memgate.Client, prefix: str) -> None:
    n = 2500  # over --max-batch-keys (1000) and several server chunks (256)
    keys = [f"{prefix}{i:05}" for i in range(n)]
    items = ((k, k.encode() + b"\x00\r\n") for k in keys)  # a generator: read lazily
    assert client.set_stream(items) == n
    asked = keys + [prefix + "missing"] + keys[:3]  # order and duplicates are kept
    got = list(client.get_stream(iter(asked)))
    assert got == [(k, k.encode() + b"\x00\r\n") for k in keys] + [(prefix + "missing", None)] + [
        (k, k.encode() + b"\x00\r\n") for k in keys[:3]
    ]
    assert client.delete_stream(k for k in keys + [prefix + "missing"]) == n
    assert client.get_many(keys[:10]) == {}


def test_long_streams_of_tiny_keys_use_one_stream(client: memgate.Client) -> None:
    # 20,000 small messages each way on one stream per call: the server
    # keeps reading however many arrive, and the connection survives.
    n = 20_000
    p = f"t:{uuid.uuid4().hex[:8]}:"
    keys = [f"{p}{i}" for i in range(n)]
    assert client.set_stream((k, b"v") for k in keys) == n

    # The caller reads one result, then nothing until gRPC has taken every
    # key: sending must not wait for the reader.
    all_sent = threading.Event()

    def key_source() -> Iterator[str]:
        yield from keys
        all_sent.set()

    results = client.get_stream(key_source(), timeout=60)
    assert next(results) == (keys[0], b"v")
    assert all_sent.wait(30), "gRPC stopped taking keys while results were not read"
    assert list(results) == [(k, b"v") for k in keys[1:]]

    assert client.delete_stream(iter(keys)) == n
    assert client.get(keys[0]) is None


def test_set_stream_takes_per_item_ttl(client: memgate.Client, prefix: str) -> None:
    stored = client.set_stream(
        [(prefix + "short", b"v", 1), (prefix + "long", "v", 0), (prefix + "default", b"v")]
    )
    assert stored == 3
    wait_for(lambda: client.get(prefix + "short") is None, "the ttl=1 item to expire", timeout=5.0)
    assert client.get_many([prefix + "long", prefix + "default"]) == {
        prefix + "long": b"v",
        prefix + "default": b"v",
    }


def test_set_stream_reports_invalid_items_and_stores_the_rest(
    client: memgate.Client, prefix: str
) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_stream([(prefix + "a", b"1"), ("bad key", b"2"), (prefix + "b", b"3")])
    err = excinfo.value
    assert err.code == grpc.StatusCode.UNKNOWN  # the call succeeded: the other items were stored
    assert list(err.key_errors) == ["bad key"]
    assert err.key_error_codes == {"bad key": grpc.StatusCode.INVALID_ARGUMENT}
    assert "1 of 3" in err.details
    assert client.get_many([prefix + "a", prefix + "b"]) == {prefix + "a": b"1", prefix + "b": b"3"}


def test_delete_stream_reports_invalid_keys_and_deletes_the_rest(
    client: memgate.Client, prefix: str
) -> None:
    client.set(prefix + "a", b"1")
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.delete_stream([prefix + "a", "bad key"])
    assert list(excinfo.value.key_errors) == ["bad key"]
    assert excinfo.value.key_error_codes == {"bad key": grpc.StatusCode.INVALID_ARGUMENT}
    assert client.get(prefix + "a") is None


def test_get_stream_raises_at_an_invalid_key(client: memgate.Client, prefix: str) -> None:
    client.set(prefix + "a", b"1")
    results = client.get_stream([prefix + "a", "bad key", prefix + "a"])
    assert next(results) == (prefix + "a", b"1")
    with pytest.raises(memgate.MemgateError) as excinfo:
        next(results)
    assert list(excinfo.value.key_errors) == ["bad key"]
    assert excinfo.value.key_error_codes == {"bad key": grpc.StatusCode.INVALID_ARGUMENT}
    assert excinfo.value.code == grpc.StatusCode.UNKNOWN


def test_get_stream_can_stop_early(client: memgate.Client, prefix: str) -> None:
    def endless() -> Iterator[str]:
        i = 0
        while True:
            yield f"{prefix}{i}"
            i += 1

    results = client.get_stream(endless())
    assert next(results) == (prefix + "0", None)
    results.close()  # cancels the call; must not hang on the endless input
    assert client.get(prefix + "0") is None  # the client still works


def test_exception_in_input_iterator_reaches_the_caller(
    client: memgate.Client, prefix: str
) -> None:
    class Boom(Exception):
        pass

    def keys() -> Iterator[str]:
        yield prefix + "a"
        raise Boom("input failed")

    with pytest.raises(Boom):
        list(client.get_stream(keys()))
    with pytest.raises(Boom):
        client.delete_stream(keys())
    with pytest.raises(TypeError):
        client.set_stream([prefix + "not-a-tuple"])  # type: ignore[list-item]


def test_empty_streams(client: memgate.Client) -> None:
    assert list(client.get_stream([])) == []
    assert client.set_stream([]) == 0
    assert client.delete_stream([]) == 0


# -- sharing -----------------------------------------------------------------


def test_one_client_is_shared_by_threads(client: memgate.Client, prefix: str) -> None:
    def work(t: int) -> None:
        for i in range(50):
            key = f"{prefix}{t}:{i}"
            client.set(key, key)
            assert client.get(key) == key.encode()

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(client.list(prefix)) == 400


# -- health, timeouts, connection --------------------------------------------


def test_health_is_serving(client: memgate.Client) -> None:
    assert client.health() == "SERVING"
    assert client.health("memgate.v1.Cache") == "SERVING"


def test_health_of_unknown_service_is_not_found(client: memgate.Client) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.health("no.such.Service")
    assert excinfo.value.code == grpc.StatusCode.NOT_FOUND


def test_unary_calls_are_fast_on_loopback(client: memgate.Client, prefix: str) -> None:
    # Without TCP_NODELAY on the server's sockets each call waited ~40 ms
    # for a delayed ACK; on loopback a call takes well under a millisecond.
    client.set(prefix + "k", b"v")
    times = []
    for _ in range(21):
        start = time.perf_counter()
        assert client.get(prefix + "k") == b"v"
        times.append(time.perf_counter() - start)
    median = sorted(times)[len(times) // 2]
    assert median < 0.015, f"median Get on loopback took {median * 1000:.1f} ms"


def test_unary_timeout_is_deadline_exceeded() -> None:
    # A listener that never speaks HTTP/2 holds the call until its deadline.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = "127.0.0.1:%d" % silent.getsockname()[1]
        with memgate.Client(target, timeout=0.2) as client:
            start = time.monotonic()
            with pytest.raises(memgate.MemgateError) as excinfo:
                client.get("k")
            assert excinfo.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert time.monotonic() - start < 3.0
            with pytest.raises(memgate.MemgateError) as excinfo:
                client.get("k", timeout=0.1)  # per-call override
            assert excinfo.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_stream_timeout_bounds_the_whole_stream(client: memgate.Client, prefix: str) -> None:
    release = threading.Event()

    def slow_keys() -> Iterator[str]:
        yield prefix + "a"
        release.wait(10)  # the stream stays open past its deadline

    try:
        with pytest.raises(memgate.MemgateError) as excinfo:
            list(client.get_stream(slow_keys(), timeout=0.3))
        assert excinfo.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        release.set()


def test_unreachable_server_is_unavailable() -> None:
    with memgate.Client(f"127.0.0.1:{free_port()}", timeout=5.0) as client:
        with pytest.raises(memgate.MemgateError) as excinfo:
            client.get("k")
        assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE
        # No server, no reason.
        assert excinfo.value.reason is None
        assert excinfo.value.retry_delay is None
        with pytest.raises(memgate.MemgateError) as excinfo:
            client.set_stream([("k", b"v")])
        assert excinfo.value.code == grpc.StatusCode.UNAVAILABLE


def test_context_manager_closes_the_client(target: str, prefix: str) -> None:
    with memgate.Client(target) as client:
        client.set(prefix + "k", b"v")
    with pytest.raises(ValueError, match="closed"):
        client.get(prefix + "k")
    client.close()  # closing twice is harmless


def test_channel_allows_64_mib_messages(target: str) -> None:
    assert memgate.DEFAULT_MAX_MESSAGE_BYTES == 64 * 1024 * 1024
    client = memgate.Client(target, max_message_bytes=1024)
    try:
        # A request over the client's own limit fails locally.
        with pytest.raises(memgate.MemgateError) as excinfo:
            client.set("k", b"x" * 2048)
        assert excinfo.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        client.close()


# -- counters, touch, locate, stats --------------------------------------


def test_increment_creates_increments_and_decrements(client: memgate.Client, prefix: str) -> None:
    key = prefix + "counter"
    # Created from initial_value, which is returned as is (delta not applied).
    assert client.increment(key, 5, initial_value=10, ttl=0) == 10
    assert client.get(key) == b"10"  # stored as decimal text
    assert client.increment(key, 5, initial_value=99) == 15  # exists: initial_value ignored
    assert client.increment(key, 2**40) == 15 + 2**40
    assert client.increment(key, -(2**40)) == 15
    assert client.increment(key, -5) == 10


def test_decrement_stops_at_zero(client: memgate.Client, prefix: str) -> None:
    key = prefix + "counter"
    client.set(key, b"3")
    assert client.increment(key, -5) == 0
    assert client.increment(key, -1) == 0
    assert client.increment(key, 7) == 7


def test_increment_of_a_missing_key_is_not_found(client: memgate.Client, prefix: str) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.increment(prefix + "missing", 1)
    assert excinfo.value.code == grpc.StatusCode.NOT_FOUND
    assert excinfo.value.reason == "KEY_NOT_FOUND"
    assert client.get(prefix + "missing") is None  # nothing was created


def test_increment_of_a_non_number_is_failed_precondition(
    client: memgate.Client, prefix: str
) -> None:
    client.set(prefix + "text", b"abc")
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.increment(prefix + "text", 1)
    assert excinfo.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert excinfo.value.reason == "NOT_A_NUMBER"
    assert client.get(prefix + "text") == b"abc"


@pytest.mark.parametrize(
    ("delta", "options", "error"),
    [
        (1.5, {}, TypeError),
        (True, {}, TypeError),
        (2**63, {}, ValueError),
        (1, {"initial_value": -1}, ValueError),
        (1, {"initial_value": 2**64}, ValueError),
        (1, {"ttl": -1}, ValueError),
    ],
)
def test_increment_arguments_are_checked_before_sending(
    client: memgate.Client, prefix: str, delta: object, options: Dict[str, int], error: type
) -> None:
    with pytest.raises(error):
        client.increment(prefix + "c", delta, **options)  # type: ignore[arg-type]


def test_touch_sets_a_new_ttl_on_an_existing_key(client: memgate.Client, prefix: str) -> None:
    key = prefix + "touched"
    client.set(key, b"v", ttl=0)
    assert client.touch(key, 3600) is True
    assert client.get(key) == b"v"  # the value is unchanged
    assert client.touch(key, 1) is True
    wait_for(lambda: client.get(key) is None, "the touched item to expire", timeout=5.0)


def test_touch_of_a_missing_key_is_false(client: memgate.Client, prefix: str) -> None:
    assert client.touch(prefix + "missing", 60) is False
    assert client.get(prefix + "missing") is None
    with pytest.raises(ValueError):
        client.touch(prefix + "missing", -1)


def test_locate_names_an_up_shard_of_the_pool(
    client: memgate.Client, prefix: str, memcached: List[str]
) -> None:
    keys = [f"{prefix}{i}" for i in range(20)]
    locations = client.locate(keys)
    assert list(locations) == keys
    for location in locations.values():
        assert isinstance(location, memgate.Location)
        assert location.shard in memcached
        assert location.up is True
    # 20 keys over 3 shards land on more than one of them.
    assert len({location.shard for location in locations.values()}) > 1


def test_locate_invalid_key_is_invalid_argument(client: memgate.Client) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.locate(["ok", "bad key"])
    assert excinfo.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert excinfo.value.reason == "KEY_INVALID"


def test_stats_lists_every_shard_as_up(client: memgate.Client, memcached: List[str]) -> None:
    stats = client.stats()
    assert stats.version
    # Every shard once (the order is not checked: this server sorts them).
    assert sorted(shard.address for shard in stats.shards) == sorted(memcached)
    for shard in stats.shards:
        assert shard.up is True, shard.error
        assert shard.HasField("backend")
    assert sum(shard.ring_share for shard in stats.shards) == pytest.approx(1.0)
    assert any(m.method == "Stats" for m in stats.counters.methods)


# -- conditional writes, get_item, leases, invalidation, get_or_fill -----

FP = grpc.StatusCode.FAILED_PRECONDITION
NOT_STORED = memgate.SetResult(stored=False, cas=0)


def test_set_returns_the_new_cas(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    first = client.set(key, b"1")
    assert first.stored is True and first.cas != 0
    second = client.set(key, b"2")
    assert second.stored is True and second.cas not in (0, first.cas)
    assert client.get_item(key).cas == second.cas


def test_add_stores_only_if_the_key_is_absent(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    added = client.add(key, b"first")
    assert added and added.stored is True and added.cas != 0
    assert client.get_item(key).cas == added.cas
    refused = client.add(key, b"second")
    assert refused == NOT_STORED and not refused  # not an error
    assert client.get(key) == b"first"


def test_replace_stores_only_if_the_key_is_present(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    assert client.replace(key, b"v") == NOT_STORED
    assert client.get(key) is None  # nothing was created
    client.set(key, b"old")
    replaced = client.replace(key, b"new", ttl=100)
    assert replaced and replaced.cas != 0
    item = client.get_item(key)
    assert (item.value, item.cas) == (b"new", replaced.cas)
    assert item.ttl_remaining is not None and 90 <= item.ttl_remaining <= 100


def test_cas_swaps_only_with_the_current_token(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    token = client.set(key, b"1").cas
    assert client.get_item(key).cas == token
    swapped = client.cas(key, b"2", token)
    assert swapped and swapped.cas not in (0, token)
    assert client.cas(key, b"3", token) == NOT_STORED  # the token is spent
    assert client.cas(key, b"3", swapped.cas + 1) == NOT_STORED  # a wrong token
    assert client.get(key) == b"2"
    assert client.cas(key, b"3", swapped.cas)  # the current one works
    assert client.get(key) == b"3"
    # A missing key never matches, and is not created.
    assert client.cas(prefix + "missing", b"v", swapped.cas) == NOT_STORED
    assert client.get(prefix + "missing") is None


def test_cas_race_has_exactly_one_winner(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    token = client.set(key, b"start").cas
    writers = 16
    start = threading.Barrier(writers)
    results: Dict[int, memgate.SetResult] = {}

    def write(i: int) -> None:
        start.wait()
        results[i] = client.cas(key, f"writer {i}", token)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r.stored]
    assert len(results) == writers
    assert len(winners) == 1, results
    assert all(r == NOT_STORED for i, r in results.items() if i != winners[0])
    item = client.get_item(key)
    assert item.value == f"writer {winners[0]}".encode()
    assert item.cas == results[winners[0]].cas


def test_get_item_of_a_miss(client: memgate.Client, prefix: str) -> None:
    assert client.get_item(prefix + "missing") == memgate.Item(
        value=None, found=False, cas=0, ttl_remaining=None, lease=memgate.Lease.NONE, stale=False
    )


def test_get_item_reports_cas_and_ttl(client: memgate.Client, prefix: str) -> None:
    stored = client.set(prefix + "ttl", b"v", ttl=100)
    item = client.get_item(prefix + "ttl")
    assert (item.value, item.found, item.cas, item.stale) == (b"v", True, stored.cas, False)
    assert item.lease == memgate.Lease.NONE
    assert item.ttl_remaining is not None and 90 <= item.ttl_remaining <= 100
    client.set(prefix + "forever", b"", ttl=0)
    forever = client.get_item(prefix + "forever")
    assert (forever.value, forever.found, forever.ttl_remaining) == (b"", True, None)


def test_get_and_touch_changes_the_ttl(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    client.set(key, b"v", ttl=100)
    touched = client.get_item(key, touch_ttl=5000)
    assert touched.value == b"v"
    assert touched.ttl_remaining is not None and 4990 <= touched.ttl_remaining <= 5000
    again = client.get_item(key)  # read back: the new TTL stuck
    assert again.ttl_remaining is not None and 4990 <= again.ttl_remaining <= 5000
    assert client.get_item(key, touch_ttl=1).value == b"v"
    wait_for(lambda: client.get(key) is None, "the touched item to expire", timeout=5.0)
    assert client.get_item(prefix + "missing", touch_ttl=60).found is False


def test_lease_first_reader_wins_the_others_hold(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    won = client.get_item(key, lease_ttl=10)
    assert (won.found, won.value, won.lease, won.stale) == (False, None, memgate.Lease.WON, False)
    assert won.cas != 0  # the placeholder's token
    held = client.get_item(key, lease_ttl=10)
    assert (held.found, held.value, held.lease) == (False, None, memgate.Lease.HELD)
    assert client.get_item(key, lease_ttl=10).lease == memgate.Lease.HELD
    # A placeholder is never a value, and without lease_ttl no lease is reported.
    assert client.get(key) is None
    assert client.get_item(key).lease == memgate.Lease.NONE
    assert client.add(key, b"x") == NOT_STORED  # the placeholder exists
    client.set(key, b"filled")
    after = client.get_item(key, lease_ttl=10)
    assert (after.found, after.value, after.lease) == (True, b"filled", memgate.Lease.NONE)


def test_lease_winner_can_cas_with_the_placeholder_token(
    client: memgate.Client, prefix: str
) -> None:
    key = prefix + "k"
    won = client.get_item(key, lease_ttl=10)
    assert won.lease == memgate.Lease.WON
    assert client.cas(key, b"filled", won.cas + 1) == NOT_STORED
    assert client.cas(key, b"filled", won.cas)
    assert client.get(key) == b"filled"


def test_invalidate_serves_the_old_value_as_stale(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    client.set(key, b"old", ttl=0)
    assert client.delete(key, invalidate=True) is True
    stale = client.get_item(key)
    assert (stale.found, stale.value, stale.stale, stale.lease) == (
        True,
        b"old",
        True,
        memgate.Lease.NONE,
    )
    assert client.get(key) == b"old"
    won = client.get_item(key, lease_ttl=10)
    assert (won.found, won.value, won.stale, won.lease) == (True, b"old", True, memgate.Lease.WON)
    held = client.get_item(key, lease_ttl=10)
    assert (held.found, held.value, held.stale, held.lease) == (
        True,
        b"old",
        True,
        memgate.Lease.HELD,
    )
    assert client.add(key, b"x") == NOT_STORED  # a stale item exists
    client.set(key, b"new")  # clears the stale state
    fresh = client.get_item(key, lease_ttl=10)
    assert (fresh.found, fresh.value, fresh.stale, fresh.lease) == (
        True,
        b"new",
        False,
        memgate.Lease.NONE,
    )
    assert client.delete(prefix + "missing", invalidate=True) is False
    assert client.get_item(prefix + "missing").found is False


def test_replace_succeeds_on_a_stale_item(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    client.set(key, b"old")
    client.delete(key, invalidate=True)
    assert client.replace(key, b"new")
    item = client.get_item(key)
    assert (item.value, item.stale) == (b"new", False)


def test_set_many_with_a_failing_condition_reports_failed_precondition(
    client: memgate.Client, prefix: str
) -> None:
    exists, a, b = prefix + "exists", prefix + "a", prefix + "b"
    client.set(exists, b"old")
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_many({exists: b"new", a: b"1", b: b"2"}, condition=memgate.Condition.ABSENT)
    error = excinfo.value
    assert error.code == grpc.StatusCode.UNKNOWN  # the other items were stored
    assert error.key_error_codes == {exists: FP}
    # The count is the server's: the refused item is not in `stored`.
    assert error.details.startswith("1 of 3 item(s) were not stored"), error.details
    assert client.get_many([exists, a, b]) == {exists: b"old", a: b"1", b: b"2"}

    missing = prefix + "missing"
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_many({exists: b"2", missing: b"m"}, condition=memgate.Condition.PRESENT)
    assert excinfo.value.key_error_codes == {missing: FP}
    assert client.get_many([exists, missing]) == {exists: b"2"}

    token = client.get_item(exists).cas
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_many(
            {exists: b"3", a: b"x"},
            condition=memgate.Condition.CAS_MATCH,
            cas={exists: token, a: token},
        )
    assert excinfo.value.key_error_codes == {a: FP}
    assert client.get_many([exists, a]) == {exists: b"3", a: b"1"}

    c, d = prefix + "c", prefix + "d"
    assert client.set_many({c: b"1", d: b"2"}, condition=memgate.Condition.ABSENT) == 2


def test_set_stream_with_a_failing_condition_reports_failed_precondition(
    client: memgate.Client, prefix: str
) -> None:
    client.set(prefix + "1", b"old")
    items = [(f"{prefix}{i}", b"new") for i in range(5)]
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.set_stream(items, condition=memgate.Condition.ABSENT)
    assert excinfo.value.key_error_codes == {prefix + "1": FP}
    assert excinfo.value.details.startswith("1 of 5 item(s) were not stored")
    assert client.get(prefix + "1") == b"old"
    assert client.get(prefix + "4") == b"new"


def test_conditional_arguments_are_checked_before_sending(
    client: memgate.Client, prefix: str
) -> None:
    key = prefix + "k"
    with pytest.raises(ValueError):
        client.cas(key, b"v", -1)
    with pytest.raises(TypeError):
        client.cas(key, b"v", "1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cas"):
        client.set_many({key: b"v"}, condition=memgate.Condition.CAS_MATCH)
    with pytest.raises(ValueError, match="no cas token"):
        client.set_many({key: b"v"}, condition=memgate.Condition.CAS_MATCH, cas={})
    with pytest.raises(ValueError, match="CAS_MATCH"):
        client.set_many({key: b"v"}, cas={key: 1})
    with pytest.raises(ValueError, match="CAS_MATCH"):
        client.set_stream([(key, b"v")], condition=memgate.Condition.CAS_MATCH)
    with pytest.raises(TypeError):
        client.set_many({key: b"v"}, condition=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.get_item(key, lease_ttl=-1)
    with pytest.raises(ValueError):
        client.get_or_fill(key, lambda: b"v", lease_ttl=0)
    with pytest.raises(ValueError):
        client.get_or_fill(key, lambda: b"v", wait=-1)
    assert client.get(key) is None  # nothing was sent


def never_called() -> bytes:
    raise AssertionError("fill must not be called")


def test_get_or_fill_fills_a_miss_and_then_reads(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    fills: List[str] = []

    def fill() -> str:
        fills.append(key)
        return "filled ✓"

    assert client.get_or_fill(key, fill, 100) == "filled ✓".encode()
    assert fills == [key]
    item = client.get_item(key)
    assert item.value == "filled ✓".encode()
    assert item.ttl_remaining is not None and 90 <= item.ttl_remaining <= 100
    assert client.get_or_fill(key, never_called, 100) == "filled ✓".encode()


def test_get_or_fill_concurrent_callers_fill_once(target: str, prefix: str) -> None:
    """50 threads ask for one missing key: one fills, while (checked, not
    hoped) every other one is waiting; all get the filled value."""
    key = prefix + "k"
    callers = 50
    lock = threading.Lock()
    won: List[int] = []
    held: set[int] = set()

    class Observed(memgate.Client):
        def get_item(self, key: str, **options: object) -> memgate.Item:
            item = super().get_item(key, **options)  # type: ignore[arg-type]
            with lock:
                if item.lease == memgate.Lease.WON:
                    won.append(threading.get_ident())
                elif item.lease == memgate.Lease.HELD:
                    held.add(threading.get_ident())
            return item

    fills: List[int] = []

    def fill() -> bytes:
        fills.append(threading.get_ident())
        # Hold the lease until every other caller has been told HELD.
        wait_for(lambda: len(held) == callers - 1, "every other caller to be told HELD")
        return b"filled"

    with Observed(target) as client:
        start = threading.Barrier(callers)
        results: List[bytes] = []

        def call() -> None:
            start.wait()
            value = client.get_or_fill(key, fill, 60, wait=30)
            with lock:
                results.append(value)

        threads = [threading.Thread(target=call) for _ in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(fills) == 1
    assert won == fills  # the lease winner filled
    assert results == [b"filled"] * callers


def test_get_or_fill_serves_stale_at_once_while_one_caller_refreshes(
    client: memgate.Client, prefix: str
) -> None:
    key = prefix + "k"
    client.set(key, b"old")
    client.delete(key, invalidate=True)
    callers = 20
    lock = threading.Lock()
    results: List[bytes] = []
    stale_served = threading.Event()
    fills: List[int] = []

    def fill() -> bytes:
        fills.append(threading.get_ident())
        # The refresh runs until every other caller got the stale value.
        assert stale_served.wait(20), "the other callers did not get the stale value meanwhile"
        return b"new"

    start = threading.Barrier(callers)

    def call() -> None:
        start.wait()
        value = client.get_or_fill(key, fill, 60, wait=30)
        with lock:
            results.append(value)
            if results.count(b"old") == callers - 1:
                stale_served.set()

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fills) == 1
    assert sorted(results) == [b"new"] + [b"old"] * (callers - 1)
    item = client.get_item(key)
    assert (item.value, item.stale) == (b"new", False)


def test_get_or_fill_returns_stale_while_another_holds_the_lease(
    client: memgate.Client, prefix: str
) -> None:
    key = prefix + "k"
    client.set(key, b"old")
    client.delete(key, invalidate=True)
    assert client.get_item(key, lease_ttl=30).lease == memgate.Lease.WON  # someone refreshes
    started = time.monotonic()
    assert client.get_or_fill(key, never_called, 60) == b"old"
    assert time.monotonic() - started < 1.0  # at once, not after `wait`


def test_get_or_fill_returns_a_fresh_value_without_filling(
    client: memgate.Client, prefix: str
) -> None:
    client.set(prefix + "k", b"v")
    assert client.get_or_fill(prefix + "k", never_called, 60) == b"v"


def test_get_or_fill_releases_the_lease_when_fill_fails(
    client: memgate.Client, prefix: str
) -> None:
    key = prefix + "k"

    def fail() -> bytes:
        raise RuntimeError("backend down")

    with pytest.raises(RuntimeError, match="backend down"):
        client.get_or_fill(key, fail, 60, lease_ttl=30)
    # Released: the next reader wins at once instead of HELD for 30 s.
    assert client.get_item(key, lease_ttl=30).lease == memgate.Lease.WON
    client.delete(key)
    assert client.get_or_fill(key, lambda: b"second try", 60) == b"second try"


def test_get_or_fill_fills_itself_after_waiting(client: memgate.Client, prefix: str) -> None:
    key = prefix + "k"
    # Another caller won the lease and never sets the value.
    assert client.get_item(key, lease_ttl=60).lease == memgate.Lease.WON
    started = time.monotonic()
    filled_at: List[float] = []

    def fill() -> bytes:
        filled_at.append(time.monotonic() - started)
        return b"mine"

    assert client.get_or_fill(key, fill, 60, wait=0.3) == b"mine"
    assert len(filled_at) == 1
    assert 0.3 <= filled_at[0] < 2.0
    assert client.get(key) == b"mine"


def test_get_or_fill_errors_of_the_server_propagate(client: memgate.Client) -> None:
    with pytest.raises(memgate.MemgateError) as excinfo:
        client.get_or_fill("bad key", never_called, 60)
    assert excinfo.value.code == grpc.StatusCode.INVALID_ARGUMENT

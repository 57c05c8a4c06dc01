"""What the sync and asyncio clients share: building requests, checking
responses and the channel settings. Keeping it here makes the two clients
behave identically; they differ only in how they call the stub."""

from __future__ import annotations

import dataclasses
import enum
import random
import time
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import grpc

from memgate._errors import MemgateError, status_code
from memgate.v1 import cache_pb2 as pb

Value = Union[str, bytes]
"""A value to store: bytes are stored as they are, str as its UTF-8 encoding."""

SetItem = Union[Tuple[str, Value], Tuple[str, Value, Optional[int]]]
"""One item for ``set_stream``: ``(key, value)`` or ``(key, value, ttl)``."""

ChannelOptions = Sequence[Tuple[str, Any]]

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""The client's gRPC send and receive limit (64 MiB).

gRPC's own default receive limit is 4 MiB, below what memgate sends: its
``--max-message-bytes`` defaults to 16 MiB. The client allows 64 MiB so that it
is never the smaller side for a server configured up to that; the server's
limit is the one that applies (``RESOURCE_EXHAUSTED`` past it)."""

_MAX_TTL = 2**32 - 1  # ttl_seconds is a uint32
_MIN_I64 = -(2**63)  # IncrementRequest.delta is an int64
_MAX_I64 = 2**63 - 1
_MAX_U64 = 2**64 - 1  # IncrementRequest.initial_value is a uint64


class _Default(enum.Enum):
    """Type of :data:`DEFAULT`, so a timeout of ``None`` can mean "no deadline"."""

    TIMEOUT = "the client's default"


DEFAULT = _Default.TIMEOUT
"""Marks a ``timeout`` argument that was not given: the client's default applies."""

Timeout = Union[float, None, _Default]


Metadata = Tuple[Tuple[str, str], ...]
"""gRPC call metadata: ``(key, value)`` pairs."""

Pem = Union[bytes, str]
"""PEM data for TLS: bytes, or str (encoded as ASCII)."""


def auth_metadata(token: Optional[str]) -> Optional[Metadata]:
    """The metadata that carries ``token`` on every Cache call, or None.

    memgate's ``--auth-token-file`` requires ``authorization: Bearer
    <token>``. A token that could never be sent or accepted (not a str,
    empty, surrounded by whitespace, or with characters outside printable
    ASCII) is refused here rather than on the first call.
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if not token or token != token.strip():
        raise ValueError("token must be non-empty and must not start or end with whitespace")
    if not all(" " <= ch <= "~" for ch in token):
        raise ValueError("token must be printable ASCII (it is sent as an HTTP/2 header)")
    return (("authorization", f"Bearer {token}"),)


def _pem(data: Optional[Pem], what: str) -> Optional[bytes]:
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("ascii")
    raise TypeError(f"{what} must be PEM bytes or str, not {type(data).__name__}")


def channel_security(
    target: str,
    credentials: Optional[grpc.ChannelCredentials],
    root_certificates: Optional[Pem],
    private_key: Optional[Pem],
    certificate_chain: Optional[Pem],
) -> Tuple[str, Optional[grpc.ChannelCredentials]]:
    """The gRPC target and the channel credentials (None: plaintext).

    TLS is used when ``credentials`` is given, when any of the PEM arguments
    is, or when the target starts with ``https://``; ``root_certificates``
    None then means the system's trusted roots. An ``http://`` target is
    plaintext. Either scheme is stripped, since gRPC targets have none.
    """
    scheme = ""
    for prefix in ("https://", "http://"):
        if target.startswith(prefix):
            scheme, target = prefix, target[len(prefix) :].rstrip("/")
    pems = (root_certificates, private_key, certificate_chain)
    wants_tls = credentials is not None or any(p is not None for p in pems)
    if scheme == "http://" and wants_tls:
        raise ValueError("an http:// target is plaintext; use https:// (or no scheme) for TLS")
    if credentials is not None and any(p is not None for p in pems):
        raise ValueError(
            "pass either credentials or root_certificates/private_key/certificate_chain, not both"
        )
    if (private_key is None) != (certificate_chain is None):
        raise ValueError("private_key and certificate_chain (a client certificate) go together")
    if credentials is None and (wants_tls or scheme == "https://"):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates, "root_certificates"),
            private_key=_pem(private_key, "private_key"),
            certificate_chain=_pem(certificate_chain, "certificate_chain"),
        )
    return target, credentials


def channel_options(max_message_bytes: int, extra: ChannelOptions) -> List[Tuple[str, Any]]:
    """The channel options: message limits first, so ``extra`` can override them."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        *extra,
    ]


def encode_value(value: Value) -> bytes:
    """Bytes to store for ``value``; anything but str and bytes is a TypeError
    rather than a silently stored ``repr``."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"value must be str or bytes, not {type(value).__name__}")


class Condition(enum.IntEnum):
    """When a write stores (``SetCondition`` of the proto). A condition that
    does not hold is not an error: the write answers ``stored=False``."""

    ALWAYS = pb.SET_CONDITION_UNSPECIFIED
    """Store unconditionally (a plain set)."""
    ABSENT = pb.SET_CONDITION_ABSENT
    """Store only if the key does not exist (memcached's add). A lease
    placeholder and a stale item exist."""
    PRESENT = pb.SET_CONDITION_PRESENT
    """Store only if the key exists (memcached's replace)."""
    CAS_MATCH = pb.SET_CONDITION_CAS_MATCH
    """Store only if the item's CAS token is still the one given
    (compare-and-swap); a missing key never matches."""


class Lease(enum.IntEnum):
    """Who refills a missing or stale key (``LeaseState`` of the proto);
    reported only to a ``get_item`` with ``lease_ttl``."""

    NONE = pb.LEASE_STATE_UNSPECIFIED
    """No lease: a fresh hit, or a read without ``lease_ttl``."""
    WON = pb.LEASE_STATE_WON
    """This caller should compute the value and set it."""
    HELD = pb.LEASE_STATE_HELD
    """Another caller is refilling the key: use the stale value if there is
    one, or read again shortly."""


@dataclasses.dataclass(frozen=True)
class Item:
    """What :meth:`memgate.Client.get_item` read: the value and its metadata."""

    value: Optional[bytes]
    """The stored bytes (the old ones when ``stale``), or ``None`` when not ``found``."""
    found: bool
    """Whether the key holds a value. A lease placeholder is not one."""
    cas: int
    """The item's CAS token, for :meth:`memgate.Client.cas`. 0 on a miss,
    except with a lease (``WON``/``HELD``): then the placeholder's token."""
    ttl_remaining: Optional[int]
    """Seconds the item has left (after ``touch_ttl``, the new TTL); ``None``
    when it never expires, on a miss, and on text-protocol shards."""
    lease: Lease
    """Who refills the key (reads with ``lease_ttl`` only)."""
    stale: bool
    """True for an invalidated value (``delete(invalidate=True)``): usable,
    but old, and being (or about to be) refreshed."""


@dataclasses.dataclass(frozen=True)
class SetResult:
    """The outcome of a write: whether it stored and the item's new CAS token.

    It is truthy exactly when the write stored, so ``if cache.add(...):``
    reads as it should.
    """

    stored: bool
    """False only when the write's condition did not hold (nothing was written)."""
    cas: int
    """The item's new CAS token when stored; 0 otherwise (and on text-protocol shards)."""

    def __bool__(self) -> bool:
        return self.stored


def set_request(
    key: str,
    value: Value,
    ttl: Optional[int],
    condition: Condition = Condition.ALWAYS,
    cas: int = 0,
) -> pb.SetRequest:
    """A SetRequest. ``ttl=None`` leaves ttl_seconds unset, which the server
    reads as "use --default-ttl"; ``0`` is sent and means "never expires".
    ``cas`` is the token a ``CAS_MATCH`` write compares with."""
    request = pb.SetRequest(key=key, value=encode_value(value))
    if ttl is not None:
        request.ttl_seconds = _checked_ttl(ttl)
    request.condition = _checked_condition(condition).value
    if condition == Condition.CAS_MATCH:
        request.cas = _checked_int("cas", cas, 0, _MAX_U64)
    return request


def _checked_condition(condition: Condition) -> Condition:
    if not isinstance(condition, Condition):
        raise TypeError(f"condition must be a memgate.Condition, not {condition!r:.80}")
    return condition


def set_many_requests(
    items: Mapping[str, Value],
    ttl: Optional[int],
    condition: Condition,
    cas: Optional[Mapping[str, int]],
) -> List[pb.SetRequest]:
    """The SetRequests of a batch write. ``CAS_MATCH`` takes one token per
    key from ``cas``, which every other condition leaves out."""
    if _checked_condition(condition) == Condition.CAS_MATCH:
        if cas is None:
            raise ValueError("condition CAS_MATCH needs cas={key: token, ...}")
        missing = [k for k in items if k not in cas]
        if missing:
            raise ValueError(f"no cas token for {len(missing)} key(s), e.g. {missing[0]!r}")
        return [set_request(k, v, ttl, condition, cas[k]) for k, v in items.items()]
    if cas is not None:
        raise ValueError("cas tokens go with condition=Condition.CAS_MATCH only")
    return [set_request(k, v, ttl, condition) for k, v in items.items()]


def set_result_of(response: pb.SetResponse) -> SetResult:
    return SetResult(bool(response.stored), int(response.cas))


def get_item_request(
    key: str, touch_ttl: Optional[int], lease_ttl: Optional[int]
) -> pb.GetRequest:
    """A GetRequest with the options ``get_item`` takes; ``None`` leaves one unset."""
    request = pb.GetRequest(key=key)
    if touch_ttl is not None:
        request.touch_ttl_seconds = _checked_ttl(touch_ttl)
    if lease_ttl is not None:
        request.lease_ttl_seconds = _checked_ttl(lease_ttl)
    return request


def item_of(response: pb.GetResponse) -> Item:
    ttl = response.ttl_remaining_seconds if response.HasField("ttl_remaining_seconds") else None
    return Item(
        value=response.value if response.found else None,
        found=bool(response.found),
        cas=int(response.cas),
        ttl_remaining=ttl,
        lease=_lease(response.lease),
        stale=bool(response.stale),
    )


def _lease(number: int) -> Lease:
    try:
        return Lease(number)
    except ValueError:  # a newer server's state: treated as no lease
        return Lease.NONE


def _checked_ttl(ttl: int) -> int:
    """``ttl``, checked to be an int that fits ttl_seconds (a uint32)."""
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError(f"ttl must be an int number of seconds or None, not {type(ttl).__name__}")
    if not 0 <= ttl <= _MAX_TTL:
        raise ValueError(f"ttl must be between 0 and {_MAX_TTL} seconds, not {ttl}")
    return ttl


def _checked_int(name: str, number: int, low: int, high: int) -> int:
    """``number``, checked to be an int (not a bool) within ``low..high``, so
    protobuf never sees a float or an out-of-range number."""
    if isinstance(number, bool) or not isinstance(number, int):
        raise TypeError(f"{name} must be an int, not {type(number).__name__}")
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {number}")
    return number


def increment_request(
    key: str, delta: int, initial_value: Optional[int], ttl: Optional[int]
) -> pb.IncrementRequest:
    """An IncrementRequest. ``initial_value=None`` leaves it unset (a missing
    key is then NOT_FOUND); ``ttl=None`` leaves ttl_seconds unset
    (``--default-ttl`` for a created counter)."""
    request = pb.IncrementRequest(key=key, delta=_checked_int("delta", delta, _MIN_I64, _MAX_I64))
    if initial_value is not None:
        request.initial_value = _checked_int("initial_value", initial_value, 0, _MAX_U64)
    if ttl is not None:
        request.ttl_seconds = _checked_ttl(ttl)
    return request


def touch_request(key: str, ttl: int) -> pb.TouchRequest:
    """A TouchRequest; ``ttl`` is required (0: never expires)."""
    return pb.TouchRequest(key=key, ttl_seconds=_checked_ttl(ttl))


class Location(NamedTuple):
    """Where one key lives now, from :meth:`memgate.Client.locate`."""

    shard: str
    """The memcached server that holds the key (``host:port`` as the server
    was configured), ``"embedded"`` for the embedded store, or ``""`` while
    the pool has no servers."""
    up: bool
    """Whether that server answers and is not marked down."""


def locations_of(locations: Iterable[pb.KeyLocation]) -> Dict[str, Location]:
    """``{key: Location}`` of a LocateResponse (a repeated key appears once)."""
    return {loc.key: Location(loc.shard, loc.up) for loc in locations}


def set_item_request(item: SetItem, condition: Condition = Condition.ALWAYS) -> pb.SetRequest:
    """A SetRequest from a ``(key, value)`` or ``(key, value, ttl)`` tuple."""
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise TypeError(
            f"set_stream items must be (key, value) or (key, value, ttl) tuples, not {item!r:.80}"
        )
    ttl = item[2] if len(item) == 3 else None
    return set_request(item[0], item[1], ttl, condition)


def stream_condition(condition: Condition) -> Condition:
    """``condition``, checked to be one a stream of items can take: a
    compare-and-swap needs a token per item, which set_many takes."""
    if _checked_condition(condition) == Condition.CAS_MATCH:
        raise ValueError("set_stream takes no CAS_MATCH condition; use set_many(..., cas=...)")
    return condition


def get_request(key: str) -> pb.GetRequest:
    return pb.GetRequest(key=key)


def delete_request(key: str) -> pb.DeleteRequest:
    return pb.DeleteRequest(key=key)


# -- get_or_fill ------------------------------------------------------------


class FillStep(enum.Enum):
    """What ``get_or_fill`` does after a read with a lease."""

    RETURN = "return the value read (fresh, or stale while another caller refreshes it)"
    FILL_LEASED = "fill and set; this caller holds the lease, released if fill fails"
    FILL = "fill and set (refresh of a stale item, or no lease was reported)"
    WAIT = "another caller fills: back off and read again"


def fill_step(item: Item) -> FillStep:
    """The step of get_or_fill's algorithm for what the read returned."""
    if item.found:
        if item.stale and item.lease == Lease.WON:
            return FillStep.FILL
        return FillStep.RETURN
    if item.lease == Lease.WON:
        return FillStep.FILL_LEASED
    if item.lease == Lease.HELD:
        return FillStep.WAIT
    return FillStep.FILL  # no lease, which a server honouring lease_ttl does not send


def check_fill_options(
    ttl: Optional[int], lease_ttl: int, wait: float
) -> Tuple[Optional[int], int, float]:
    """get_or_fill's arguments, checked before anything is sent."""
    if ttl is not None:
        _checked_ttl(ttl)
    _checked_int("lease_ttl", lease_ttl, 1, _MAX_TTL)  # 0 would never expire
    if isinstance(wait, bool) or not isinstance(wait, (int, float)):
        raise TypeError(f"wait must be a number of seconds, not {type(wait).__name__}")
    if not wait >= 0:
        raise ValueError(f"wait must be >= 0 seconds, not {wait}")
    return ttl, lease_ttl, float(wait)


class Backoff:
    """The jittered backoff of a get_or_fill waiting for another caller's
    fill: 5 ms, doubling up to 100 ms, each times a random factor in
    [0.5, 1.5), until ``wait`` seconds after the call started."""

    FIRST = 0.005
    CAP = 0.1

    def __init__(self, wait: float) -> None:
        self._deadline = time.monotonic() + wait
        self._delay = self.FIRST

    def next_sleep(self) -> Optional[float]:
        """Seconds to sleep before reading again, or None once ``wait`` has
        passed (the caller then fills itself). Never sleeps past the deadline."""
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            return None
        sleep = self._delay * (0.5 + random.random())
        self._delay = min(self._delay * 2, self.CAP)
        return min(sleep, remaining)


def timeout_for(given: Timeout, default: Optional[float]) -> Optional[float]:
    """The deadline in seconds for one call: ``given`` unless it is DEFAULT."""
    return default if isinstance(given, _Default) else given


def values_of(results: Iterable[pb.GetResult]) -> Dict[str, bytes]:
    """The found values of a batch read; raises if any key failed, because a
    failed key is not a miss and must not look like one."""
    values: Dict[str, bytes] = {}
    errors: Dict[str, str] = {}
    codes: Dict[str, grpc.StatusCode] = {}
    for result in results:
        if result.error:
            errors[result.key] = result.error
            codes[result.key] = status_code(result.error_code)
        elif result.found:
            values[result.key] = result.value
    if errors:
        raise MemgateError.for_keys(f"{len(errors)} key(s) could not be read", errors, codes)
    return values


def pair_of(result: pb.GetResult) -> Tuple[str, Optional[bytes]]:
    """``(key, value or None)`` for one streamed result; raises for a failed key."""
    if result.error:
        raise MemgateError.for_keys(
            "a key could not be read",
            {result.key: result.error},
            {result.key: status_code(result.error_code)},
        )
    return result.key, (result.value if result.found else None)


def stored_count(response: pb.BatchSetResponse, sent: int) -> int:
    """The number of items stored; raises unless all ``sent`` items were.

    The count is checked as well as the error list because a stream's list
    is capped by the server, and an item missing from both would otherwise
    be lost without a word."""
    if response.errors or response.stored != sent:
        errors, codes = _key_errors(response.errors)
        summary = f"{sent - response.stored} of {sent} item(s) were not stored"
        if not errors:
            raise MemgateError(
                grpc.StatusCode.UNKNOWN,
                f"{summary}, but the server reported no per-item error",
            )
        if len(errors) < sent - response.stored:
            summary += f" (the server listed {len(errors)})"
        raise MemgateError.for_keys(summary, errors, codes)
    return response.stored


def deleted_count(response: pb.BatchDeleteResponse) -> int:
    """The number of keys that existed and were deleted; raises if deleting
    any key failed (a missing key is not a failure)."""
    if response.errors:
        errors, codes = _key_errors(response.errors)
        raise MemgateError.for_keys(
            f"{len(errors)} key(s) could not be deleted ({response.deleted} were)", errors, codes
        )
    return response.deleted


def _key_errors(
    errors: Iterable[pb.KeyError],
) -> Tuple[Dict[str, str], Dict[str, grpc.StatusCode]]:
    """The message and the status code of each failed key of a batch."""
    messages: Dict[str, str] = {}
    codes: Dict[str, grpc.StatusCode] = {}
    for e in errors:
        messages[e.key] = e.message
        codes[e.key] = status_code(e.code)
    return messages, codes

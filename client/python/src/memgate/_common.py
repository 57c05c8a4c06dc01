"""What the sync and asyncio clients share: building requests, checking
responses and the channel settings. Keeping it here makes the two clients
behave identically; they differ only in how they call the stub."""

from __future__ import annotations

import enum
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

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


def set_request(key: str, value: Value, ttl: Optional[int]) -> pb.SetRequest:
    """A SetRequest. ``ttl=None`` leaves ttl_seconds unset, which the server
    reads as "use --default-ttl"; ``0`` is sent and means "never expires"."""
    request = pb.SetRequest(key=key, value=encode_value(value))
    if ttl is not None:
        request.ttl_seconds = _checked_ttl(ttl)
    return request


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


def set_item_request(item: SetItem) -> pb.SetRequest:
    """A SetRequest from a ``(key, value)`` or ``(key, value, ttl)`` tuple."""
    if not isinstance(item, tuple) or len(item) not in (2, 3):
        raise TypeError(
            f"set_stream items must be (key, value) or (key, value, ttl) tuples, not {item!r:.80}"
        )
    ttl = item[2] if len(item) == 3 else None
    return set_request(item[0], item[1], ttl)


def get_request(key: str) -> pb.GetRequest:
    return pb.GetRequest(key=key)


def delete_request(key: str) -> pb.DeleteRequest:
    return pb.DeleteRequest(key=key)


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

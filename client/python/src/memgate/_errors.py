"""The one exception type of the client, and the conversions into it."""

from __future__ import annotations

from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

import grpc
import google.rpc.error_details_pb2 as error_details_pb2
import google.rpc.status_pb2 as status_pb2

# The ErrorInfo domain of memgate's errors.
ERROR_DOMAIN = "memgate.v1"

# The trailer in which a server sends google.rpc.Status with the details.
_DETAILS_KEY = "grpc-status-details-bin"

# How many per-key messages are spelled out in an error's text; all of them
# are in MemgateError.key_errors.
_KEYS_IN_MESSAGE = 5

_CODES: Dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


def status_code(number: int) -> grpc.StatusCode:
    """The ``grpc.StatusCode`` for a numeric code from the wire (the
    ``error_code``/``code`` of a per-key failure). A failed key always has a
    non-OK code; 0 (a server older than these fields) or a number grpc does
    not know becomes ``UNKNOWN``."""
    code = _CODES.get(number, grpc.StatusCode.UNKNOWN)
    return grpc.StatusCode.UNKNOWN if code == grpc.StatusCode.OK else code


class MemgateError(Exception):
    """Any failure of a memgate call.

    Every ``grpc.RpcError`` is converted into this one type so that callers
    catch one thing and never depend on grpc's exception classes, which
    differ between the sync and asyncio APIs.

    Attributes:
        code: the gRPC status code (``grpc.StatusCode``). The server's
            contract says what each means: ``INVALID_ARGUMENT`` for a bad key,
            value, TTL or batch (nothing was written), ``UNAVAILABLE`` for an
            unreachable shard (retrying reads is safe), ``DEADLINE_EXCEEDED``,
            ``RESOURCE_EXHAUSTED`` for a message over the size limit, and
            ``INTERNAL``. Batch and stream calls whose RPC succeeded but some
            keys failed use ``UNKNOWN`` even when every failed key has the
            same code: the call itself succeeded and the keys not named in
            ``key_errors`` were processed, so e.g. ``INVALID_ARGUMENT``
            ("nothing was written") would be wrong. The per-key codes are in
            ``key_error_codes``.
        details: the server's message (or, for per-key failures, a summary).
        key_errors: for per-key failures, the server's message for each
            failed key; empty otherwise.
        key_error_codes: for per-key failures, the ``grpc.StatusCode`` that a
            single-key call would have raised for each failed key (e.g.
            ``UNAVAILABLE`` for a key on a down shard, ``INVALID_ARGUMENT``
            for an invalid key in a stream); the same keys as ``key_errors``.
            ``UNKNOWN`` for a key whose server sent no code (one older than
            the ``code`` fields). Empty when ``key_errors`` is.
        reason: the server's stable reason (its ``google.rpc.ErrorInfo``):
            ``KEY_INVALID``, ``VALUE_TOO_LARGE``, ``TOO_MANY_KEYS``,
            ``SHARD_UNAVAILABLE``, ``SHARD_DOWN``, ``SHARD_TIMEOUT``,
            ``OVERLOADED``, ... (``proto/memgate/v1/cache.proto`` lists them
            all). ``None`` for errors the server sent no reason with (the
            client's own, connection failures, per-key failures).
        metadata: what failed, from the same ErrorInfo: ``shard`` (its
            address), ``key``, ``field``, ``limit`` (the server flag), ...
        retry_delay: seconds the server asks to wait before retrying (its
            ``google.rpc.RetryInfo``, sent with ``UNAVAILABLE`` and when it
            is overloaded), or ``None``.
        field_violations: for ``INVALID_ARGUMENT``, the request fields that
            broke a rule (``google.rpc.BadRequest``), e.g.
            ``{"keys[3]": "key must not be empty"}``.
    """

    code: grpc.StatusCode
    details: str
    key_errors: Dict[str, str]
    key_error_codes: Dict[str, grpc.StatusCode]
    reason: Optional[str]
    metadata: Dict[str, str]
    retry_delay: Optional[float]
    field_violations: Dict[str, str]

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        key_errors: Optional[Mapping[str, str]] = None,
        key_error_codes: Optional[Mapping[str, grpc.StatusCode]] = None,
        *,
        reason: Optional[str] = None,
        metadata: Optional[Mapping[str, str]] = None,
        retry_delay: Optional[float] = None,
        field_violations: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.key_errors = dict(key_errors or {})
        codes = key_error_codes or {}
        # One code per key of key_errors, so the two always line up.
        self.key_error_codes = {
            key: codes.get(key, grpc.StatusCode.UNKNOWN) for key in self.key_errors
        }
        self.reason = reason
        self.metadata = dict(metadata or {})
        self.retry_delay = retry_delay
        self.field_violations = dict(field_violations or {})

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> MemgateError:
        """Converts a failed RPC (sync or asyncio) into a MemgateError."""
        # grpc.RpcError itself has no code(); the errors grpc raises for calls
        # (sync _InactiveRpcError/_Rendezvous, grpc.aio.AioRpcError) all do.
        code_fn = getattr(error, "code", None)
        details_fn = getattr(error, "details", None)
        trailers_fn = getattr(error, "trailing_metadata", None)
        code = code_fn() if callable(code_fn) else None
        details = details_fn() if callable(details_fn) else None
        trailers = trailers_fn() if callable(trailers_fn) else None
        return cls(
            code or grpc.StatusCode.UNKNOWN,
            details or str(error),
            **_status_details(trailers),
        )

    @classmethod
    def for_keys(
        cls,
        summary: str,
        key_errors: Mapping[str, str],
        key_error_codes: Optional[Mapping[str, grpc.StatusCode]] = None,
    ) -> MemgateError:
        """A MemgateError for a call in which some keys failed."""
        shown = [f"{k!r}: {m}" for k, m in list(key_errors.items())[:_KEYS_IN_MESSAGE]]
        more = len(key_errors) - len(shown)
        text = f"{summary}: " + "; ".join(shown)
        if more > 0:
            text += f"; and {more} more (see .key_errors)"
        return cls(grpc.StatusCode.UNKNOWN, text, key_errors, key_error_codes)


def _status_details(trailers: Optional[Iterable[Tuple[str, Any]]]) -> Dict[str, Any]:
    """The keyword arguments of MemgateError for the ``google.rpc.Status``
    a server sent in ``grpc-status-details-bin``: its ErrorInfo (when it is
    memgate's), RetryInfo and BadRequest. Empty when there is none or it
    does not decode: the code and message are what count, details only add.
    """
    # The sync API gives a tuple of pairs, the asyncio one a grpc.aio.Metadata
    # that iterates as pairs too.
    raw = next((v for k, v in trailers or () if k == _DETAILS_KEY), None)
    if not isinstance(raw, bytes):
        return {}
    status = status_pb2.Status()
    try:
        status.ParseFromString(raw)
    except Exception:  # a malformed trailer must not hide the error itself
        return {}
    out: Dict[str, Any] = {}
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        retry = error_details_pb2.RetryInfo()
        bad = error_details_pb2.BadRequest()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info):
            if info.domain == ERROR_DOMAIN:
                out["reason"] = info.reason
                out["metadata"] = dict(info.metadata)
        elif detail.Is(retry.DESCRIPTOR) and detail.Unpack(retry):
            if retry.HasField("retry_delay"):
                out["retry_delay"] = retry.retry_delay.ToTimedelta().total_seconds()
        elif detail.Is(bad.DESCRIPTOR) and detail.Unpack(bad):
            out["field_violations"] = {v.field: v.description for v in bad.field_violations}
    return out

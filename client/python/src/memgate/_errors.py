"""The one exception type of the client, and the conversions into it."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import grpc

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
    """

    code: grpc.StatusCode
    details: str
    key_errors: Dict[str, str]
    key_error_codes: Dict[str, grpc.StatusCode]

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        key_errors: Optional[Mapping[str, str]] = None,
        key_error_codes: Optional[Mapping[str, grpc.StatusCode]] = None,
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

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError) -> MemgateError:
        """Converts a failed RPC (sync or asyncio) into a MemgateError."""
        # grpc.RpcError itself has no code(); the errors grpc raises for calls
        # (sync _InactiveRpcError/_Rendezvous, grpc.aio.AioRpcError) all do.
        code_fn = getattr(error, "code", None)
        details_fn = getattr(error, "details", None)
        code = code_fn() if callable(code_fn) else None
        details = details_fn() if callable(details_fn) else None
        return cls(code or grpc.StatusCode.UNKNOWN, details or str(error))

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

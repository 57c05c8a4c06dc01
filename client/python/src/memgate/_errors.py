"""The one exception type of the client, and the conversions into it."""

from __future__ import annotations

from typing import Dict, Mapping, Optional

import grpc

# How many per-key messages are spelled out in an error's text; all of them
# are in MemgateError.key_errors.
_KEYS_IN_MESSAGE = 5


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
            keys failed use ``UNKNOWN``: the server reports per-key failures
            as text only, without a status code.
        details: the server's message (or, for per-key failures, a summary).
        key_errors: for per-key failures, the server's message for each
            failed key; empty otherwise.
    """

    code: grpc.StatusCode
    details: str
    key_errors: Dict[str, str]

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        key_errors: Optional[Mapping[str, str]] = None,
    ) -> None:
        super().__init__(code, details)
        self.code = code
        self.details = details
        self.key_errors = dict(key_errors or {})

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
    def for_keys(cls, summary: str, key_errors: Mapping[str, str]) -> MemgateError:
        """A MemgateError for a call in which some keys failed."""
        shown = [f"{k!r}: {m}" for k, m in list(key_errors.items())[:_KEYS_IN_MESSAGE]]
        more = len(key_errors) - len(shown)
        text = f"{summary}: " + "; ".join(shown)
        if more > 0:
            text += f"; and {more} more (see .key_errors)"
        return cls(grpc.StatusCode.UNKNOWN, text, key_errors)

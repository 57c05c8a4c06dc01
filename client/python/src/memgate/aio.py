"""The asyncio client, :class:`memgate.aio.Client`: :class:`memgate.Client`'s
twin on ``grpc.aio``, with the same methods and errors, as coroutines."""

from __future__ import annotations

import asyncio
import functools
import inspect
from types import TracebackType
from typing import (
    Any,
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Dict,
    Generic,
    Iterable,
    List,
    Mapping,
    NoReturn,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
)

import grpc
import grpc.aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from memgate import _common as common
from memgate._common import (
    DEFAULT,
    DEFAULT_MAX_MESSAGE_BYTES,
    ChannelOptions,
    Condition,
    FillStep,
    Item,
    Location,
    Pem,
    SetItem,
    SetResult,
    Timeout,
    Value,
)
from memgate._errors import MemgateError
from memgate.v1 import cache_pb2 as pb
from memgate.v1 import cache_pb2_grpc

__all__ = ["Client"]

T = TypeVar("T")
R = TypeVar("R")

AnyIterable = Union[Iterable[T], AsyncIterable[T]]
"""Streaming helpers take plain or async iterables. A plain one is read on
the event loop, so it must not block; make a slow source async."""


class _Requests(Generic[T, R]):
    """The request iterator of a streaming call.

    grpc.aio consumes it in a task of its own and, if it raises, only logs
    the exception and cancels the call (the caller then sees a bare
    CancelledError). This keeps the exception for the caller, and counts
    what was sent.
    """

    def __init__(self, items: AnyIterable[T], make: Callable[[T], R]) -> None:
        self._items = items
        self._make = make
        self.sent = 0
        self.error: Optional[Exception] = None

    async def __aiter__(self) -> AsyncIterator[R]:
        try:
            if isinstance(self._items, AsyncIterable):
                async for item in self._items:
                    yield self._count(self._make(item))
            else:
                for item in self._items:
                    yield self._count(self._make(item))
        except Exception as e:
            self.error = e
            raise

    def _count(self, request: R) -> R:
        self.sent += 1
        return request

    def reraise(self, error: BaseException) -> NoReturn:
        """Raises what a failed streaming call should: the caller's own
        exception if their iterator raised one (grpc.aio then cancels the
        call, which surfaces as CancelledError), a genuine cancellation of
        the caller's task as is, else the RPC's error."""
        if self.error is not None:
            raise self.error from None
        if isinstance(error, grpc.RpcError):
            raise MemgateError.from_rpc_error(error) from error
        raise error


class Client:
    """An asyncio memgate client over one ``grpc.aio`` channel.

    Same arguments and methods as :class:`memgate.Client`, as coroutines;
    ``get_stream`` is an async generator. Create it inside a running event
    loop (grpc.aio binds the channel to it), share it between tasks, and
    close it with ``await client.close()`` or ``async with``.

    Args:
        target: ``host:port`` of the memgate server; ``https://host:port``
            for TLS, ``http://host:port`` for plaintext (see
            :class:`memgate.Client`).
        timeout: deadline in seconds for each unary call (``None``: none).
        token: bearer token for a server with ``--auth-token-file``, sent on
            every cache call (not on ``health()``). Over plaintext, only on
            loopback or a trusted network.
        root_certificates: PEM of the CA(s) to trust; turns TLS on.
        private_key, certificate_chain: PEM of a client certificate and key
            (mutual TLS); they go together and turn TLS on.
        credentials: ready-made channel credentials instead of the PEM
            arguments.
        stream_timeout: deadline for a whole streaming call (default none).
        max_message_bytes: send and receive message limit (64 MiB; memgate's
            ``--max-message-bytes`` defaults to 16 MiB and applies if lower).
        options: further gRPC channel options; they override the above.

    Every failure is raised as :class:`memgate.MemgateError`.
    """

    def __init__(
        self,
        target: str,
        timeout: Optional[float] = 5.0,
        *,
        token: Optional[str] = None,
        root_certificates: Optional[Pem] = None,
        private_key: Optional[Pem] = None,
        certificate_chain: Optional[Pem] = None,
        credentials: Optional[grpc.ChannelCredentials] = None,
        stream_timeout: Optional[float] = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: ChannelOptions = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self._metadata = common.auth_metadata(token)
        address, creds = common.channel_security(
            target, credentials, root_certificates, private_key, certificate_chain
        )
        opts = common.channel_options(max_message_bytes, options)
        if creds is None:
            self._channel = grpc.aio.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(address, creds, options=opts)
        self._cache = cache_pb2_grpc.CacheStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False

    # -- lifecycle -------------------------------------------------------

    async def close(self) -> None:
        """Closes the channel; calls in flight are cancelled. Closing twice is harmless."""
        self._closed = True
        await self._channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"memgate.aio.Client({self.target!r})"

    # -- single keys -----------------------------------------------------

    async def get(self, key: str, *, timeout: Timeout = DEFAULT) -> Optional[bytes]:
        """The value stored under ``key``, or ``None`` if it is absent (``b""`` is a value)."""
        response = await self._unary(self._cache.Get, pb.GetRequest(key=key), timeout)
        return response.value if response.found else None

    async def get_item(
        self,
        key: str,
        *,
        touch_ttl: Optional[int] = None,
        lease_ttl: Optional[int] = None,
        timeout: Timeout = DEFAULT,
    ) -> Item:
        """Reads ``key`` with its metadata (:class:`memgate.Item`), optionally
        touching it (``touch_ttl``) or taking a lease on a miss (``lease_ttl``).

        See :meth:`memgate.Client.get_item`.
        """
        request = common.get_item_request(key, touch_ttl, lease_ttl)
        return common.item_of(await self._unary(self._cache.Get, request, timeout))

    async def set(
        self, key: str, value: Value, ttl: Optional[int] = None, *, timeout: Timeout = DEFAULT
    ) -> SetResult:
        """Stores ``value`` under ``key`` once memcached acknowledged it.

        ``ttl`` in seconds: ``None`` uses the server's ``--default-ttl``, ``0``
        never expires. Returns ``SetResult(stored=True, cas=<new token>)``.
        """
        return await self._set(common.set_request(key, value, ttl), timeout)

    async def add(
        self, key: str, value: Value, ttl: Optional[int] = None, *, timeout: Timeout = DEFAULT
    ) -> SetResult:
        """Stores only if ``key`` does not exist; the result is truthy if it stored."""
        return await self._set(common.set_request(key, value, ttl, Condition.ABSENT), timeout)

    async def replace(
        self, key: str, value: Value, ttl: Optional[int] = None, *, timeout: Timeout = DEFAULT
    ) -> SetResult:
        """Stores only if ``key`` exists; the result is truthy if it stored."""
        return await self._set(common.set_request(key, value, ttl, Condition.PRESENT), timeout)

    async def cas(
        self,
        key: str,
        value: Value,
        cas: int,
        ttl: Optional[int] = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> SetResult:
        """Compare-and-swap: stores only if the item's CAS token is still ``cas``.

        See :meth:`memgate.Client.cas`.
        """
        request = common.set_request(key, value, ttl, Condition.CAS_MATCH, cas)
        return await self._set(request, timeout)

    async def delete(
        self, key: str, *, invalidate: bool = False, timeout: Timeout = DEFAULT
    ) -> bool:
        """Removes ``key`` (``invalidate=True``: marks it stale); True if it existed.

        See :meth:`memgate.Client.delete`.
        """
        request = pb.DeleteRequest(key=key, invalidate=bool(invalidate))
        response = await self._unary(self._cache.Delete, request, timeout)
        return bool(response.deleted)

    async def get_or_fill(
        self,
        key: str,
        fill: Callable[[], Union[Value, Awaitable[Value]]],
        ttl: Optional[int] = None,
        *,
        lease_ttl: int = 10,
        wait: float = 5.0,
        timeout: Timeout = DEFAULT,
    ) -> bytes:
        """The value of ``key``; on a miss, ``fill()``'s, stored with ``ttl``.

        ``fill`` is a plain or an async callable (``async def``). Concurrent
        callers of a missing key fill it once between them; the others
        wait for that value (jittered backoff, at most ``wait`` seconds,
        then they fill themselves), and an invalidated value is returned
        at once while one caller refreshes it. If ``fill`` raises (or the
        task is cancelled during it), the lease is released and the
        exception propagates. See :meth:`memgate.Client.get_or_fill`.
        """
        ttl, lease_ttl, wait = common.check_fill_options(ttl, lease_ttl, wait)
        backoff = common.Backoff(wait)
        while True:
            item = await self.get_item(key, lease_ttl=lease_ttl, timeout=timeout)
            step = common.fill_step(item)
            if step == FillStep.RETURN and item.value is not None:  # found: never None
                return item.value
            if step == FillStep.WAIT:
                sleep = backoff.next_sleep()
                if sleep is not None:
                    await asyncio.sleep(sleep)
                    continue
                # Waited ``wait`` seconds: fill without the lease.
            try:
                filled = fill()
                if inspect.isawaitable(filled):
                    filled = await filled
                value = common.encode_value(filled)
            except BaseException:
                if step == FillStep.FILL_LEASED:
                    await self._release(key, timeout)
                raise
            await self.set(key, value, ttl, timeout=timeout)
            return value

    async def list(
        self, prefix: str = "", limit: int = 0, *, timeout: Timeout = DEFAULT
    ) -> List[str]:
        """Keys starting with ``prefix``, sorted, at most ``limit`` (0: the server's maximum).

        A point-in-time scan of every shard; see :meth:`memgate.Client.list`.
        """
        request = pb.ListRequest(prefix=prefix, limit=limit)
        response = await self._unary(self._cache.List, request, timeout)
        return list(response.keys)

    async def increment(
        self,
        key: str,
        delta: int,
        *,
        initial_value: Optional[int] = None,
        ttl: Optional[int] = None,
        timeout: Timeout = DEFAULT,
    ) -> int:
        """Adds ``delta`` to the counter at ``key`` atomically; returns the new value.

        A missing key is NOT_FOUND (``KEY_NOT_FOUND``) unless
        ``initial_value`` creates it; a non-numeric value is
        FAILED_PRECONDITION (``NOT_A_NUMBER``). See :meth:`memgate.Client.increment`.
        """
        request = common.increment_request(key, delta, initial_value, ttl)
        response = await self._unary(self._cache.Increment, request, timeout)
        return int(response.value)

    async def touch(self, key: str, ttl: int, *, timeout: Timeout = DEFAULT) -> bool:
        """Sets a new ``ttl`` on ``key`` without changing its value; True if it existed."""
        response = await self._unary(self._cache.Touch, common.touch_request(key, ttl), timeout)
        return bool(response.found)

    # -- batches -----------------------------------------------------------

    async def get_many(
        self, keys: Iterable[str], *, timeout: Timeout = DEFAULT
    ) -> Dict[str, bytes]:
        """The values of the keys that are present; raises if any key could not be read.

        See :meth:`memgate.Client.get_many`.
        """
        request = pb.BatchGetRequest(keys=list(keys))
        response = await self._unary(self._cache.BatchGet, request, timeout)
        return common.values_of(response.results)

    async def set_many(
        self,
        items: Mapping[str, Value],
        ttl: Optional[int] = None,
        *,
        condition: Condition = Condition.ALWAYS,
        cas: Optional[Mapping[str, int]] = None,
        timeout: Timeout = DEFAULT,
    ) -> int:
        """Stores every item with the same ``ttl``; returns the count, raises if any failed.

        ``condition`` (and ``cas`` tokens for ``CAS_MATCH``) as in
        :meth:`memgate.Client.set_many`: an item whose condition fails is a
        per-key ``FAILED_PRECONDITION``.
        """
        requests = common.set_many_requests(items, ttl, condition, cas)
        response = await self._unary(
            self._cache.BatchSet, pb.BatchSetRequest(items=requests), timeout
        )
        return common.stored_count(response, len(requests))

    async def delete_many(self, keys: Iterable[str], *, timeout: Timeout = DEFAULT) -> int:
        """Removes ``keys``; returns how many existed. Raises if any deletion failed."""
        request = pb.BatchDeleteRequest(keys=list(keys))
        response = await self._unary(self._cache.BatchDelete, request, timeout)
        return common.deleted_count(response)

    # -- streams -----------------------------------------------------------

    async def get_stream(
        self, keys: AnyIterable[str], *, timeout: Timeout = DEFAULT
    ) -> AsyncGenerator[Tuple[str, Optional[bytes]], None]:
        """Yields ``(key, value or None)`` for each key, in order, as results arrive.

        ``keys`` may be a plain or an async iterable, read lazily. Stopping
        early cancels the call once the generator is closed (``aclose()``, or
        when it is garbage-collected). A key that cannot be read raises
        MemgateError at its position.
        """
        requests = _Requests(keys, common.get_request)
        call = self._cache.BatchGetStream(
            requests, timeout=self._stream_deadline(timeout), metadata=self._metadata
        )
        try:
            async for result in call:
                yield common.pair_of(result)
        except (grpc.RpcError, asyncio.CancelledError) as e:
            requests.reraise(e)
        finally:
            call.cancel()

    async def set_stream(
        self,
        items: AnyIterable[SetItem],
        *,
        condition: Condition = Condition.ALWAYS,
        timeout: Timeout = DEFAULT,
    ) -> int:
        """Stores a stream of ``(key, value[, ttl])`` items; returns how many were stored.

        Raises MemgateError with ``key_errors`` and ``key_error_codes`` after
        the stream if any item was not stored (invalid ones included, and
        those whose ``condition``, ``ABSENT`` or ``PRESENT``, failed).
        """
        condition = common.stream_condition(condition)
        make = functools.partial(common.set_item_request, condition=condition)
        requests = _Requests(items, make)
        response = await self._client_stream(self._cache.BatchSetStream, requests, timeout)
        return common.stored_count(response, requests.sent)

    async def delete_stream(self, keys: AnyIterable[str], *, timeout: Timeout = DEFAULT) -> int:
        """Deletes a stream of keys; returns how many existed. Raises if any deletion failed."""
        requests = _Requests(keys, common.delete_request)
        response = await self._client_stream(self._cache.BatchDeleteStream, requests, timeout)
        return common.deleted_count(response)

    # -- introspection -----------------------------------------------------

    async def locate(
        self, keys: Iterable[str], *, timeout: Timeout = DEFAULT
    ) -> Dict[str, Location]:
        """``{key: Location(shard, up)}``: where each key lives now.

        See :meth:`memgate.Client.locate`.
        """
        request = pb.LocateRequest(keys=list(keys))
        response = await self._unary(self._cache.Locate, request, timeout)
        return common.locations_of(response.locations)

    async def stats(self, *, timeout: Timeout = DEFAULT) -> pb.StatsResponse:
        """The server's and each shard's statistics; see :meth:`memgate.Client.stats`."""
        response: pb.StatsResponse = await self._unary(
            self._cache.Stats, pb.StatsRequest(), timeout
        )
        return response

    # -- health ------------------------------------------------------------

    async def health(self, service: str = "", *, timeout: Timeout = DEFAULT) -> str:
        """The grpc.health.v1 status of ``service``: ``"SERVING"`` or ``"NOT_SERVING"``."""
        request = health_pb2.HealthCheckRequest(service=service)
        # Without the token: the server keeps health open.
        response = await self._unary(self._health.Check, request, timeout, auth=False)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    # -- plumbing ----------------------------------------------------------

    async def _set(self, request: pb.SetRequest, timeout: Timeout) -> SetResult:
        return common.set_result_of(await self._unary(self._cache.Set, request, timeout))

    async def _release(self, key: str, timeout: Timeout) -> None:
        """Releases get_or_fill's lease on ``key`` after its fill failed; a
        failure here leaves the lease to expire and does not hide fill's."""
        try:
            await self.delete(key, timeout=timeout)
        except MemgateError:
            pass

    async def _unary(
        self,
        method: Callable[..., Awaitable[R]],
        request: object,
        timeout: Timeout,
        *,
        auth: bool = True,
    ) -> R:
        """Calls ``method``, with the token unless ``auth`` is False."""
        self._check_open()
        try:
            return await method(
                request,
                timeout=common.timeout_for(timeout, self.timeout),
                metadata=self._metadata if auth else None,
            )
        except grpc.RpcError as e:
            raise MemgateError.from_rpc_error(e) from e

    async def _client_stream(
        self, method: Callable[..., Awaitable[R]], requests: _Requests[Any, Any], timeout: Timeout
    ) -> R:
        try:
            return await method(
                requests, timeout=self._stream_deadline(timeout), metadata=self._metadata
            )
        except (grpc.RpcError, asyncio.CancelledError) as e:
            requests.reraise(e)

    def _stream_deadline(self, timeout: Timeout) -> Optional[float]:
        self._check_open()
        return common.timeout_for(timeout, self.stream_timeout)

    def _check_open(self) -> None:
        # grpc raises ValueError (sync) or UsageError (aio) here; one
        # ValueError, as for a closed file, is simpler to handle.
        if self._closed:
            raise ValueError(f"{self!r} is closed")

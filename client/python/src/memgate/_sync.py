"""The blocking client, :class:`memgate.Client`."""

from __future__ import annotations

from types import TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Generator,
    Generic,
    Iterable,
    Iterator,
    List,
    Mapping,
    NoReturn,
    Optional,
    Tuple,
    Type,
    TypeVar,
)

import functools
import time

import grpc
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

T = TypeVar("T")
R = TypeVar("R")


class _Requests(Generic[T, R]):
    """The request iterator of a streaming call.

    grpc consumes it on its own thread and, if it raises, only logs the
    exception and cancels the call. This keeps the exception so the caller
    gets it instead of a bare CANCELLED, and counts what was sent.
    """

    def __init__(self, items: Iterable[T], make: Callable[[T], R]) -> None:
        self._items = iter(items)
        self._make = make
        self.sent = 0
        self.error: Optional[Exception] = None

    def __iter__(self) -> Iterator[R]:
        return self

    def __next__(self) -> R:
        try:
            request = self._make(next(self._items))
        except StopIteration:
            raise
        except Exception as e:
            self.error = e
            raise
        self.sent += 1
        return request

    def reraise(self, error: grpc.RpcError) -> NoReturn:
        """Raises what a failed streaming call should: the caller's own
        exception if their iterator raised one, else the RPC's error."""
        if self.error is not None:
            raise self.error from None
        raise MemgateError.from_rpc_error(error) from error


class Client:
    """A blocking memgate client over one gRPC channel.

    One client is meant to be shared: the channel multiplexes concurrent
    calls from many threads and reconnects by itself. Create it once and
    close it (or use ``with``) when done.

    Args:
        target: ``host:port`` of the memgate server (any gRPC target works).
            ``https://host:port`` means TLS with the system's trusted roots
            unless ``root_certificates`` is given; ``http://host:port`` means
            plaintext. Without a scheme the connection is plaintext unless a
            TLS argument below is given.
        timeout: deadline in seconds for each unary call (``None``: none).
            Every method also takes ``timeout=`` to override it for one call.
        token: a bearer token for a server started with
            ``--auth-token-file``, sent as ``authorization: Bearer <token>``
            on every cache call (not on ``health()``, which the server keeps
            open). Over plaintext anyone on the path can read it: use it
            without TLS only on loopback or a trusted network.
        root_certificates: PEM of the CA(s) to trust for the server's
            certificate; giving it turns TLS on.
        private_key, certificate_chain: PEM of a client certificate and its
            key, for a server started with ``--tls-client-ca`` (mutual TLS);
            they go together and turn TLS on.
        credentials: ready-made channel credentials (e.g.
            ``grpc.ssl_channel_credentials(...)``), instead of the three PEM
            arguments.
        stream_timeout: deadline in seconds for a whole streaming call;
            ``None`` (the default) sets none, because a stream lasts as long
            as its input does.
        max_message_bytes: the channel's send and receive message limit
            (64 MiB). memgate's own limit, ``--max-message-bytes``, defaults
            to 16 MiB and is the one that applies when it is lower.
        options: further gRPC channel options, e.g.
            ``[("grpc.keepalive_time_ms", 30000)]``; they override the above.

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
            self._channel = grpc.insecure_channel(address, options=opts)
        else:
            self._channel = grpc.secure_channel(address, creds, options=opts)
        self._cache = cache_pb2_grpc.CacheStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)
        self._closed = False

    # -- lifecycle -------------------------------------------------------

    def close(self) -> None:
        """Closes the channel; calls in flight are cancelled. Closing twice is harmless."""
        self._closed = True
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"memgate.Client({self.target!r})"

    # -- single keys -----------------------------------------------------

    def get(self, key: str, *, timeout: Timeout = DEFAULT) -> Optional[bytes]:
        """The value stored under ``key``, or ``None`` if it is absent.

        A miss is not an error; an empty stored value is ``b""``, not ``None``.
        """
        response = self._unary(self._cache.Get, pb.GetRequest(key=key), timeout)
        return response.value if response.found else None

    def get_item(
        self,
        key: str,
        *,
        touch_ttl: Optional[int] = None,
        lease_ttl: Optional[int] = None,
        timeout: Timeout = DEFAULT,
    ) -> Item:
        """Reads ``key`` with its metadata: an :class:`memgate.Item` with
        ``value``, ``found``, ``cas``, ``ttl_remaining``, ``lease`` and ``stale``.

        ``touch_ttl``: a hit also gets this TTL (get-and-touch), and
        ``ttl_remaining`` reports it. ``lease_ttl``: stampede protection. A
        miss creates a placeholder living that many seconds; exactly one
        caller gets ``lease=Lease.WON`` (it should compute and set the
        value), the others ``Lease.HELD`` until that write or the
        placeholder's expiry. An invalidated item is returned with
        ``stale=True`` and its old value, and one reader with ``lease_ttl``
        also gets ``Lease.WON``. :meth:`get_or_fill` does all this for you.
        """
        request = common.get_item_request(key, touch_ttl, lease_ttl)
        return common.item_of(self._unary(self._cache.Get, request, timeout))

    def set(
        self, key: str, value: Value, ttl: Optional[int] = None, *, timeout: Timeout = DEFAULT
    ) -> SetResult:
        """Stores ``value`` under ``key``; returns once memcached acknowledged it.

        ``ttl`` is in seconds: ``None`` uses the server's ``--default-ttl``,
        ``0`` never expires. A str value is stored as UTF-8. Returns
        ``SetResult(stored=True, cas=<the new CAS token>)``.
        """
        return self._set(common.set_request(key, value, ttl), timeout)

    def add(
        self, key: str, value: Value, ttl: Optional[int] = None, *, timeout: Timeout = DEFAULT
    ) -> SetResult:
        """Stores ``value`` only if ``key`` does not exist (memcached's add).

        Returns a :class:`memgate.SetResult`, truthy if it stored. A key
        that exists is not an error: ``stored=False``. A lease placeholder
        and a stale item count as existing.
        """
        return self._set(common.set_request(key, value, ttl, Condition.ABSENT), timeout)

    def replace(
        self, key: str, value: Value, ttl: Optional[int] = None, *, timeout: Timeout = DEFAULT
    ) -> SetResult:
        """Stores ``value`` only if ``key`` exists (memcached's replace);
        ``stored=False`` otherwise."""
        return self._set(common.set_request(key, value, ttl, Condition.PRESENT), timeout)

    def cas(
        self,
        key: str,
        value: Value,
        cas: int,
        ttl: Optional[int] = None,
        *,
        timeout: Timeout = DEFAULT,
    ) -> SetResult:
        """Compare-and-swap: stores ``value`` only if the item's CAS token is
        still ``cas`` (from :meth:`get_item`, or a previous write's
        ``SetResult.cas``). ``stored=False`` if another write came first or
        the key is missing; the result's ``cas`` is the token for the next swap.
        """
        request = common.set_request(key, value, ttl, Condition.CAS_MATCH, cas)
        return self._set(request, timeout)

    def delete(self, key: str, *, invalidate: bool = False, timeout: Timeout = DEFAULT) -> bool:
        """Removes ``key``; True if it existed.

        With ``invalidate=True`` the item is marked stale instead: reads
        return its old value with ``stale=True`` for the server's
        ``--stale-ttl`` (30 s by default), and the first :meth:`get_item`
        with ``lease_ttl`` wins the lease to refresh it (see :meth:`get_or_fill`).
        """
        request = pb.DeleteRequest(key=key, invalidate=bool(invalidate))
        response = self._unary(self._cache.Delete, request, timeout)
        return bool(response.deleted)

    def get_or_fill(
        self,
        key: str,
        fill: Callable[[], Value],
        ttl: Optional[int] = None,
        *,
        lease_ttl: int = 10,
        wait: float = 5.0,
        timeout: Timeout = DEFAULT,
    ) -> bytes:
        """The value of ``key``; on a miss, ``fill()``'s, stored with ``ttl``.

        Concurrent callers (threads, processes, other memgate replicas) of a
        missing key call ``fill`` once between them: the read takes a lease
        (a placeholder living ``lease_ttl`` seconds), the one caller that
        wins it fills and stores the value, and the others read again with
        a jittered backoff (5 ms doubling to 100 ms) until it is there. A
        caller still waiting ``wait`` seconds after it started fills
        itself. An invalidated (stale) value is returned at once, while the
        one caller that wins the lease refreshes it. If ``fill`` raises,
        the lease is released (so another caller can fill at once) and the
        exception propagates; errors of the reads and writes raise
        MemgateError. ``timeout`` applies to each call to the server.
        """
        ttl, lease_ttl, wait = common.check_fill_options(ttl, lease_ttl, wait)
        backoff = common.Backoff(wait)
        while True:
            item = self.get_item(key, lease_ttl=lease_ttl, timeout=timeout)
            step = common.fill_step(item)
            if step == FillStep.RETURN and item.value is not None:  # found: never None
                return item.value
            if step == FillStep.WAIT:
                sleep = backoff.next_sleep()
                if sleep is not None:
                    time.sleep(sleep)
                    continue
                # Waited ``wait`` seconds: fill without the lease.
            try:
                value = common.encode_value(fill())
            except BaseException:
                if step == FillStep.FILL_LEASED:
                    self._release(key, timeout)
                raise
            self.set(key, value, ttl, timeout=timeout)
            return value

    def list(self, prefix: str = "", limit: int = 0, *, timeout: Timeout = DEFAULT) -> List[str]:
        """Keys starting with ``prefix``, sorted, at most ``limit`` of them.

        ``limit=0`` means the server's maximum (``--list-max-keys``). On
        memcached this is a point-in-time scan of every shard: it can miss
        writes made while it runs, and it is slow on big caches (the server
        allows it ten times its backend timeout), so pass a larger
        ``timeout`` than usual for big caches.
        """
        response = self._unary(
            self._cache.List, pb.ListRequest(prefix=prefix, limit=limit), timeout
        )
        return list(response.keys)

    def increment(
        self,
        key: str,
        delta: int,
        *,
        initial_value: Optional[int] = None,
        ttl: Optional[int] = None,
        timeout: Timeout = DEFAULT,
    ) -> int:
        """Adds ``delta`` to the counter at ``key`` atomically; returns the new value.

        Counters are unsigned 64-bit numbers stored as decimal text (``get``
        reads ``b"42"``). A negative ``delta`` decrements, stopping at 0; an
        increment past 2**64-1 wraps around, as memcached's does. A missing
        key raises MemgateError(NOT_FOUND, reason ``KEY_NOT_FOUND``) unless
        ``initial_value`` is given: then the counter is created holding it
        (``delta`` is not applied) with ``ttl`` (``None``: the server's
        ``--default-ttl``; an existing counter keeps its TTL). A value that
        is not a decimal number raises MemgateError(FAILED_PRECONDITION,
        reason ``NOT_A_NUMBER``).
        """
        request = common.increment_request(key, delta, initial_value, ttl)
        response = self._unary(self._cache.Increment, request, timeout)
        return int(response.value)

    def touch(self, key: str, ttl: int, *, timeout: Timeout = DEFAULT) -> bool:
        """Sets a new ``ttl`` (seconds from now; ``0`` never expires) on
        ``key`` without reading or changing its value; True if it existed."""
        response = self._unary(self._cache.Touch, common.touch_request(key, ttl), timeout)
        return bool(response.found)

    # -- batches -----------------------------------------------------------

    def get_many(self, keys: Iterable[str], *, timeout: Timeout = DEFAULT) -> Dict[str, bytes]:
        """The values of the keys that are present; missing keys are absent.

        One request (at most the server's ``--max-batch-keys``, 1000 by
        default; use :meth:`get_stream` for more). If any key could not be
        read (its shard is down), raises MemgateError with ``key_errors`` and
        ``key_error_codes`` rather than returning a partial dict: a failed
        read must not look like a miss. An invalid key fails the whole call (INVALID_ARGUMENT).
        """
        response = self._unary(self._cache.BatchGet, pb.BatchGetRequest(keys=list(keys)), timeout)
        return common.values_of(response.results)

    def set_many(
        self,
        items: Mapping[str, Value],
        ttl: Optional[int] = None,
        *,
        condition: Condition = Condition.ALWAYS,
        cas: Optional[Mapping[str, int]] = None,
        timeout: Timeout = DEFAULT,
    ) -> int:
        """Stores every item of ``items`` with the same ``ttl``; returns how many were stored.

        If any item was not stored, raises MemgateError whose ``key_errors``
        holds the server's message per key and ``key_error_codes`` its
        status code (the other items are stored). An invalid key or value
        fails the whole call before anything is written.

        ``condition`` makes every item conditional (``Condition.ABSENT``,
        ``PRESENT``, or ``CAS_MATCH`` with ``cas={key: token}`` for every
        key); an item whose condition fails is not stored and is reported
        with code ``FAILED_PRECONDITION`` in ``key_error_codes``.
        """
        requests = common.set_many_requests(items, ttl, condition, cas)
        response = self._unary(self._cache.BatchSet, pb.BatchSetRequest(items=requests), timeout)
        return common.stored_count(response, len(requests))

    def delete_many(self, keys: Iterable[str], *, timeout: Timeout = DEFAULT) -> int:
        """Removes ``keys``; returns how many existed. Raises if any deletion failed."""
        response = self._unary(
            self._cache.BatchDelete, pb.BatchDeleteRequest(keys=list(keys)), timeout
        )
        return common.deleted_count(response)

    # -- streams -----------------------------------------------------------

    def get_stream(
        self, keys: Iterable[str], *, timeout: Timeout = DEFAULT
    ) -> Generator[Tuple[str, Optional[bytes]], None, None]:
        """Yields ``(key, value or None)`` for each key, in order, as results arrive.

        For any number of keys: ``keys`` is read lazily while results flow
        back, so neither side holds the whole batch. The call starts when
        iteration starts; stopping early cancels it. A key that cannot be
        read, including an invalid one, raises MemgateError at its position.
        """
        requests = _Requests(keys, common.get_request)
        call = self._cache.BatchGetStream(
            requests, timeout=self._stream_deadline(timeout), metadata=self._metadata
        )
        try:
            for result in call:
                yield common.pair_of(result)
        except grpc.RpcError as e:
            requests.reraise(e)
        finally:
            call.cancel()

    def set_stream(
        self,
        items: Iterable[SetItem],
        *,
        condition: Condition = Condition.ALWAYS,
        timeout: Timeout = DEFAULT,
    ) -> int:
        """Stores ``(key, value)`` or ``(key, value, ttl)`` items; returns how many were stored.

        For more items than one batch allows. If any item was not stored
        (an invalid one included: the stream goes on past it), raises
        MemgateError with ``key_errors`` and ``key_error_codes`` after the
        stream ends. ``condition`` (``Condition.ABSENT`` or ``PRESENT``)
        applies to every item, as in :meth:`set_many`.
        """
        condition = common.stream_condition(condition)
        make = functools.partial(common.set_item_request, condition=condition)
        requests = _Requests(items, make)
        response = self._client_stream(self._cache.BatchSetStream, requests, timeout)
        return common.stored_count(response, requests.sent)

    def delete_stream(self, keys: Iterable[str], *, timeout: Timeout = DEFAULT) -> int:
        """Deletes a stream of keys; returns how many existed. Raises if any deletion failed."""
        requests = _Requests(keys, common.delete_request)
        response = self._client_stream(self._cache.BatchDeleteStream, requests, timeout)
        return common.deleted_count(response)

    # -- introspection -----------------------------------------------------

    def locate(self, keys: Iterable[str], *, timeout: Timeout = DEFAULT) -> Dict[str, Location]:
        """``{key: Location(shard, up)}``: the memcached server that holds each
        key now and whether it is up. Nothing is read or written.

        The keys follow the batch rules (valid keys, at most
        ``--max-batch-keys``); the embedded store's shard is ``"embedded"``.
        """
        request = pb.LocateRequest(keys=list(keys))
        response = self._unary(self._cache.Locate, request, timeout)
        return common.locations_of(response.locations)

    def stats(self, *, timeout: Timeout = DEFAULT) -> pb.StatsResponse:
        """The server's statistics and each shard's, as the generated
        ``memgate.v1.cache_pb2.StatsResponse``: ``version``,
        ``uptime_seconds``, ``store``, ``counters`` (this server's calls,
        hits, misses, ...) and ``shards`` (one ``ShardStats`` per memcached
        server: ``address``, ``up``, ``error``, ``ring_share``,
        ``backend`` figures, ...). Do not rely on the order of ``shards``;
        find a shard by its ``address``.
        """
        response: pb.StatsResponse = self._unary(self._cache.Stats, pb.StatsRequest(), timeout)
        return response

    # -- health ------------------------------------------------------------

    def health(self, service: str = "", *, timeout: Timeout = DEFAULT) -> str:
        """The server's grpc.health.v1 status: ``"SERVING"`` or ``"NOT_SERVING"``.

        ``""`` is the whole server, ``"memgate.v1.Cache"`` the cache service;
        memgate reports SERVING while at least one memcached shard answers.
        An unknown service raises MemgateError(NOT_FOUND).
        """
        request = health_pb2.HealthCheckRequest(service=service)
        # Without the token: the server keeps health open, and probes of it
        # need no secret.
        response = self._unary(self._health.Check, request, timeout, auth=False)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    # -- plumbing ----------------------------------------------------------

    def _set(self, request: pb.SetRequest, timeout: Timeout) -> SetResult:
        return common.set_result_of(self._unary(self._cache.Set, request, timeout))

    def _release(self, key: str, timeout: Timeout) -> None:
        """Releases get_or_fill's lease on ``key`` after its fill failed, so
        another caller wins at once. A failure here must not hide fill's
        exception, which is what the caller sees; the lease then expires."""
        try:
            self.delete(key, timeout=timeout)
        except MemgateError:
            pass

    def _unary(
        self, method: Callable[..., R], request: object, timeout: Timeout, *, auth: bool = True
    ) -> R:
        """Calls ``method``, with the token unless ``auth`` is False."""
        self._check_open()
        try:
            return method(
                request,
                timeout=common.timeout_for(timeout, self.timeout),
                metadata=self._metadata if auth else None,
            )
        except grpc.RpcError as e:
            raise MemgateError.from_rpc_error(e) from e

    def _client_stream(
        self, method: Callable[..., R], requests: _Requests[Any, Any], timeout: Timeout
    ) -> R:
        try:
            return method(
                requests, timeout=self._stream_deadline(timeout), metadata=self._metadata
            )
        except grpc.RpcError as e:
            requests.reraise(e)

    def _stream_deadline(self, timeout: Timeout) -> Optional[float]:
        self._check_open()
        return common.timeout_for(timeout, self.stream_timeout)

    def _check_open(self) -> None:
        # grpc raises ValueError (sync) or UsageError (aio) here; one
        # ValueError, as for a closed file, is simpler to handle.
        if self._closed:
            raise ValueError(f"{self!r} is closed")

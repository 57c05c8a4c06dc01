from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LeaseState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEASE_STATE_UNSPECIFIED: _ClassVar[LeaseState]
    LEASE_STATE_WON: _ClassVar[LeaseState]
    LEASE_STATE_HELD: _ClassVar[LeaseState]

class SetCondition(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SET_CONDITION_UNSPECIFIED: _ClassVar[SetCondition]
    SET_CONDITION_ABSENT: _ClassVar[SetCondition]
    SET_CONDITION_PRESENT: _ClassVar[SetCondition]
    SET_CONDITION_CAS_MATCH: _ClassVar[SetCondition]
LEASE_STATE_UNSPECIFIED: LeaseState
LEASE_STATE_WON: LeaseState
LEASE_STATE_HELD: LeaseState
SET_CONDITION_UNSPECIFIED: SetCondition
SET_CONDITION_ABSENT: SetCondition
SET_CONDITION_PRESENT: SetCondition
SET_CONDITION_CAS_MATCH: SetCondition

class GetRequest(_message.Message):
    __slots__ = ("key", "touch_ttl_seconds", "lease_ttl_seconds")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TOUCH_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    key: str
    touch_ttl_seconds: int
    lease_ttl_seconds: int
    def __init__(self, key: _Optional[str] = ..., touch_ttl_seconds: _Optional[int] = ..., lease_ttl_seconds: _Optional[int] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("found", "value", "cas", "ttl_remaining_seconds", "lease", "stale")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    TTL_REMAINING_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    value: bytes
    cas: int
    ttl_remaining_seconds: int
    lease: LeaseState
    stale: bool
    def __init__(self, found: bool = ..., value: _Optional[bytes] = ..., cas: _Optional[int] = ..., ttl_remaining_seconds: _Optional[int] = ..., lease: _Optional[_Union[LeaseState, str]] = ..., stale: bool = ...) -> None: ...

class SetRequest(_message.Message):
    __slots__ = ("key", "value", "ttl_seconds", "condition", "cas")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CONDITION_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    ttl_seconds: int
    condition: SetCondition
    cas: int
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ..., ttl_seconds: _Optional[int] = ..., condition: _Optional[_Union[SetCondition, str]] = ..., cas: _Optional[int] = ...) -> None: ...

class SetResponse(_message.Message):
    __slots__ = ("stored", "cas")
    STORED_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    cas: int
    def __init__(self, stored: bool = ..., cas: _Optional[int] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("key", "invalidate")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INVALIDATE_FIELD_NUMBER: _ClassVar[int]
    key: str
    invalidate: bool
    def __init__(self, key: _Optional[str] = ..., invalidate: bool = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: bool = ...) -> None: ...

class ListRequest(_message.Message):
    __slots__ = ("prefix", "limit")
    PREFIX_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    prefix: str
    limit: int
    def __init__(self, prefix: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListResponse(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchGetRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class GetResult(_message.Message):
    __slots__ = ("key", "found", "value", "error", "error_code")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FOUND_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    key: str
    found: bool
    value: bytes
    error: str
    error_code: int
    def __init__(self, key: _Optional[str] = ..., found: bool = ..., value: _Optional[bytes] = ..., error: _Optional[str] = ..., error_code: _Optional[int] = ...) -> None: ...

class BatchGetResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[GetResult]
    def __init__(self, results: _Optional[_Iterable[_Union[GetResult, _Mapping]]] = ...) -> None: ...

class BatchSetRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[SetRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[SetRequest, _Mapping]]] = ...) -> None: ...

class KeyError(_message.Message):
    __slots__ = ("key", "message", "code")
    KEY_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    key: str
    message: str
    code: int
    def __init__(self, key: _Optional[str] = ..., message: _Optional[str] = ..., code: _Optional[int] = ...) -> None: ...

class BatchSetResponse(_message.Message):
    __slots__ = ("stored", "errors")
    STORED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    stored: int
    errors: _containers.RepeatedCompositeFieldContainer[KeyError]
    def __init__(self, stored: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[KeyError, _Mapping]]] = ...) -> None: ...

class BatchDeleteRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class BatchDeleteResponse(_message.Message):
    __slots__ = ("deleted", "errors")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    errors: _containers.RepeatedCompositeFieldContainer[KeyError]
    def __init__(self, deleted: _Optional[int] = ..., errors: _Optional[_Iterable[_Union[KeyError, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("version", "uptime_seconds", "store", "counters", "shards")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STORE_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    uptime_seconds: int
    store: str
    counters: ServerCounters
    shards: _containers.RepeatedCompositeFieldContainer[ShardStats]
    def __init__(self, version: _Optional[str] = ..., uptime_seconds: _Optional[int] = ..., store: _Optional[str] = ..., counters: _Optional[_Union[ServerCounters, _Mapping]] = ..., shards: _Optional[_Iterable[_Union[ShardStats, _Mapping]]] = ...) -> None: ...

class ServerCounters(_message.Message):
    __slots__ = ("methods", "hits", "misses", "inflight_calls", "inflight_bytes", "shed_calls", "shed_bytes_calls", "deduplicated_reads", "list_keys_skipped")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_CALLS_FIELD_NUMBER: _ClassVar[int]
    INFLIGHT_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHED_CALLS_FIELD_NUMBER: _ClassVar[int]
    SHED_BYTES_CALLS_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_READS_FIELD_NUMBER: _ClassVar[int]
    LIST_KEYS_SKIPPED_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[MethodCounters]
    hits: int
    misses: int
    inflight_calls: int
    inflight_bytes: int
    shed_calls: int
    shed_bytes_calls: int
    deduplicated_reads: int
    list_keys_skipped: int
    def __init__(self, methods: _Optional[_Iterable[_Union[MethodCounters, _Mapping]]] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., inflight_calls: _Optional[int] = ..., inflight_bytes: _Optional[int] = ..., shed_calls: _Optional[int] = ..., shed_bytes_calls: _Optional[int] = ..., deduplicated_reads: _Optional[int] = ..., list_keys_skipped: _Optional[int] = ...) -> None: ...

class MethodCounters(_message.Message):
    __slots__ = ("service", "method", "started", "handled", "hits", "misses")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    HANDLED_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    service: str
    method: str
    started: int
    handled: _containers.RepeatedCompositeFieldContainer[CodeCount]
    hits: int
    misses: int
    def __init__(self, service: _Optional[str] = ..., method: _Optional[str] = ..., started: _Optional[int] = ..., handled: _Optional[_Iterable[_Union[CodeCount, _Mapping]]] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ...) -> None: ...

class CodeCount(_message.Message):
    __slots__ = ("code", "name", "count")
    CODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    code: int
    name: str
    count: int
    def __init__(self, code: _Optional[int] = ..., name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ShardStats(_message.Message):
    __slots__ = ("address", "up", "error", "weight", "ring_share", "marked_down", "backend", "counters")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RING_SHARE_FIELD_NUMBER: _ClassVar[int]
    MARKED_DOWN_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    address: str
    up: bool
    error: str
    weight: int
    ring_share: float
    marked_down: bool
    backend: BackendStats
    counters: ShardCounters
    def __init__(self, address: _Optional[str] = ..., up: bool = ..., error: _Optional[str] = ..., weight: _Optional[int] = ..., ring_share: _Optional[float] = ..., marked_down: bool = ..., backend: _Optional[_Union[BackendStats, _Mapping]] = ..., counters: _Optional[_Union[ShardCounters, _Mapping]] = ...) -> None: ...

class BackendStats(_message.Message):
    __slots__ = ("curr_items", "bytes", "limit_maxbytes", "evictions", "get_hits", "get_misses", "uptime_seconds", "version", "curr_connections")
    CURR_ITEMS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    LIMIT_MAXBYTES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    GET_HITS_FIELD_NUMBER: _ClassVar[int]
    GET_MISSES_FIELD_NUMBER: _ClassVar[int]
    UPTIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CURR_CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    curr_items: int
    bytes: int
    limit_maxbytes: int
    evictions: int
    get_hits: int
    get_misses: int
    uptime_seconds: int
    version: str
    curr_connections: int
    def __init__(self, curr_items: _Optional[int] = ..., bytes: _Optional[int] = ..., limit_maxbytes: _Optional[int] = ..., evictions: _Optional[int] = ..., get_hits: _Optional[int] = ..., get_misses: _Optional[int] = ..., uptime_seconds: _Optional[int] = ..., version: _Optional[str] = ..., curr_connections: _Optional[int] = ...) -> None: ...

class ShardCounters(_message.Message):
    __slots__ = ("timeouts", "refused", "io_errors", "protocol_errors", "server_errors", "ejections", "connections", "reconnects")
    TIMEOUTS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    IO_ERRORS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_ERRORS_FIELD_NUMBER: _ClassVar[int]
    SERVER_ERRORS_FIELD_NUMBER: _ClassVar[int]
    EJECTIONS_FIELD_NUMBER: _ClassVar[int]
    CONNECTIONS_FIELD_NUMBER: _ClassVar[int]
    RECONNECTS_FIELD_NUMBER: _ClassVar[int]
    timeouts: int
    refused: int
    io_errors: int
    protocol_errors: int
    server_errors: int
    ejections: int
    connections: int
    reconnects: int
    def __init__(self, timeouts: _Optional[int] = ..., refused: _Optional[int] = ..., io_errors: _Optional[int] = ..., protocol_errors: _Optional[int] = ..., server_errors: _Optional[int] = ..., ejections: _Optional[int] = ..., connections: _Optional[int] = ..., reconnects: _Optional[int] = ...) -> None: ...

class LocateRequest(_message.Message):
    __slots__ = ("keys",)
    KEYS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[str]] = ...) -> None: ...

class LocateResponse(_message.Message):
    __slots__ = ("locations",)
    LOCATIONS_FIELD_NUMBER: _ClassVar[int]
    locations: _containers.RepeatedCompositeFieldContainer[KeyLocation]
    def __init__(self, locations: _Optional[_Iterable[_Union[KeyLocation, _Mapping]]] = ...) -> None: ...

class KeyLocation(_message.Message):
    __slots__ = ("key", "shard", "up")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SHARD_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    key: str
    shard: str
    up: bool
    def __init__(self, key: _Optional[str] = ..., shard: _Optional[str] = ..., up: bool = ...) -> None: ...

class IncrementRequest(_message.Message):
    __slots__ = ("key", "delta", "initial_value", "ttl_seconds")
    KEY_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    INITIAL_VALUE_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    key: str
    delta: int
    initial_value: int
    ttl_seconds: int
    def __init__(self, key: _Optional[str] = ..., delta: _Optional[int] = ..., initial_value: _Optional[int] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class IncrementResponse(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: int
    def __init__(self, value: _Optional[int] = ...) -> None: ...

class TouchRequest(_message.Message):
    __slots__ = ("key", "ttl_seconds")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    key: str
    ttl_seconds: int
    def __init__(self, key: _Optional[str] = ..., ttl_seconds: _Optional[int] = ...) -> None: ...

class TouchResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: bool = ...) -> None: ...

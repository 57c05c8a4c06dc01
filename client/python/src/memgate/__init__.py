"""Python client for memgate, a gRPC cache service in front of sharded memcached.

    import memgate

    with memgate.Client("127.0.0.1:50051") as cache:
        cache.set("greeting", "hello", ttl=60)
        cache.get("greeting")           # b"hello"

``memgate.Client`` blocks; ``memgate.aio.Client`` is its asyncio twin. Both
raise :class:`MemgateError` for every failure. The generated gRPC code is in
``memgate.v1`` for anyone who needs the raw API.
"""

from memgate import aio
from memgate._common import (
    DEFAULT_MAX_MESSAGE_BYTES,
    Condition,
    Item,
    Lease,
    Location,
    SetItem,
    SetResult,
    Value,
)
from memgate._errors import MemgateError
from memgate._sync import Client

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "Client",
    "Condition",
    "Item",
    "Lease",
    "Location",
    "MemgateError",
    "SetItem",
    "SetResult",
    "Value",
    "aio",
    "__version__",
]

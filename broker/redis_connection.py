"""The connection class of every Redis client the broker opens: redis-py's own, with
two costs of its asyncio client (5.x, the newest arq allows) taken out.

- **Commands packed in C.** redis-py's synchronous client packs with hiredis when
  it is installed; its asyncio client always packs in Python, about 6 µs for one
  EVALSHA against 1.4 µs, and 16% of a busy client's time went there
  (benchmarks/README.md). The bytes on the wire are the same.
- **A pooled connection's readiness from what the event loop already read.**
  Before it hands out a connection, the pool asks whether unread data or the
  server's close are waiting on it. redis-py 5 answers with a zero-timeout read:
  a timeout scope, a wait, a loop pass and a cancelled task, for every pooled
  command, the worker's reads and reply pipelines and the client's reads
  included (redis-py 8 answers without reading, for the same reason). Here the
  answer is what the loop already knows: the end of the stream or an error it
  saw, or bytes read and not yet parsed. A close that arrives later is found as
  before, by the command that meets it.

Every connection class the broker uses (plain, TLS, unix socket, Sentinel,
Cluster, a slot owner's) gets both (:func:`broker_connection_class`);
tests/test_redis_connection.py holds them to redis-py's behaviour.
"""

from __future__ import annotations

import functools
from typing import Any, cast

from redis.asyncio.connection import AbstractConnection
from redis.connection import HiredisRespSerializer
from redis.exceptions import ConnectionError as RedisConnectionError

try:
    import hiredis

    PACKS_IN_C = hasattr(hiredis, "pack_command")
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    PACKS_IN_C = False

_PACKER = HiredisRespSerializer()


class HiredisPacking:
    """Mixin for a redis-py asyncio connection class: ``pack_command`` in C.

    ``pack_commands`` (pipelines) calls ``pack_command`` for each command, so
    pipelines pack in C too. Like redis-py's own hiredis serializer it splits
    a command name given with a space ("CONFIG GET"), and a value Redis cannot
    take raises ``DataError``.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        return _PACKER.pack(*args)


class ReadinessFromLoop:
    """Mixin for a redis-py asyncio connection class: ``can_read_destructive`` (the
    pool's check before it hands the connection out) without reading the socket.

    True when bytes came in that no command read; a close or error the loop saw
    raises ConnectionError, on which the pool reconnects, as it does on redis-py's
    own check. A parser without hiredis' reader keeps redis-py's check.
    """

    async def can_read_destructive(self) -> bool:
        conn = cast(AbstractConnection, self)
        parser: Any = conn._parser
        stream: Any = conn._reader
        hiredis_reader: Any = getattr(parser, "_reader", None)
        if stream is None or not hasattr(hiredis_reader, "has_data"):
            return cast(bool, await super().can_read_destructive())  # type: ignore[misc]
        if stream.exception() is not None or stream.at_eof():
            await conn.disconnect(nowait=True)
            raise RedisConnectionError(f"Redis closed the connection to {conn._host_error()}")
        return bool(hiredis_reader.has_data() or len(stream._buffer))


@functools.cache
def broker_connection_class(cls: type) -> type:
    """``cls`` with both mixins (itself when it has them already)."""
    if issubclass(cls, ReadinessFromLoop):
        return cls
    mixins = (HiredisPacking, ReadinessFromLoop) if PACKS_IN_C else (ReadinessFromLoop,)
    return type(cls.__name__, (*mixins, cls), {"__module__": __name__})


def use_broker_connections(holder: Any) -> None:
    """Give a pool (or a cluster node) connections of the broker's class."""
    holder.connection_class = broker_connection_class(holder.connection_class)

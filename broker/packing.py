"""Redis commands packed by hiredis' C packer instead of redis-py's Python one.

redis-py's synchronous client packs with hiredis when it is installed; its
asyncio client (5.x, the newest arq allows) always packs in Python, about
6 µs for one EVALSHA against 1.4 µs, and 16% of a busy client's time went
there (benchmarks/README.md). Every connection class the broker uses gets
this mixin (:func:`packing_class`), so plain, TLS, unix-socket, Sentinel and
Cluster connections all pack alike. The bytes on the wire are the same
(tests/test_command_packing.py); without hiredis nothing changes.
"""

from __future__ import annotations

import functools
from typing import Any

from redis.connection import HiredisRespSerializer

try:
    import hiredis

    AVAILABLE = hasattr(hiredis, "pack_command")
except ImportError:  # pragma: no cover - redis[hiredis] is a dependency
    AVAILABLE = False

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


@functools.cache
def packing_class(cls: type) -> type:
    """``cls`` with hiredis packing (itself when that is there or hiredis is not)."""
    if not AVAILABLE or issubclass(cls, HiredisPacking):
        return cls
    return type(cls.__name__, (HiredisPacking, cls), {"__module__": __name__})


def pack_with_hiredis(holder: Any) -> None:
    """Give a pool (or a cluster node) connections of the hiredis-packing kind."""
    holder.connection_class = packing_class(holder.connection_class)

"""What a long-running process of ours sets up first: its log lines and its event loop."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from collections.abc import Coroutine
from typing import Any

CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore", "openai", "arq")  # a line per call

# Allocations (net of frees) between two young-generation collections of the cyclic
# garbage collector, for our own server processes; CPython's default is 700.
GC_YOUNG_THRESHOLD = 20_000


def configure_logging(level: str) -> None:
    """Log lines to stderr (a worker's log file), without one line per HTTP call."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))


def tune_gc() -> None:
    """Collect young objects after 20,000 allocations instead of CPython's 700.

    A process serving thousands of requests a second allocates in bursts (a
    reply batch, a pipeline's answers), so at 700 the collector ran about once
    per hundred requests, 1.5-2.5 ms each, and found nothing to free: 15-20%
    of an echo client's CPU (benchmarks/README.md). Our request path makes
    almost no reference cycles, so the few it makes wait a little longer.
    Only for processes of ours (workers, node agents, the gateway): a library
    does not change its caller's collector. A higher setting is kept."""
    young, middle, old = gc.get_threshold()
    if young and young < GC_YOUNG_THRESHOLD:  # 0: collection is off, as the user chose
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on uvloop where the ``fast`` extra installed it, else asyncio's loop,
    in a process of ours (:func:`tune_gc`)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)

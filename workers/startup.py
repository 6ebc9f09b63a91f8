"""What a long-running process of ours sets up first: its log lines and its event loop."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

from byzerllm.broker.process_setup import tune_gc

CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore", "openai", "arq")  # a line per call


def configure_logging(level: str) -> None:
    """Log lines to stderr (a worker's log file), without one line per HTTP call."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in CHATTY_LOGGERS:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` on uvloop where the ``fast`` extra installed it, else asyncio's loop,
    in a process of ours (its collector tuned: broker.process_setup)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)

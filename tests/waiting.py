"""Wait for a condition, never for a fixed time.

A loaded 2-core CI machine runs everything slower: a test that sleeps a
guessed time and then asserts is red there. These helpers poll a condition
until it holds, and fail with what was awaited only after a generous limit
(the limit is a hang guard, not a speed expectation).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

LIMIT = 60.0
_INTERVAL = 0.02


async def until(
    condition: Callable[[], Any | Awaitable[Any]], what: str, limit: float = LIMIT
) -> Any:
    """Poll ``condition`` (sync or async) until it returns something truthy; return that."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {limit:.0f}s: {what}")
        await asyncio.sleep(_INTERVAL)


def until_sync(condition: Callable[[], T], what: str, limit: float = LIMIT) -> T:
    """:func:`until` for code outside an event loop."""
    deadline = time.monotonic() + limit
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting after {limit:.0f}s: {what}")
        time.sleep(_INTERVAL)

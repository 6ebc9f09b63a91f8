"""One HTTP call with the retries an SDK would do, for vendors we call with plain httpx.

The openai, anthropic and boto3 clients retry 429s and 5xx themselves; the
TTS vendors have no SDK worth its weight, so this is that loop: exponential
backoff with full jitter, a server's ``Retry-After`` honoured (capped),
transport failures retried like 5xx. A request past its deadline is never
retried: the worker cancels the whole coroutine, sleep included.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from types import ModuleType
from typing import Any

from byzerllm.broker.errors import BackendLoadError
from byzerllm.workers.backends.saas.vendor_errors import is_retryable_status

BASE_DELAY = 0.5
MAX_DELAY = 8.0


def import_httpx(backend: str) -> ModuleType:
    """httpx2 comes with the openai SDK; plain httpx is accepted where that is what is there."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        pass
    try:
        import httpx

        return httpx
    except ImportError as exc:
        raise BackendLoadError(
            f"{backend} needs an HTTP client ({exc}): pip install 'byzerllm[tts]'"
        ) from exc


def retry_delay(attempt: int, headers: Any = None) -> float:
    """Seconds before retry ``attempt`` (0-based): the server's word, else backoff with jitter."""
    if headers is not None:
        for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
            value = headers.get(name)
            if value is not None:
                try:
                    return min(MAX_DELAY, max(0.0, float(value) * scale))
                except ValueError:
                    break  # an HTTP date: fall back to our own backoff
    return random.uniform(0, min(MAX_DELAY, BASE_DELAY * 2**attempt))


async def send_with_retry(
    httpx: ModuleType, send: Callable[[], Awaitable[Any]], max_retries: int
) -> Any:
    """The last response (maybe an error status) or the last transport exception raised."""
    attempt = 0
    while True:
        try:
            response = await send()
        except httpx.TransportError:
            if attempt >= max_retries:
                raise
            await asyncio.sleep(retry_delay(attempt))
        else:
            if not is_retryable_status(response.status_code) or attempt >= max_retries:
                return response
            await response.aclose()
            await asyncio.sleep(retry_delay(attempt, response.headers))
        attempt += 1

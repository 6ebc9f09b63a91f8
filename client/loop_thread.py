"""One background event loop per process for the synchronous API.

Sync calls hand their coroutine to this loop and wait for the result, so
they work the same from plain scripts, threads, and inside an already
running loop (Jupyter), and all share one reply reader.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_shutdown_hooks: list[Callable[[], Coroutine[Any, Any, None]]] = []


def on_shutdown(hook: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``hook()`` on the background loop when the interpreter exits."""
    _shutdown_hooks.append(hook)


@atexit.register
def _shutdown() -> None:
    loop, thread = _loop, _thread
    if loop is None or thread is None or not thread.is_alive():
        return

    async def close() -> None:
        for hook in _shutdown_hooks:
            try:
                await hook()
            except Exception:  # exiting anyway
                pass

    try:
        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=5)
    except Exception:
        pass
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop  # optional extra "fast"

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = _new_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                loop.run_forever()

            _thread = threading.Thread(target=run, name="byzerllm-loop", daemon=True)
            _thread.start()
            ready.wait()
            _loop = loop
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the background loop and wait for its result."""
    loop = background_loop()
    if threading.current_thread() is _thread:
        coro.close()
        raise RuntimeError(
            "a synchronous byzerllm call was made from inside its own loop; "
            "use the async API (AsyncByzerLLM) in coroutines"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        raise


def iterate_sync(agen: AsyncIterator[T]) -> Iterator[T]:
    """Drive an async iterator from synchronous code, closing it if abandoned."""
    try:
        while True:
            try:
                yield run_sync(agen.__anext__())  # type: ignore[arg-type]
            except StopAsyncIteration:
                return
    finally:
        aclose = getattr(agen, "aclose", None)
        if aclose is not None:
            run_sync(aclose())

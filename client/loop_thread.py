"""One background event loop per process for the synchronous API.

Sync calls hand their coroutine to this loop and wait for the result, so
they work the same from plain scripts, threads, and inside an already
running loop (Jupyter), and all share one reply reader.
"""

from __future__ import annotations

import _thread as _thread_module
import asyncio
import atexit
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

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


def new_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where the ``fast`` extra installed it, else asyncio's."""
    try:
        import uvloop  # optional extra "fast"

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def background_loop() -> asyncio.AbstractEventLoop:
    global _loop, _thread
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = new_loop()
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


def is_background_loop(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the one the synchronous API's calls run on."""
    return loop is _loop


def _sync_caller_loop() -> asyncio.AbstractEventLoop:
    """The background loop, for a caller that will block on it (never its own thread)."""
    loop = background_loop()
    if threading.current_thread() is _thread:
        raise RuntimeError(
            "a synchronous byzerllm call was made from inside its own loop; "
            "use the async API (AsyncByzerLLM) in coroutines"
        )
    return loop


class _Handoff(Generic[T]):
    """One coroutine run for a blocked thread: the task releases a lock the thread
    waits on. That is one wake of the loop and one of the caller, without
    ``run_coroutine_threadsafe``'s chained futures (a further loop pass after
    the task ends, and a Condition on the way back)."""

    __slots__ = ("coro", "done", "result", "error", "task")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self.coro = coro
        self.done = _thread_module.allocate_lock()
        self.done.acquire()
        self.result: T | None = None
        self.error: BaseException | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:  # on the loop
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            self.result = await self.coro
        except BaseException as exc:  # the caller's to see, in its own thread
            self.error = exc
        finally:
            self.done.release()

    def cancel(self) -> None:  # on the loop
        if self.task is not None:
            self.task.cancel()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine on the background loop and wait for its result."""
    try:
        loop = _sync_caller_loop()
    except RuntimeError:
        coro.close()
        raise
    handoff = _Handoff(coro)
    loop.call_soon_threadsafe(handoff.start)
    try:
        handoff.done.acquire()
    except KeyboardInterrupt:
        loop.call_soon_threadsafe(handoff.cancel)
        raise
    if handoff.error is not None:
        raise handoff.error
    return handoff.result  # type: ignore[return-value]


# How many items a synchronous stream's pump reads ahead of its consumer. Past
# that, the pump waits and replies stay where the async iterator keeps them (a
# call's queue), as they would for a slow ``async for``; in full (not delta)
# mode each item holds the answer so far, so this also bounds that memory.
READ_AHEAD = 64

_ITEM, _END, _ERROR = 0, 1, 2


class _Pump(Generic[T]):
    """Reads an async iterator on the loop into a thread-safe queue.

    An item that is already there reaches the consumer with no round trip to
    the loop (``iterate_sync`` used to make one per item); the loop is woken
    only to start, to stop, and when the consumer makes room after the pump
    ran ``READ_AHEAD`` items ahead.
    """

    def __init__(self, agen: AsyncIterator[T], loop: asyncio.AbstractEventLoop, ahead: int) -> None:
        self._agen = agen
        self._loop = loop
        self._limit = ahead
        self._items: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._ahead = 0  # items put and not yet taken
        self._paused = False  # the pump waits for room
        self._room: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended = _thread_module.allocate_lock()  # released when the task has ended
        self._ended.acquire()
        self.over = False  # the consumer saw the end or an error

    def start(self) -> None:  # on the loop
        self._room = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        # a callback, not the task's own finally: a task cancelled before its first
        # step never runs its body
        self._task.add_done_callback(lambda _: self._ended.release())

    async def _run(self) -> None:
        agen, room = self._agen, self._room
        assert room is not None
        try:
            async for item in agen:
                with self._lock:
                    self._ahead += 1
                    full = self._ahead >= self._limit
                    if full:
                        self._paused = True
                        room.clear()
                self._items.put((_ITEM, item))
                if full:
                    await room.wait()
            self._items.put((_END, None))
        except asyncio.CancelledError:  # the consumer left: nobody to tell
            raise
        except BaseException as exc:
            self._items.put((_ERROR, exc))
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                await aclose()

    def take(self) -> tuple[int, Any]:
        kind, value = self._items.get()
        if kind != _ITEM:
            self.over = True
            return kind, value
        with self._lock:
            self._ahead -= 1
            resume = self._paused and self._ahead <= self._limit // 2
            if resume:
                self._paused = False
        if resume and self._room is not None:
            self._loop.call_soon_threadsafe(self._room.set)
        return kind, value

    def _cancel(self) -> None:  # on the loop
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        """The consumer left early: stop reading and close the iterator (a stream's
        request is cancelled on its worker), waiting for that unless called on the
        loop itself (a generator collected there) or the loop is gone."""
        if self.over:
            return
        if threading.current_thread() is _thread:
            self._cancel()
            return
        if self._loop.is_closed() or _thread is None or not _thread.is_alive():
            return
        self._loop.call_soon_threadsafe(self._cancel)
        self._ended.acquire()


def iterate_sync(agen: AsyncIterator[T], read_ahead: int = READ_AHEAD) -> Iterator[T]:
    """Drive an async iterator from synchronous code, in order, with its errors
    raised here; closing (or dropping) the generator early closes the iterator."""
    loop = _sync_caller_loop()
    pump = _Pump(agen, loop, read_ahead)
    loop.call_soon_threadsafe(pump.start)
    try:
        while True:
            kind, value = pump.take()
            if kind == _ITEM:
                yield value
            elif kind == _END:
                return
            else:
                raise value
    finally:
        pump.stop()

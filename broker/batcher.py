"""Automatic pipelining: commands issued concurrently share one round trip.

A thousand coroutines each awaiting one command would otherwise need a
thousand connections or wait in line for one. Here every command queued while
a pipeline is in flight goes out together with the next one, and a command
queued while nothing is in flight goes out at once, so a lone caller pays no
extra latency.
"""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from byzerllm.broker.connection import READ_TIMEOUT, answered_within


class CommandBatcher:
    """Pipelines the commands of concurrent callers on ``redis``: best a client made
    with ``timed_reads=False`` (broker.connection), since each round trip is timed
    here, as a whole, against ``read_timeout``."""

    def __init__(self, redis: aioredis.Redis, read_timeout: float = READ_TIMEOUT) -> None:
        self._redis = redis
        self._read_timeout = read_timeout
        self._queue: list[tuple[tuple[Any, ...], asyncio.Future[Any] | None]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="redis-batcher")

    async def call(self, *args: Any) -> Any:
        """Run one command in the next pipeline; its error is raised here."""
        if self._closed:
            raise RuntimeError("the command batcher is closed")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, fut))
        self._wakeup.set()
        self._ensure_running()
        return await fut

    def send(self, *args: Any) -> None:
        """Queue a command whose answer nobody waits for."""
        if self._closed:
            return
        self._queue.append((args, None))
        self._wakeup.set()
        self._ensure_running()

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._queue = self._queue, []
            if not batch:
                if self._closed:
                    return
                continue
            try:
                results = await self._execute(batch)
            except BaseException as exc:  # connection lost: every caller learns it
                for _, fut in batch:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError())
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for (_, fut), result in zip(batch, results, strict=True):
                if fut is None or fut.done():
                    continue
                if isinstance(result, Exception):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def _execute(self, batch: list[tuple[tuple[Any, ...], Any]]) -> list[Any]:
        work = self._round_trip(batch)
        return await answered_within(work, self._read_timeout, f"{len(batch)} command(s)")

    async def _round_trip(self, batch: list[tuple[tuple[Any, ...], Any]]) -> list[Any]:
        if len(batch) == 1:  # a lone command skips the pipeline machinery
            try:
                return [await self._redis.execute_command(*batch[0][0])]
            except ResponseError as exc:
                return [exc]
        pipe = self._redis.pipeline(transaction=False)
        for args, _ in batch:
            pipe.execute_command(*args)
        return await pipe.execute(raise_on_error=False)

    async def aclose(self) -> None:
        """Flush what is queued, then stop."""
        self._closed = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()

"""Concurrent requests of one worker, run as one forward pass.

A worker serves ``worker_concurrency`` requests at once, and embedding or
rerank requests are mostly a few short texts each. One forward pass over
sixteen inputs costs little more than over one, so the inputs of the
requests that are waiting are gathered into one batch: whatever queued
while the model was busy, plus what arrives within ``max_wait`` seconds of
an idle model being asked. Each caller gets back exactly the results of its
own inputs (vectors for texts, scores for query/document pairs).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")  # one input: a text, a (query, document) pair
Result = TypeVar("Result")  # what the model gives for it: a vector, a score


@dataclass(slots=True)
class _Job(Generic[Item, Result]):
    items: list[Item]
    future: asyncio.Future[list[Result]] = field(repr=False)


class MicroBatcher(Generic[Item, Result]):
    """``await submit(items)`` from many tasks; ``run`` sees their items together.

    ``run`` is blocking (a forward pass) and runs in a thread, one call at a
    time; it returns one result per item, in their order. ``max_batch``
    bounds the items gathered into one call (a single larger request still
    runs whole; ``run`` splits it as it needs).
    """

    def __init__(
        self, run: Callable[[list[Item]], list[Result]], max_batch: int, max_wait: float
    ) -> None:
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pending: deque[_Job[Item, Result]] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # forward passes so far, and the most items one of them held
        self.largest_batch = 0

    async def submit(self, items: list[Item]) -> list[Result]:
        if not items:
            return []
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._serve(), name="micro-batcher")
        job: _Job[Item, Result] = _Job(list(items), asyncio.get_running_loop().create_future())
        self._pending.append(job)
        self._arrived.set()
        return await job.future

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._pending:
            self._pending.popleft().future.cancel()

    async def _serve(self) -> None:
        while True:
            jobs = await self._gather()
            items = [item for job in jobs for item in job.items]
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(items))
            try:
                results = await asyncio.to_thread(self._run, items)
            except Exception as exc:
                for job in jobs:
                    _settle(job.future, exc=exc)
                continue
            start = 0
            for job in jobs:
                _settle(job.future, results[start : start + len(job.items)])
                start += len(job.items)

    async def _gather(self) -> list[_Job[Item, Result]]:
        """The next batch: the oldest waiting job, then the ones behind it that fit."""
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if len(self._pending) == 1 and len(self._pending[0].items) < self.max_batch:
                await asyncio.sleep(self.max_wait)  # let the rest of a burst arrive
            jobs = [self._pending.popleft()]
            count = len(jobs[0].items)
            while self._pending and count + len(self._pending[0].items) <= self.max_batch:
                jobs.append(self._pending.popleft())
                count += len(jobs[-1].items)
            jobs = [job for job in jobs if not job.future.done()]  # drop cancelled requests
            if jobs:
                return jobs


def _settle(future: asyncio.Future[Any], result: Any = None, exc: Exception | None = None) -> None:
    """Answer a caller that is still waiting (a cancelled request is not)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)

"""Concurrent embed requests of one worker, run as one forward pass.

A worker serves ``worker_concurrency`` requests at once, and embedding
requests are mostly one short text each. One forward pass over sixteen
texts costs little more than over one, so the texts of the requests that
are waiting are gathered into one batch: whatever queued while the model
was busy, plus what arrives within ``max_wait`` seconds of an idle model
being asked. Each caller gets back exactly the vectors of its own texts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Vectors = list[list[float]]


@dataclass(slots=True)
class _Job:
    texts: list[str]
    future: asyncio.Future[Vectors] = field(repr=False)


class MicroBatcher:
    """``await submit(texts)`` from many tasks; ``run`` sees their texts together.

    ``run`` is blocking (a forward pass) and runs in a thread, one call at a
    time. ``max_batch`` bounds the texts gathered into one call (a single
    larger request still runs whole; ``run`` splits it as it needs).
    """

    def __init__(self, run: Callable[[list[str]], Vectors], max_batch: int, max_wait: float):
        self._run = run
        self.max_batch = max_batch
        self.max_wait = max_wait
        self._pending: deque[_Job] = deque()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # forward passes so far, and the most texts one of them held
        self.largest_batch = 0

    async def submit(self, texts: list[str]) -> Vectors:
        if not texts:
            return []
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._serve(), name="embedding-batcher")
        job = _Job(list(texts), asyncio.get_running_loop().create_future())
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
            texts = [t for job in jobs for t in job.texts]
            self.batches += 1
            self.largest_batch = max(self.largest_batch, len(texts))
            try:
                vectors = await asyncio.to_thread(self._run, texts)
            except Exception as exc:
                for job in jobs:
                    _settle(job.future, exc=exc)
                continue
            start = 0
            for job in jobs:
                _settle(job.future, vectors[start : start + len(job.texts)])
                start += len(job.texts)

    async def _gather(self) -> list[_Job]:
        """The next batch: the oldest waiting job, then the ones behind it that fit."""
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            if len(self._pending) == 1 and len(self._pending[0].texts) < self.max_batch:
                await asyncio.sleep(self.max_wait)  # let the rest of a burst arrive
            jobs = [self._pending.popleft()]
            count = len(jobs[0].texts)
            while self._pending and count + len(self._pending[0].texts) <= self.max_batch:
                jobs.append(self._pending.popleft())
                count += len(jobs[-1].texts)
            jobs = [job for job in jobs if not job.future.done()]  # drop cancelled requests
            if jobs:
                return jobs


def _settle(future: asyncio.Future[Vectors], result: Any = None, exc: Exception | None = None):
    """Answer a caller that is still waiting (a cancelled request is not)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)

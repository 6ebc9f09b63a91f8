"""What every benchmark needs: a private Redis, worker processes, timing helpers."""

from __future__ import annotations

import asyncio
import gc
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.process import WorkerProcess, spawn_worker, wait_ready
from tests.redis_server import RedisServer


@contextmanager
def private_redis() -> Iterator[BrokerSettings]:
    server = RedisServer().start()
    try:
        yield BrokerSettings(redis_url=server.url, prefix="bench")
    finally:
        server.stop()


@contextmanager
def workers(
    settings: BrokerSettings, spec: DeploySpec, count: int
) -> Iterator[list[WorkerProcess]]:
    procs = [spawn_worker(spec, settings) for _ in range(count)]
    try:
        for proc in procs:
            asyncio.run(wait_ready(settings, proc))
        yield procs
    finally:
        for proc in procs:
            proc.stop()
            proc.log_path.unlink(missing_ok=True)  # a temporary file (read above if it failed)


@dataclass
class Latencies:
    samples: list[float]

    def pct(self, q: float) -> float:
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) * 1000

    @property
    def p99(self) -> float:
        return self.pct(0.99)


async def sequential(call: Callable[[], Awaitable[float | None]], n: int) -> Latencies:
    """Latency of ``n`` calls one after another; a call may return its own measure."""
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        measured = await call()
        samples.append(measured if measured is not None else time.perf_counter() - start)
    return Latencies(samples)


async def throughput(call: Callable[[int], Awaitable[object]], n: int, concurrency: int) -> float:
    """Calls per second with ``concurrency`` calls in flight until ``n`` are done."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await call(i)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


def cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far; None off Linux."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CollectorTime:
    """Seconds this process spends in CPython's cyclic garbage collector while the
    ``with`` block runs (``gc.callbacks``), and how many collections that took."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._start = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._start
            self.collections += 1

    def __enter__(self) -> CollectorTime:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

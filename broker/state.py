"""Scheduler state: what the worker hashes hold and how `stat` reads them.

Workers write these hashes (see ``byzerllm.workers``); anything may read them:
the CLI, a dashboard, RedisInsight. Times are epoch seconds as strings.
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from byzerllm.broker.connection import reply_of
from byzerllm.broker.keys import Keys, text

WORKER_FIELDS = (
    "host",
    "pid",
    "backend",
    "max_concurrency",
    "free_slots",
    "total_requests",
    "last_work_time",
    "heartbeat",
    "ready",
    "started",
    "last_error",
)


class WorkerState(BaseModel):
    worker_id: str
    host: str = ""
    pid: int = 0
    backend: str = ""
    max_concurrency: int = 0
    free_slots: int = 0
    total_requests: int = 0
    last_work_time: float = 0.0
    heartbeat: float = 0.0
    ready: bool = False
    started: float = 0.0
    last_error: str = ""
    alive: bool = False

    @classmethod
    def from_hash(cls, worker_id: str, raw: dict[bytes, bytes], alive: bool) -> WorkerState:
        data: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
        data["ready"] = data.get("ready") == "1"
        return cls.model_validate({"worker_id": worker_id, "alive": alive, **data})


class AliasStat(BaseModel):
    """The original's stat fields, plus per-worker details."""

    alias: str
    total_workers: int
    busy_workers: int
    idle_workers: int
    load_balance_strategy: str = "lru"
    total_requests: list[int]
    state: list[int]
    worker_max_concurrency: int
    workers_last_work_time: list[str]
    waiting_requests: int
    workers: list[WorkerState]

    def guide_view(self) -> dict[str, Any]:
        """The JSON the guide shows for `byzerllm stat --model X`."""
        return self.model_dump(
            include={
                "total_workers",
                "busy_workers",
                "idle_workers",
                "load_balance_strategy",
                "total_requests",
                "state",
                "worker_max_concurrency",
                "workers_last_work_time",
            }
        )


async def read_alias_stat(redis: aioredis.Redis, keys: Keys, alias: str) -> AliasStat | None:
    """The live workers of an alias in LRU order (longest idle first), or None if unknown."""
    ak = keys.alias(alias)
    if not await redis.exists(ak.spec):
        return None
    now = time.time()
    alive_ids = [text(m) for m in await redis.zrangebyscore(ak.alive, now, "+inf")]
    scored: list[Any] = await redis.zrange(ak.lru, 0, -1, withscores=True)
    lru_order = {text(m): float(s) for m, s in scored}
    alive_ids.sort(key=lambda w: lru_order.get(w, 0.0))
    pipe = redis.pipeline(transaction=False)
    for wid in alive_ids:
        pipe.hgetall(ak.worker(wid))
    raws = await pipe.execute() if alive_ids else []
    workers = [
        WorkerState.from_hash(wid, raw, alive=True)
        for wid, raw in zip(alive_ids, raws, strict=True)
        if raw
    ]
    waiting = int(await redis.xlen(ak.requests))
    try:
        pending = await redis.xpending(ak.requests, "workers")
        waiting -= int(pending["pending"])
    except Exception:  # no group yet: nothing is pending
        pass
    busy = sum(1 for w in workers if w.free_slots < w.max_concurrency)
    return AliasStat(
        alias=alias,
        total_workers=len(workers),
        busy_workers=busy,
        idle_workers=len(workers) - busy,
        total_requests=[w.total_requests for w in workers],
        state=[w.free_slots for w in workers],
        worker_max_concurrency=max((w.max_concurrency for w in workers), default=0),
        workers_last_work_time=[
            f"{(now - w.last_work_time) if w.last_work_time else now - w.started}s" for w in workers
        ],
        waiting_requests=max(waiting, 0),
        workers=workers,
    )


async def list_aliases(redis: aioredis.Redis, keys: Keys) -> list[str]:
    return sorted(text(m) for m in await reply_of(redis.smembers(keys.models)))

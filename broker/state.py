"""Scheduler state: the worker hashes, written and read through one model.

Workers write their hash (``P:{A}:worker:W``), their heartbeat expiry
(``P:{A}:alive``) and their last work time (``P:{A}:lru``) through the
functions here; anything may read them: the CLI, a dashboard, RedisInsight.
Times are epoch seconds as strings, flags ``"1"``/``"0"``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel

from byzerllm.broker import cluster
from byzerllm.broker.connection import awaitable, unless_answer
from byzerllm.broker.keys import GROUP, AliasKeys, Keys, decoded


class WorkerState(BaseModel):
    """One worker's hash. ``alive`` is not stored: it comes from the alive zset."""

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
    generation: int = 0
    gpu_ids: str = ""
    alive: bool = False

    @classmethod
    def from_hash(cls, worker_id: str, raw: dict[bytes, bytes], alive: bool) -> WorkerState:
        data: dict[str, Any] = {decoded(k): decoded(v) for k, v in raw.items()}
        data["ready"] = data.get("ready") == "1"
        data = {k: v for k, v in data.items() if k in HASH_FIELDS}
        return cls.model_validate({**data, "worker_id": worker_id, "alive": alive})

    def to_hash(self) -> dict[str, str]:
        """Every stored field, as the strings Redis keeps."""
        return hash_fields(**{name: getattr(self, name) for name in HASH_FIELDS})


HASH_FIELDS = tuple(f for f in WorkerState.model_fields if f not in ("worker_id", "alive"))
_HASH_FIELD_SET = frozenset(HASH_FIELDS)


def hash_fields(**values: Any) -> dict[str, str]:
    """Some fields of a worker hash, checked against the model and encoded for Redis."""
    unknown = values.keys() - _HASH_FIELD_SET
    if unknown:
        raise ValueError(f"not worker hash fields: {sorted(unknown)}")
    return {
        name: ("1" if value else "0") if isinstance(value, bool) else str(value)
        for name, value in values.items()
    }


# -- what a worker writes ---------------------------------------------------------------


async def register_worker(
    redis: aioredis.Redis,
    keys: Keys,
    alias: str,
    state: WorkerState,
    spec_fields: dict[str, str],
) -> None:
    """Announce a starting worker; the spec hash is written only when no deployment
    owns it (a worker started by hand describes its own alias)."""
    ak = keys.alias(alias)
    managed = await awaitable(redis.hexists(ak.spec, "managed"))
    pipe = redis.pipeline(transaction=False)
    if not managed:
        pipe.hset(ak.spec, mapping=spec_fields)
    pipe.sadd(keys.models, alias)
    pipe.sadd(ak.workers, state.worker_id)
    pipe.hset(ak.worker(state.worker_id), mapping=state.to_hash())
    await pipe.execute()


async def update_worker(
    redis: aioredis.Redis, ak: AliasKeys, worker_id: str, **values: Any
) -> None:
    """Write some fields of a worker's hash now (e.g. ``ready=True``)."""
    await awaitable(redis.hset(ak.worker(worker_id), mapping=hash_fields(**values)))


async def heartbeat(
    redis: aioredis.Redis,
    ak: AliasKeys,
    worker_id: str,
    *,
    ttl: float,
    free_slots: int,
    held_entries: Sequence[str],
) -> str:
    """Stay alive for ``ttl`` seconds, and keep the entries we hold from looking idle
    (so live peers do not claim them).

    Returns the server's replication id (``master_replid``; empty where INFO is
    not allowed): it changes when Redis restarts or a replica is promoted, so a
    worker learns that writes of its own may have been lost even when it saw no
    error (a restart between two of its commands).
    """
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    pipe.zadd(ak.alive, {worker_id: now + ttl})
    pipe.hset(ak.worker(worker_id), mapping=hash_fields(heartbeat=now, free_slots=free_slots))
    if held_entries:
        held: list[Any] = list(held_entries)
        pipe.xclaim(ak.requests, GROUP, worker_id, 0, held, justid=True)
    if cluster.is_cluster(redis):  # a cluster pipeline refuses INFO: its shard is asked apart
        await pipe.execute()
        return await cluster.replication_id(redis, ak.requests)
    pipe.info("replication")
    *results, info = await pipe.execute(raise_on_error=False)
    for result in results:
        if isinstance(result, Exception):
            raise result
    return str(info.get("master_replid", "")) if isinstance(info, dict) else ""


def stage_worker_state(
    pipe: Any, ak: AliasKeys, worker_id: str, fields: dict[str, str], last_work: float | None
) -> None:
    """Queue coalesced state writes on a pipeline the caller executes (the reply writer's)."""
    if fields:
        pipe.hset(ak.worker(worker_id), mapping=fields)
    if last_work is not None:
        pipe.zadd(ak.lru, {worker_id: last_work})


async def forget_worker(redis: aioredis.Redis, ak: AliasKeys, worker_id: str) -> None:
    """Remove a worker's state; its consumer too once it holds no entry.

    A consumer with pending entries stays, so that a live peer can still
    claim (and answer) them.
    """
    pending = await _pending_by_consumer(redis, ak)
    pipe = redis.pipeline(transaction=False)
    pipe.zrem(ak.alive, worker_id)
    pipe.zrem(ak.lru, worker_id)
    pipe.srem(ak.workers, worker_id)
    pipe.delete(ak.worker(worker_id))
    if worker_id in pending and not pending[worker_id]:
        pipe.xgroup_delconsumer(ak.requests, GROUP, worker_id)
    await pipe.execute()


async def forget_dead_workers(redis: aioredis.Redis, ak: AliasKeys, silent_since: float) -> int:
    """Forget workers whose heartbeat expired before ``silent_since`` and that hold
    nothing; returns how many were forgotten."""
    dead = [decoded(w) for w in await redis.zrangebyscore(ak.alive, "-inf", silent_since)]
    if not dead:
        return 0
    pending = await _pending_by_consumer(redis, ak)
    gone = [w for w in dead if not pending.get(w, 0)]
    for worker_id in gone:
        await forget_worker(redis, ak, worker_id)
    return len(gone)


async def _pending_by_consumer(redis: aioredis.Redis, ak: AliasKeys) -> dict[str, int]:
    """Entries each consumer holds; none before the group exists."""
    consumers = await unless_answer(
        redis.xinfo_consumers(ak.requests, GROUP), "no such key", "NOGROUP", default=[]
    )
    return {decoded(c["name"]): int(c["pending"]) for c in consumers}


# -- what everyone reads ----------------------------------------------------------------


async def read_workers(
    redis: aioredis.Redis, ak: AliasKeys, worker_ids: Iterable[str] | None = None
) -> list[WorkerState]:
    """The live workers (heartbeat not expired) in LRU order, longest idle first.

    With ``worker_ids``, those workers whatever their heartbeat (``alive`` says).
    """
    now = time.time()
    alive_ids = [decoded(m) for m in await redis.zrangebyscore(ak.alive, now, "+inf")]
    ids = alive_ids if worker_ids is None else list(worker_ids)
    scored: list[Any] = await redis.zrange(ak.lru, 0, -1, withscores=True)
    lru_order = {decoded(m): float(s) for m, s in scored}
    ids.sort(key=lambda w: lru_order.get(w, 0.0))
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(ak.worker(worker_id))
    raws = await pipe.execute()
    alive = set(alive_ids)
    return [
        WorkerState.from_hash(worker_id, raw, alive=worker_id in alive)
        for worker_id, raw in zip(ids, raws, strict=True)
        if raw
    ]


async def all_worker_ids(redis: aioredis.Redis, ak: AliasKeys) -> list[str]:
    return sorted(decoded(w) for w in await awaitable(redis.smembers(ak.workers)))


async def ready_workers(
    redis: aioredis.Redis, keys: Keys, alias: str, generation: int | None = None
) -> int:
    """Live, ready workers of the alias (of one deployment generation, if given)."""
    return sum(
        1
        for w in await read_workers(redis, keys.alias(alias))
        if w.ready and (generation is None or w.generation == generation)
    )


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
    workers = await read_workers(redis, ak)
    pending = await _pending_by_consumer(redis, ak)
    waiting = int(await redis.xlen(ak.requests)) - sum(pending.values())
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
    return sorted(decoded(m) for m in await awaitable(redis.smembers(keys.models)))

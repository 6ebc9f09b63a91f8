"""What an HTTP gateway reads about the aliases: which are served, and by what.

Cheap reads of keys the workers and ``deploy`` already write (see keys.py):
two pipelined round trips for the whole model list, one HGET for an alias'
backend type, a PING for readiness.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from byzerllm.broker.connection import awaitable
from byzerllm.broker.keys import Keys, decoded
from byzerllm.broker.state import list_aliases


@dataclass(frozen=True, slots=True)
class ServedModel:
    """An alias with at least one live, ready worker."""

    alias: str
    ready_workers: int
    pretrained_model_type: str
    created: int  # epoch seconds the alias was deployed (or its first worker described it)


async def ping(redis: aioredis.Redis) -> None:
    """Raises (redis-py's error: wrap in redis_errors) when Redis does not answer."""
    await redis.ping()


async def served_models(redis: aioredis.Redis, keys: Keys) -> list[ServedModel]:
    """The aliases that live, ready workers serve now, sorted by name."""
    aliases = await list_aliases(redis, keys)
    if not aliases:
        return []
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for alias in aliases:
        ak = keys.alias(alias)
        pipe.zrangebyscore(ak.alive, now, "+inf")
        pipe.hmget(ak.spec, ["pretrained_model_type", "deployed_at"])
    found = await pipe.execute()
    alive = {alias: [decoded(w) for w in found[2 * i]] for i, alias in enumerate(aliases)}
    pipe = redis.pipeline(transaction=False)
    for alias, workers in alive.items():
        for worker_id in workers:
            pipe.hget(keys.alias(alias).worker(worker_id), "ready")
    ready = iter(await pipe.execute())
    served = []
    for i, alias in enumerate(aliases):
        count = 0
        for _worker in alive[alias]:
            count += decoded(next(ready) or b"") == "1"
        model_type, deployed_at = found[2 * i + 1]
        if count:
            served.append(
                ServedModel(
                    alias=alias,
                    ready_workers=count,
                    pretrained_model_type=decoded(model_type or b""),
                    created=int(float(decoded(deployed_at or b"0") or 0)),
                )
            )
    return served


async def backend_type(redis: aioredis.Redis, keys: Keys, alias: str) -> str | None:
    """The alias' ``pretrained_model_type`` (``saas/openai``, ``custom/auto``, ...);
    None when nothing is deployed under it."""
    value = await awaitable(redis.hget(keys.alias(alias).spec, "pretrained_model_type"))
    return None if value is None else decoded(value)

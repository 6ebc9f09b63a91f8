"""Deployments in Redis: the spec hash of an alias and its lifecycle state.

``state`` moves deploying -> ready (all workers up) or failed / degraded
(workers keep crashing; ``last_error`` says why) -> undeploying -> gone.
``generation`` grows with each forced re-deploy, so workers of an older
generation can be drained while the new ones take over.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis

from byzerllm.broker.connection import reply_of
from byzerllm.broker.keys import Keys, text
from byzerllm.broker.secrets import seal, unseal
from byzerllm.broker.spec import DeploySpec, spec_from_hash

DEPLOYING, READY, FAILED, DEGRADED, UNDEPLOYING = (
    "deploying",
    "ready",
    "failed",
    "degraded",
    "undeploying",
)


async def save(
    redis: aioredis.Redis, keys: Keys, spec: DeploySpec, *, generation: int, max_waiting: int
) -> None:
    """Store the spec (secrets sealed, masked copy for display) as a new generation."""
    ak = keys.alias(spec.alias)
    fields = spec.public_hash(max_waiting)
    fields.update(
        {
            "sealed": seal(spec.infer_params),
            "generation": str(generation),
            "state": DEPLOYING,
            "last_error": "",
            "deployed_at": str(time.time()),
            "managed": "1",
        }
    )
    pipe = redis.pipeline(transaction=True)
    pipe.hset(ak.spec, mapping=fields)
    pipe.sadd(keys.models, spec.alias)
    await pipe.execute()


async def info(redis: aioredis.Redis, keys: Keys, alias: str) -> dict[str, str] | None:
    raw = await reply_of(redis.hgetall(keys.alias(alias).spec))
    return {text(k): text(v) for k, v in raw.items()} if raw else None


async def load(redis: aioredis.Redis, keys: Keys, alias: str) -> DeploySpec | None:
    """The spec with its secrets unsealed (needs the cluster key)."""
    raw: dict[bytes, bytes] = await reply_of(redis.hgetall(keys.alias(alias).spec))
    if not raw:
        return None
    return spec_from_hash(raw, unseal(text(raw.get(b"sealed", b""))))


async def set_state(
    redis: aioredis.Redis, keys: Keys, alias: str, state: str | None, last_error: str | None = None
) -> None:
    """Set the state and/or the last error (kept to its last 4000 characters)."""
    fields: dict[Any, Any] = {}
    if state is not None:
        fields["state"] = state
    if last_error is not None:
        fields["last_error"] = last_error[-4000:]
    if fields:
        await reply_of(redis.hset(keys.alias(alias).spec, mapping=fields))


async def remove(redis: aioredis.Redis, keys: Keys, alias: str) -> None:
    """Delete every key of the alias (after its workers left) and forget the alias."""
    ak = keys.alias(alias)
    worker_ids = [text(w) for w in await reply_of(redis.smembers(ak.workers))]
    pipe = redis.pipeline(transaction=False)
    pipe.delete(
        ak.spec, ak.requests, ak.workers, ak.alive, ak.lru, *(ak.worker(w) for w in worker_ids)
    )
    pipe.srem(keys.models, alias)
    await pipe.execute()


async def publish_control(
    redis: aioredis.Redis, keys: Keys, alias: str, message: dict[str, Any]
) -> None:
    """Tell every worker of the alias (e.g. ``{"op": "drain", "below": 3}``)."""
    await redis.publish(keys.alias(alias).control_channel, json.dumps(message))

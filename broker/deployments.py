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

from byzerllm.broker.connection import awaitable
from byzerllm.broker.keys import AliasKeys, Keys, decoded
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
    raw = await awaitable(redis.hgetall(keys.alias(alias).spec))
    return {decoded(k): decoded(v) for k, v in raw.items()} if raw else None


async def load(redis: aioredis.Redis, keys: Keys, alias: str) -> DeploySpec | None:
    """The spec with its secrets unsealed (needs the cluster key)."""
    raw: dict[bytes, bytes] = await awaitable(redis.hgetall(keys.alias(alias).spec))
    if not raw:
        return None
    return spec_from_hash(raw, unseal(decoded(raw.get(b"sealed", b""))))


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
        await awaitable(redis.hset(keys.alias(alias).spec, mapping=fields))


async def remove(redis: aioredis.Redis, keys: Keys, alias: str) -> None:
    """Delete every key of the alias (after its workers left) and forget the alias."""
    ak = keys.alias(alias)
    worker_ids = [decoded(w) for w in await awaitable(redis.smembers(ak.workers))]
    pipe = redis.pipeline(transaction=False)
    pipe.delete(
        ak.spec, ak.requests, ak.workers, ak.alive, ak.lru, *(ak.worker(w) for w in worker_ids)
    )
    pipe.srem(keys.models, alias)
    await pipe.execute()


class OrderSubscription:
    """A worker's subscription to its alias' cancel and control channels.

    ``next()`` gives ``("cancel", request_id)`` or ``("control", json_text)``,
    or None when nothing came within the timeout.
    """

    def __init__(self, redis: aioredis.Redis, ak: AliasKeys) -> None:
        self._pubsub = redis.pubsub(ignore_subscribe_messages=True)
        self._ak = ak
        self._control = ak.control_channel.encode()

    async def __aenter__(self) -> OrderSubscription:
        await self._pubsub.subscribe(self._ak.cancel_channel, self._ak.control_channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._pubsub.aclose()

    async def next(self, timeout: float = 1.0) -> tuple[str, str] | None:
        message = await self._pubsub.get_message(timeout=timeout)
        if not message or message["type"] != "message":
            return None
        kind = "control" if message["channel"] == self._control else "cancel"
        return kind, decoded(message["data"])


async def exists(redis: aioredis.Redis, keys: Keys, alias: str) -> bool:
    """Whether the alias has a spec (deployed, or described by a worker started by hand)."""
    return bool(await redis.exists(keys.alias(alias).spec))


async def publish_control(
    redis: aioredis.Redis, keys: Keys, alias: str, message: dict[str, Any]
) -> None:
    """Tell every worker of the alias (e.g. ``{"op": "drain", "below": 3}``)."""
    await redis.publish(keys.alias(alias).control_channel, json.dumps(message))

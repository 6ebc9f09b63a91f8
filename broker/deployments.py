"""Deployments in Redis: the spec hash of an alias and its lifecycle state.

``state`` moves deploying -> ready (all workers up) or failed / degraded
(workers keep crashing; ``last_error`` says why) -> undeploying -> gone.
``generation`` grows with each forced re-deploy, so workers of an older
generation can be drained while the new ones take over.

The hash also holds ``sealed``: the whole spec and its generation, sealed with
the cluster key. :func:`load` (how node agents and the workers they start
read a deployment) trusts only that, and refuses a spec whose readable fields
no longer match it: someone who can write to Redis must not be able to point
a worker, and the API key it unseals, at a URL or model of their choosing.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub

from byzerllm.broker import cluster
from byzerllm.broker.connection import awaitable
from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.keys import AliasKeys, Keys, decoded
from byzerllm.broker.secrets import seal, unseal
from byzerllm.broker.spec import DeploySpec

DEPLOYING, READY, FAILED, DEGRADED, UNDEPLOYING = (
    "deploying",
    "ready",
    "failed",
    "degraded",
    "undeploying",
)
SEAL_VERSION = 2  # 1 sealed only the secrets, and left the rest open to changes


async def save(
    redis: aioredis.Redis, keys: Keys, spec: DeploySpec, *, generation: int, max_waiting: int
) -> None:
    """Store the spec as a new generation: sealed whole, plus a masked copy for display."""
    ak = keys.alias(spec.alias)
    fields = {**spec.public_hash(max_waiting), "generation": str(generation)}
    # the readable fields exactly as stored, so load() can tell if one changed
    sealed = {"v": SEAL_VERSION, "spec": spec.model_dump(mode="json"), "fields": dict(fields)}
    fields.update(
        {
            "sealed": seal(sealed),
            "state": DEPLOYING,
            "last_error": "",
            "deployed_at": str(time.time()),
            "managed": "1",
        }
    )
    # not one transaction: on a cluster the spec (the alias' slot) and the list of
    # aliases live on different shards. In this order, a listed alias has a spec.
    pipe = redis.pipeline(transaction=False)
    pipe.hset(ak.spec, mapping=fields)
    pipe.sadd(keys.models, spec.alias)
    await pipe.execute()


async def info(redis: aioredis.Redis, keys: Keys, alias: str) -> dict[str, str] | None:
    raw = await awaitable(redis.hgetall(keys.alias(alias).spec))
    return {decoded(k): decoded(v) for k, v in raw.items()} if raw else None


async def load(redis: aioredis.Redis, keys: Keys, alias: str) -> DeploySpec | None:
    """The deployed spec, secrets included, as it was sealed (needs the cluster
    key); None if nothing is deployed under ``alias``.

    Raises ConfigurationError naming the alias when the stored spec cannot be
    trusted: no seal, a seal that does not open, or fields changed since."""
    raw: dict[bytes, bytes] = await awaitable(redis.hgetall(keys.alias(alias).spec))
    if not raw:
        return None
    return verified_spec(alias, {decoded(k): decoded(v) for k, v in raw.items()})


def verified_spec(alias: str, stored: dict[str, str]) -> DeploySpec:
    """The sealed spec of ``stored`` (a spec hash), checked against its readable fields."""
    redeploy = f"deploy it again (byzerllm deploy --force ... --model {alias})"
    if not stored.get("sealed"):
        raise ConfigurationError(
            f"the spec of {alias!r} in Redis has no seal, so a worker cannot trust it: it was "
            f"not stored by `byzerllm deploy` of this version, or the seal was removed; {redeploy}"
        )
    try:
        sealed = unseal(stored["sealed"])
    except ConfigurationError as exc:
        raise ConfigurationError(f"the spec of {alias!r} cannot be trusted: {exc}") from None
    if sealed.get("v") != SEAL_VERSION or not isinstance(sealed.get("fields"), dict):
        raise ConfigurationError(
            f"the spec of {alias!r} was sealed by an older byzerllm, which did not protect its "
            f"fields; {redeploy}"
        )
    spec = DeploySpec.model_validate(sealed["spec"])
    expected: dict[str, str] = sealed["fields"]
    changed = sorted(name for name, value in expected.items() if stored.get(name) != value)
    if spec.alias != alias:
        changed.append(f"alias (sealed for {spec.alias!r})")
    if changed:
        raise ConfigurationError(
            f"the spec of {alias!r} in Redis was changed after it was deployed "
            f"({', '.join(changed)}); refusing to start a worker from it. Someone or something "
            f"with write access to Redis changed it (see docs/security.md); {redeploy}"
        )
    return spec


def differences(
    alias: str, stored: dict[str, str], spec: DeploySpec, max_waiting: int
) -> list[str] | None:
    """What deploying ``spec`` (with ``max_waiting``) would change in the stored
    deployment ``stored`` (its spec hash): the names of the fields that differ
    (``infer_params.<key>`` per parameter, never a value), empty for the same
    spec; None when the stored spec cannot be read here (no seal, another
    cluster key, changed in Redis).

    Specs compare as sealed, secrets included: the same API key is the same
    spec, though each seal of it reads differently in Redis."""
    if not stored.get("sealed"):
        return None
    try:
        before = verified_spec(alias, stored).model_dump(mode="json")
    except ConfigurationError:
        return None
    after = spec.model_dump(mode="json")
    changed: list[str] = []
    for name, value in after.items():
        if name == "infer_params":
            old, new = before.get(name) or {}, value
            changed += [f"{name}.{k}" for k in sorted({*old, *new}) if old.get(k) != new.get(k)]
        elif before.get(name) != value:
            changed.append(name)
    if stored.get("max_waiting", str(max_waiting)) != str(max_waiting):
        changed.append("max_waiting (BYZERLLM_MAX_WAITING)")
    return changed


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
    """Delete every key of the alias (after its workers left) and forget the alias: its
    figures and dead letters too (run marks expire by themselves)."""
    ak = keys.alias(alias)
    worker_ids = [decoded(w) for w in await awaitable(redis.smembers(ak.workers))]
    pipe = redis.pipeline(transaction=False)
    pipe.delete(
        ak.spec,
        ak.requests,
        ak.dead_letter,
        ak.workers,
        ak.alive,
        ak.lru,
        ak.metrics,
        *(ak.worker(w) for w in worker_ids),
    )
    pipe.srem(keys.models, alias)
    await pipe.execute()


class OrderSubscription:
    """A worker's subscription to its alias' cancel and control channels.

    ``next()`` gives ``("cancel", request_id)`` or ``("control", json_text)``,
    or None when nothing came within the timeout.
    """

    def __init__(self, redis: aioredis.Redis, ak: AliasKeys) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._ak = ak
        self._control = ak.control_channel.encode()

    async def __aenter__(self) -> OrderSubscription:
        channels = (self._ak.cancel_channel, self._ak.control_channel)
        self._pubsub = await cluster.subscribe(self._redis, *channels)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pubsub is not None:
            await cluster.close_pubsub(self._pubsub)

    async def next(self, timeout: float = 1.0) -> tuple[str, str] | None:
        assert self._pubsub is not None, "use OrderSubscription in `async with`"
        message = await self._pubsub.get_message(timeout=timeout)
        if not message or message["type"] not in ("message", "smessage"):
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
    command = await cluster.publish_command(redis)
    await redis.execute_command(command, keys.alias(alias).control_channel, json.dumps(message))

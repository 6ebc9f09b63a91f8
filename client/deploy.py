"""Deploying and undeploying aliases: the control plane's library side.

``deploy`` stores the spec (secrets sealed), places ``num_workers`` workers
on live node agents with enough free CPUs and GPUs, asks each chosen agent
(an arq queue per node) to start one, and waits until all are ready, the
deployment fails, or time runs out. Deploying a ready alias again with the
same spec changes nothing and succeeds (the original did the same); a
different spec needs ``force``, a rolling replacement. ``undeploy`` drains
the workers, answers requests still queued, and removes the alias' keys.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from byzerllm.broker import deployments, requests, state
from byzerllm.broker.connection import connect, redis_errors
from byzerllm.broker.errors import (
    AlreadyDeployedError,
    DeployError,
    ModelNotFoundError,
)
from byzerllm.broker.keys import Keys
from byzerllm.broker.nodes import NodeState, enqueue_start_worker, list_nodes
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.registry import check_deployable

if TYPE_CHECKING:  # redis is broker/'s business; here it only names types
    import redis.asyncio as aioredis


@dataclass
class Progress:
    alias: str
    ready: int
    total: int
    state: str
    # the alias was already deployed, ready, with this very spec: nothing was done
    unchanged: bool = False


def place(spec: DeploySpec, nodes: list[NodeState]) -> list[str]:
    """One node id per worker: the node with the most free GPUs, then CPUs, that fits."""
    free = {n.node_id: [n.free_cpus, n.free_gpus] for n in nodes}
    chosen: list[str] = []
    for _ in range(spec.num_workers):
        fitting = [
            nid
            for nid, (c, g) in free.items()
            if c >= spec.cpus_per_worker and g >= spec.gpus_per_worker
        ]
        if not fitting:
            offer = ", ".join(
                f"{n.node_id}: {n.free_cpus:g} CPUs / {n.free_gpus} GPUs free" for n in nodes
            )
            raise DeployError(
                f"not enough resources for {spec.num_workers} worker(s) of {spec.alias!r} "
                f"needing {spec.cpus_per_worker:g} CPUs and {spec.gpus_per_worker:g} GPUs each "
                f"(placed {len(chosen)}); nodes: {offer or 'none'}. Start more node agents "
                "(byzerllm node start) or ask for less"
            )
        best = max(fitting, key=lambda nid: (free[nid][1], free[nid][0]))
        free[best][0] -= spec.cpus_per_worker
        free[best][1] -= int(spec.gpus_per_worker)
        chosen.append(best)
    return chosen


async def deploy(
    settings: BrokerSettings,
    spec: DeploySpec,
    *,
    force: bool = False,
    timeout: float = 600.0,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progress:
    check_deployable(spec)  # what a worker would refuse, refused before any is placed
    redis = await connect(settings)
    keys = Keys(settings.prefix)
    try:
        with redis_errors(settings):
            return await _deploy(redis, keys, settings, spec, force, timeout, on_progress)
    finally:
        await redis.aclose()


async def _deploy(
    redis: aioredis.Redis,
    keys: Keys,
    settings: BrokerSettings,
    spec: DeploySpec,
    force: bool,
    timeout: float,
    on_progress: Callable[[Progress], None] | None,
) -> Progress:
    existing = await deployments.info(redis, keys, spec.alias)
    if existing and existing.get("state") != deployments.UNDEPLOYING and not force:
        phase = existing.get("state", "unmanaged")
        changed = deployments.differences(spec.alias, existing, spec, settings.max_waiting)
        if changed == [] and phase == deployments.READY:
            return await _unchanged(redis, keys, spec, existing, on_progress)
        if changed:
            how = f"with another spec ({', '.join(changed)} differ)"
        elif changed == []:
            how = f"with this spec, but {phase}"
        else:
            how = f"(state {phase})"
        raise AlreadyDeployedError(
            f"{spec.alias!r} is already deployed {how}; use --force to replace it (rolling, "
            f"without dropping requests) or `byzerllm undeploy --model {spec.alias}` first"
        )
    nodes = await list_nodes(redis, keys)
    if not nodes:
        raise DeployError(
            "no node agent is alive to start workers on; run `byzerllm node start` on each "
            f"host (with --redis_url {settings.safe_url})"
        )
    placement = place(spec, nodes)
    generation = int((existing or {}).get("generation", "0")) + 1
    await deployments.save(
        redis, keys, spec, generation=generation, max_waiting=settings.max_waiting
    )
    await enqueue_start_worker(settings, keys, placement, spec.alias, generation)
    progress = await _wait_ready(redis, keys, spec, generation, timeout, on_progress)
    if existing:  # the new generation serves: let the old one finish and leave
        await deployments.publish_control(
            redis, keys, spec.alias, {"op": "drain", "below": generation}
        )
    await deployments.set_state(redis, keys, spec.alias, deployments.READY)
    progress.state = deployments.READY
    return progress


async def _unchanged(
    redis: aioredis.Redis,
    keys: Keys,
    spec: DeploySpec,
    existing: dict[str, str],
    on_progress: Callable[[Progress], None] | None,
) -> Progress:
    """The ready deployment as it is: the same spec needs no new workers."""
    generation = int(existing.get("generation", "0"))
    ready = await state.ready_workers(redis, keys, spec.alias, generation)
    progress = Progress(spec.alias, ready, spec.num_workers, deployments.READY, unchanged=True)
    if on_progress:
        on_progress(progress)
    return progress


async def _wait_ready(
    redis: aioredis.Redis,
    keys: Keys,
    spec: DeploySpec,
    generation: int,
    timeout: float,
    on_progress: Callable[[Progress], None] | None,
) -> Progress:
    deadline = time.monotonic() + timeout
    while True:
        info = await deployments.info(redis, keys, spec.alias) or {}
        phase = info.get("state", "")
        ready = await state.ready_workers(redis, keys, spec.alias, generation)
        progress = Progress(spec.alias, ready, spec.num_workers, phase)
        if on_progress:
            on_progress(progress)
        if ready >= spec.num_workers:
            return progress
        if phase in (deployments.FAILED, deployments.DEGRADED):
            raise DeployError(
                f"workers of {spec.alias!r} failed to start: {info.get('last_error') or phase}"
            )
        if time.monotonic() > deadline:
            raise DeployError(
                f"only {ready} of {spec.num_workers} worker(s) of {spec.alias!r} were ready "
                f"after {timeout:.0f}s; see `byzerllm stat --model {spec.alias}` and "
                "`byzerllm node list`"
            )
        await asyncio.sleep(0.1)


async def undeploy(settings: BrokerSettings, alias: str, timeout: float = 120.0) -> bool:
    """Drain and remove ``alias``; False if it was not deployed."""
    redis = await connect(settings)
    keys = Keys(settings.prefix)
    try:
        with redis_errors(settings):
            return await _undeploy(redis, keys, alias, timeout)
    finally:
        await redis.aclose()


async def _undeploy(redis: aioredis.Redis, keys: Keys, alias: str, timeout: float) -> bool:
    ak = keys.alias(alias)
    if not await deployments.info(redis, keys, alias):
        return False
    await deployments.set_state(redis, keys, alias, deployments.UNDEPLOYING)
    # in-flight requests may finish within the timeout the caller gave, not the
    # workers' own drain timeout
    order = {"op": "drain", "timeout": timeout}
    await deployments.publish_control(redis, keys, alias, order)
    deadline = time.monotonic() + timeout
    while await state.read_workers(redis, ak) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        await deployments.publish_control(redis, keys, alias, order)
    await requests.answer_queued(
        redis,
        ak,
        queued=ModelNotFoundError(alias, f"{alias!r} was undeployed before this request ran"),
        running=ModelNotFoundError(
            alias,
            f"{alias!r} was undeployed while this request ran: it did not finish within "
            f"the undeploy timeout of {timeout:g}s (undeploy --timeout)",
        ),
    )
    await deployments.remove(redis, keys, alias)
    return True

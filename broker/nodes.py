"""Node agents as the control plane sees them: capacity and liveness in hashes."""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis
from arq.connections import RedisSettings
from pydantic import BaseModel

from byzerllm.broker.connection import awaitable
from byzerllm.broker.keys import Keys, decoded
from byzerllm.broker.settings import BrokerSettings

NODE_TTL = 10.0  # seconds without a heartbeat before a node counts as gone


class NodeState(BaseModel):
    node_id: str
    host: str = ""
    pid: int = 0
    cpus: float = 0.0
    gpus: int = 0
    used_cpus: float = 0.0
    used_gpus: int = 0
    workers: int = 0
    heartbeat: float = 0.0

    @property
    def alive(self) -> bool:
        return time.time() - self.heartbeat < NODE_TTL

    @property
    def free_cpus(self) -> float:
        return self.cpus - self.used_cpus

    @property
    def free_gpus(self) -> int:
        return self.gpus - self.used_gpus


async def report_node(redis: aioredis.Redis, keys: Keys, node: NodeState) -> None:
    """A node agent's capacity and heartbeat; it counts as alive for NODE_TTL."""
    fields = node.model_dump(exclude={"node_id"})
    pipe = redis.pipeline(transaction=False)
    pipe.sadd(keys.nodes, node.node_id)
    pipe.hset(keys.node(node.node_id), mapping={k: str(v) for k, v in fields.items()})
    await pipe.execute()


async def forget_node(redis: aioredis.Redis, keys: Keys, node_id: str) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.srem(keys.nodes, node_id)
    pipe.delete(keys.node(node_id))
    await pipe.execute()


async def list_nodes(redis: aioredis.Redis, keys: Keys, alive_only: bool = True) -> list[NodeState]:
    ids = sorted(decoded(n) for n in await awaitable(redis.smembers(keys.nodes)))
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for node_id in ids:
        pipe.hgetall(keys.node(node_id))
    nodes = []
    for node_id, raw in zip(ids, await pipe.execute(), strict=True):
        if not raw:
            continue
        data: dict[str, Any] = {decoded(k): decoded(v) for k, v in raw.items()}
        node = NodeState.model_validate({"node_id": node_id, **data})
        if node.alive or not alive_only:
            nodes.append(node)
    return nodes


def arq_settings(settings: BrokerSettings) -> RedisSettings:
    """arq's connection settings for the same Redis (TLS and ACL user included)."""
    return RedisSettings.from_dsn(settings.redis_url)

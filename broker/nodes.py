"""Node agents as the control plane sees them, and the queue deploy uses to reach them.

Capacity and liveness live in ``P:node:N``; a node's hash expires
``NODE_EXPIRE`` seconds after its agent last reported, so a SIGKILLed agent
leaves ``byzerllm node list`` by itself.

Jobs for an agent go through arq on ``P:node:{N}:queue``, with two changes to
arq's defaults, both here so that deploy and the agent agree on them:

- Jobs are JSON, never pickles (arq's default serializer): with pickles,
  anyone who can write to Redis runs code in every node agent.
- The connection is redis-py's own, built from the URL exactly as every other
  process builds it (TLS options, ACL user, percent-encoded password), not
  arq's ``RedisSettings.from_dsn``, which drops ``?ssl_ca_certs=`` and does
  not decode the password.

arq names its own keys ``arq:job:<id>``, ``arq:result:<id>``,
``arq:in-progress:<id>``, ``arq:retry:<id>`` and ``arq:abort`` (module
constants it offers no setting for); our job ids start with the prefix, so
those keys read ``arq:job:P:node:{N}:job:...``: an ACL can still tell
installations apart, and on a cluster they share the queue's slot.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from arq import Worker as ArqWorker
from arq.connections import ArqRedis
from arq.typing import WorkerCoroutine
from arq.worker import func
from pydantic import BaseModel
from redis import exceptions as rex

from byzerllm.broker.cluster import SlotOwnerPool
from byzerllm.broker.connection import (
    OutageLog,
    awaitable,
    client_options,
    create_redis,
    raise_if_cancelling,
)
from byzerllm.broker.keys import Keys, decoded
from byzerllm.broker.settings import BrokerSettings

NODE_TTL = 10.0  # seconds without a heartbeat before a node counts as gone
NODE_EXPIRE = 30  # seconds after its last report that Redis deletes a node's hash
START_WORKER = "start_worker"  # the one job a node agent runs

# errors that mean "Redis is not there right now" (BusyLoadingError, a
# restarting server replaying its AOF, is a ConnectionError)
_DOWN = (rex.ConnectionError, rex.TimeoutError, rex.ReadOnlyError, OSError)

log = logging.getLogger(__name__)


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
    """A node agent's capacity and heartbeat; it counts as alive for NODE_TTL,
    and its hash disappears NODE_EXPIRE seconds after the last report."""
    fields = node.model_dump(exclude={"node_id"})
    key = keys.node(node.node_id)
    pipe = redis.pipeline(transaction=False)
    pipe.sadd(keys.nodes, node.node_id)
    pipe.hset(key, mapping={k: str(v) for k, v in fields.items()})
    pipe.expire(key, NODE_EXPIRE)
    await pipe.execute()


async def forget_node(redis: aioredis.Redis, keys: Keys, node_id: str) -> None:
    pipe = redis.pipeline(transaction=False)
    pipe.srem(keys.nodes, node_id)
    pipe.delete(keys.node(node_id))
    await pipe.execute()


async def list_nodes(redis: aioredis.Redis, keys: Keys, alive_only: bool = True) -> list[NodeState]:
    """Nodes with a hash; ids whose hash expired (their agent died) are dropped
    from ``P:nodes`` on the way."""
    ids = sorted(decoded(n) for n in await awaitable(redis.smembers(keys.nodes)))
    if not ids:
        return []
    pipe = redis.pipeline(transaction=False)
    for node_id in ids:
        pipe.hgetall(keys.node(node_id))
    nodes, gone = [], []
    for node_id, raw in zip(ids, await pipe.execute(), strict=True):
        if not raw:
            gone.append(node_id)
            continue
        data: dict[str, Any] = {decoded(k): decoded(v) for k, v in raw.items()}
        node = NodeState.model_validate({"node_id": node_id, **data})
        if node.alive or not alive_only:
            nodes.append(node)
    if gone:
        await awaitable(redis.srem(keys.nodes, *gone))
    return nodes


# -- the job queue ------------------------------------------------------------------------


def dump_job(data: dict[str, Any]) -> bytes:
    """arq's job (and result) record as JSON; a failed job's exception becomes
    its text, since exceptions are not JSON."""
    return json.dumps(data, default=lambda value: f"{type(value).__name__}: {value}").encode()


def load_job(raw: bytes) -> dict[str, Any]:
    """A job record read from Redis: JSON or nothing. Whatever else is there
    (a pickle written by an attacker or an old arq client) is refused, never run."""
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"a job record must be a JSON object, not {type(value).__name__}")
    return value


def job_queue(settings: BrokerSettings, queue_name: str) -> ArqRedis:
    """arq's client for one queue on our own connection pool (the URL parsed by
    redis-py, as everywhere else), with the JSON serializers.

    On a cluster it talks to the master of the queue's slot: arq's transactions
    need one server, and the queue and its jobs' keys share one hash tag.
    """
    target = settings.cluster
    if target is not None:
        pool: aioredis.ConnectionPool = SlotOwnerPool(target, client_options(settings), queue_name)
    else:
        pool = create_redis(settings).connection_pool
    return ArqRedis(pool, job_serializer=dump_job, job_deserializer=load_job)


async def enqueue_start_worker(
    settings: BrokerSettings, keys: Keys, node_ids: list[str], alias: str, generation: int
) -> None:
    """Ask each node (once per entry) to start a worker of ``alias``."""
    for node_id in node_ids:
        queue = job_queue(settings, keys.node_queue(node_id))
        try:
            await queue.enqueue_job(
                START_WORKER,
                alias,
                generation,
                _queue_name=keys.node_queue(node_id),
                _job_id=keys.node_job_id(node_id, uuid.uuid4().hex),
            )
        finally:
            await queue.aclose(close_connection_pool=True)


Hook = Callable[[dict[Any, Any]], Awaitable[None]]


def job_worker(
    settings: BrokerSettings,
    keys: Keys,
    node_id: str,
    *,
    start_worker: WorkerCoroutine,
    on_startup: Hook,
    on_shutdown: Hook,
    outage: OutageLog,
) -> ArqWorker:
    """The arq worker of a node agent: JSON jobs from ``P:node:N:queue``, and
    Redis outages ridden out (logged once through ``outage``) instead of fatal."""
    return _OutageProofWorker(
        functions=[func(start_worker, name=START_WORKER)],
        redis_pool=job_queue(settings, keys.node_queue(node_id)),
        queue_name=keys.node_queue(node_id),
        on_startup=on_startup,
        on_shutdown=on_shutdown,
        handle_signals=True,
        max_jobs=16,
        keep_result=300,
        poll_delay=0.2,
        job_serializer=dump_job,
        job_deserializer=load_job,
        outage=outage,
    )


class _OutageProofWorker(ArqWorker):
    """arq's worker lets any Redis error end its main loop, so a Redis restart
    used to kill the node agent and leave its workers unsupervised. Here a poll
    that finds Redis gone is skipped (the next one reconnects), and shutdown
    still drains the workers when Redis is gone at that moment."""

    def __init__(self, *args: Any, outage: OutageLog, **kwargs: Any) -> None:
        shutdown: Hook = kwargs.pop("on_shutdown")
        self._shut_down = False

        async def shutdown_once(ctx: dict[Any, Any]) -> None:
            if not self._shut_down:
                self._shut_down = True
                await shutdown(ctx)

        super().__init__(*args, on_shutdown=shutdown_once, **kwargs)
        self._outage = outage
        self._shutdown_once = shutdown_once

    async def _poll_iteration(self) -> None:
        try:
            await super()._poll_iteration()
        except _DOWN as exc:
            raise_if_cancelling()
            self._outage.failed(exc)
        else:
            self._outage.recovered()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        """arq takes a job slot before its Redis round trip and keeps it if that
        round trip fails: give the slot back, or every outage would leak one."""
        for job_id in job_ids:
            if self.job_counter >= self.max_jobs:
                return
            running = self.job_counter
            try:
                await super().start_jobs([job_id])
            except _DOWN:
                if self.job_counter > running and job_id.decode() not in self.tasks:
                    self._release_sem_dec_counter_on_complete()
                raise

    async def close(self) -> None:
        try:
            await super().close()
        except _DOWN as exc:  # arq touches Redis before on_shutdown: drain anyway
            self._outage.failed(exc)
            await self._shutdown_once(self.ctx)

"""What the live dashboard shows of every alias, read from Redis in a few round trips.

The gateway's ``/dashboard/data`` polls this every second or two from every
open page, so it must stay cheap whatever the number of aliases: one
SMEMBERS for the aliases, one pipeline for their state and live workers, one
for the worker hashes, and :func:`~byzerllm.broker.metrics.read_metrics`'
own pipeline for the figures. Nothing secret is read: the spec's masked
fields are not, nor the deployment's ``last_error`` (a crashed worker's
output, which may quote anything); the metrics' last error is already safe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from byzerllm.broker.keys import Keys, decoded
from byzerllm.broker.metrics import AliasMetrics, read_metrics
from byzerllm.broker.state import WorkerState, list_aliases

UNMANAGED = "unmanaged"  # a worker started by hand described its alias: no deploy state
UNDEPLOYED = "not deployed"  # known in P:models, but its spec is gone


@dataclass(frozen=True, slots=True)
class NodeWorkers:
    """The live workers of one alias on one host."""

    host: str
    workers: tuple[WorkerState, ...]

    @property
    def busy(self) -> int:
        return sum(1 for w in self.workers if w.free_slots < w.max_concurrency)

    def as_dict(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "busy": self.busy,
            "idle": len(self.workers) - self.busy,
            "workers": [
                {
                    "id": w.worker_id,
                    "pid": w.pid,
                    "ready": w.ready,
                    "busy_slots": max(w.max_concurrency - w.free_slots, 0),
                    "max_concurrency": w.max_concurrency,
                    "total_requests": w.total_requests,
                    "last_work_time": w.last_work_time or None,
                    "gpu_ids": w.gpu_ids,
                }
                for w in self.workers
            ],
        }


@dataclass(frozen=True, slots=True)
class AliasView:
    """One alias as the dashboard shows it: deploy state, workers by host, figures."""

    alias: str
    state: str
    backend: str
    nodes: tuple[NodeWorkers, ...]
    metrics: AliasMetrics

    def as_dict(self) -> dict[str, Any]:
        return {
            "alias": self.alias,
            "state": self.state,
            "backend": self.backend,
            "nodes": [n.as_dict() for n in self.nodes],
            "metrics": self.metrics.as_dict(),
        }


async def read_dashboard(
    redis: aioredis.Redis, keys: Keys, aliases: list[str] | None = None
) -> list[AliasView]:
    """Every deployed alias (or those of ``aliases`` that are), sorted by name."""
    known = await list_aliases(redis, keys)
    if aliases is not None:
        wanted = set(aliases)
        known = [a for a in known if a in wanted]
    if not known:
        return []
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for alias in known:
        ak = keys.alias(alias)
        pipe.hmget(ak.spec, ["state", "pretrained_model_type"])
        pipe.zrangebyscore(ak.alive, now, "+inf")
        pipe.zrange(ak.lru, 0, -1, withscores=True)
    found = await pipe.execute()
    live: dict[str, list[str]] = {}
    for i, alias in enumerate(known):
        lru = {decoded(m): float(s) for m, s in found[3 * i + 2]}
        ids = [decoded(w) for w in found[3 * i + 1]]
        live[alias] = sorted(ids, key=lambda w: lru.get(w, 0.0))  # longest idle first
    pipe = redis.pipeline(transaction=False)
    for alias, ids in live.items():
        for worker_id in ids:
            pipe.hgetall(keys.alias(alias).worker(worker_id))
    raws = iter(await pipe.execute())
    figures = {m.alias: m for m in await read_metrics(redis, keys, known)}
    views = []
    for i, alias in enumerate(known):
        state, backend = (decoded(v) if v is not None else None for v in found[3 * i])
        workers = [
            WorkerState.from_hash(worker_id, raw, alive=True)
            for worker_id, raw in ((w, next(raws)) for w in live[alias])
            if raw  # forgotten between the two reads
        ]
        views.append(
            AliasView(
                alias=alias,
                state=state or (UNMANAGED if backend else UNDEPLOYED),
                backend=backend or "",
                nodes=_by_host(workers),
                metrics=figures[alias],
            )
        )
    return views


def _by_host(workers: list[WorkerState]) -> tuple[NodeWorkers, ...]:
    hosts: dict[str, list[WorkerState]] = {}
    for worker in workers:
        hosts.setdefault(worker.host or "?", []).append(worker)
    return tuple(NodeWorkers(host, tuple(ws)) for host, ws in sorted(hosts.items()))

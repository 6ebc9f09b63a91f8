"""A call to an alias whose workers keep failing says why."""

from __future__ import annotations

import os
import signal

import pytest
import redis.asyncio as aioredis

from byzerllm import NoLiveWorkerError
from tests.test_deploy import Cluster
from tests.waiting import until_sync


async def test_no_live_worker_error_carries_the_deployments_last_error(
    start_worker, llm, settings, keys
):
    worker = await start_worker("echo")
    worker.stop()
    redis = aioredis.Redis.from_url(settings.redis_url)
    # what a node agent records after repeated crashes (see workers/node_agent.py)
    await redis.hset(
        keys.alias("echo").spec,
        mapping={"state": "degraded", "last_error": "CUDA out of memory on gpu 0"},
    )
    await redis.aclose()
    with pytest.raises(NoLiveWorkerError, match="degraded; last error: CUDA out of memory"):
        while True:  # until the stopped worker has left
            await llm.chat_oai("hi")


def test_degraded_clears_once_the_workers_serve_again(settings, tmp_path, sync_redis):
    cluster = Cluster(settings, tmp_path)
    try:
        cluster.node("n1")
        result = cluster.cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "flaky")
        assert result.returncode == 0, result.stderr
        spec_key = f"{settings.prefix}:{{flaky}}:spec"
        for _ in range(3):  # three crashes in a row: the alias is marked degraded
            pid = until_sync(lambda: _ready_pid(cluster, "flaky"), "a ready worker")
            os.kill(pid, signal.SIGKILL)
            until_sync(lambda p=pid: _ready_pid(cluster, "flaky") not in (None, p), "a restart")
        assert sync_redis.hget(spec_key, "state") in (b"degraded", b"ready")

        def recovered() -> bool:
            fields = sync_redis.hgetall(spec_key)
            return fields.get(b"state") == b"ready" and not fields.get(b"last_error")

        until_sync(recovered, "the alias ready again, its last error cleared")
        answered = cluster.cli("query", "--model", "flaky", "--query", "back again")
        assert answered.returncode == 0 and "back again" in answered.stdout, answered.stderr
    finally:
        cluster.stop()


def _ready_pid(cluster: Cluster, alias: str) -> int | None:
    import asyncio

    from byzerllm.broker.keys import Keys
    from byzerllm.broker.state import read_workers

    async def pids() -> list[int]:
        redis = aioredis.Redis.from_url(cluster.settings.redis_url)
        try:
            workers = await read_workers(redis, Keys(cluster.settings.prefix).alias(alias))
        finally:
            await redis.aclose()
        return [w.pid for w in workers if w.ready]

    found = asyncio.run(pids())
    return found[0] if found else None

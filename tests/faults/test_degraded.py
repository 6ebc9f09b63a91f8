"""A call to an alias whose workers keep failing says why."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from byzerllm import NoLiveWorkerError


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

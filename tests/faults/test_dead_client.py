"""A dead client's requests stop on the worker, streaming or not."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import redis.asyncio as aioredis

from tests.waiting import until

CLIENT = """
import asyncio, sys
from byzerllm.client.llm import AsyncByzerLLM

async def main():
    llm = AsyncByzerLLM(default_model_name="echo")
    print(llm.channel.reply_key, flush=True)
    await llm.chat_oai("one two three")  # not streamed: nothing is written until the end

asyncio.run(main())
"""


async def test_a_killed_clients_non_streaming_request_stops(start_worker, settings):
    # an hour between words: only noticing the client is gone ends this request
    worker = await start_worker("echo", delay=3600)
    env = {
        **os.environ,
        "BYZERLLM_REDIS_URL": settings.redis_url,
        "BYZERLLM_PREFIX": settings.prefix,
    }
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert client.stdout is not None
        reply_key = client.stdout.readline().strip()
        await until(lambda: worker._inflight, "the request running on the worker")
        client.send_signal(signal.SIGKILL)
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
    redis = aioredis.Redis.from_url(settings.redis_url)
    await redis.delete(reply_key)  # what expiry does 60 s after its client died
    await redis.aclose()
    await until(lambda: not worker._inflight, "the worker to stop the dead client's request")

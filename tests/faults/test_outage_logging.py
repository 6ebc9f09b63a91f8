"""A worker says once that writing replies fails while Redis is down, and once that
it works again, instead of a line every retry (several a second per worker)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.llm import AsyncByzerLLM
from tests.redis_server import RedisServer
from tests.waiting import LIMIT, until


@pytest.fixture
def durable_redis():
    """A Redis whose data survives a restart on the same port (AOF in its dir)."""
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always").start()
    yield server
    server.stop()


async def test_reply_writes_through_an_outage_log_one_line_each_way(
    start_worker, durable_redis, caplog
):
    caplog.set_level(logging.WARNING, logger="byzerllm.workers.reply_writer")
    settings = BrokerSettings(redis_url=durable_redis.url, prefix="outage")
    await start_worker("echo", delay=0.05, chunks=400, settings_=settings)
    llm = AsyncByzerLLM(settings=settings, default_model_name="echo")
    stream = llm.stream_chat_oai(" ".join(f"w{i}" for i in range(400)), delta_mode=True)
    await asyncio.wait_for(stream.__anext__(), LIMIT)

    assert durable_redis.proc is not None
    durable_redis.proc.terminate()  # Redis goes away while the worker streams
    durable_redis.proc.wait(10)

    def failed_lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if "writing replies" in r.getMessage()]

    # the writer retries every 0.5 s: by the third retry the old code had logged three lines
    await until(lambda: len(failed_lines()) >= 1, "the writer to notice")
    await asyncio.sleep(2)  # several retries while Redis is down (the point of the test)
    durable_redis.start()
    await until(lambda: any("works again" in line for line in failed_lines()), "recovery")
    lines = failed_lines()
    assert len(lines) == 2, lines
    assert "failed" in lines[0] and "works again" in lines[1]
    await stream.aclose()
    await llm.aclose()

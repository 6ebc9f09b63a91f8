"""A client whose reply stream is lost hears so in seconds, not at its deadline."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from byzerllm import BrokerUnavailableError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.llm import AsyncByzerLLM
from tests.redis_server import RedisServer
from tests.waiting import LIMIT


@pytest.fixture
def own_redis():
    server = RedisServer().start()
    yield server
    server.stop()


async def test_calls_end_with_a_clear_error_when_redis_comes_back_empty(start_worker, own_redis):
    settings = BrokerSettings(redis_url=own_redis.url, prefix="lost")
    await start_worker("echo", delay=3600, settings_=settings)  # an hour between words
    llm = AsyncByzerLLM(settings=settings, default_model_name="echo")  # deadline: 30 min
    stream = llm.stream_chat_oai("one two three", delta_mode=True)
    first, _ = await asyncio.wait_for(stream.__anext__(), LIMIT)
    assert first == "one "
    waiting = asyncio.create_task(llm.chat_oai("a whole answer, please"))
    admin = aioredis.Redis.from_url(own_redis.url)
    await admin.flushall()  # what a restart without persistence looks like
    await admin.aclose()
    with pytest.raises(BrokerUnavailableError, match="reply stream"):
        await asyncio.wait_for(stream.__anext__(), LIMIT)
    with pytest.raises(BrokerUnavailableError, match="reply stream"):
        await asyncio.wait_for(waiting, LIMIT)
    await llm.aclose()

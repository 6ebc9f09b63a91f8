"""The client's reply reader holds no blocked XREAD while no call waits for replies,
and reads again as soon as one is submitted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.channel import _channels, channel_for
from byzerllm.client.sync import ByzerLLM
from tests.redis_server import RedisServer
from tests.waiting import LIMIT, until, until_sync


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


# A Redis of this module's own: on the session's shared one, clients that other tests
# left open hold blocked reads of their own. (The conftest's worker and client
# fixtures take these two.)
@pytest.fixture
def settings(own_redis: RedisServer) -> BrokerSettings:
    return BrokerSettings(redis_url=own_redis.url, prefix="idle")


@pytest.fixture
def sync_redis(own_redis: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(own_redis.url)
    yield client
    client.close()


def blocked_reads(sync_redis: redis.Redis) -> int:
    """Connections blocked in an XREAD: only a client's reply reader sends one
    (workers read with XREADGROUP)."""
    return sum(1 for c in sync_redis.client_list() if c["cmd"] == "xread" and "b" in c["flags"])


async def test_no_read_is_held_between_calls_and_one_is_sent_for_the_next(
    start_worker, llm, sync_redis
):
    await start_worker("echo", delay=3600)  # an hour between the words of a stream
    [answer] = await llm.chat_oai("one")
    assert answer.output == "one"
    channel = channel_for(llm.settings)
    await until(lambda: channel.reader_parked, "the reader parks once no call waits")
    assert blocked_reads(sync_redis) == 0

    stream = llm.stream_chat_oai("two three", delta_mode=True)
    first, _ = await asyncio.wait_for(stream.__anext__(), LIMIT)
    assert first == "two "
    await until(lambda: blocked_reads(sync_redis) == 1, "a blocked XREAD for the streaming call")
    assert not channel.reader_parked
    await stream.aclose()
    await until(lambda: channel.reader_parked, "the reader parks again after the stream ends")

    for i in range(20):  # each call submitted while the reader is parked is answered
        [answer] = await llm.chat_oai(f"call{i}")  # one word: no delay
        assert answer.output == f"call{i}"


def test_sync_calls_in_a_row_each_get_their_answer(worker_procs, settings, sync_redis):
    worker_procs.start("echo")
    llm = ByzerLLM(settings=settings)
    llm.setup_default_model_name("echo")
    try:
        for i in range(50):
            [answer] = llm.chat_oai(f"call {i}")
            assert answer.output == f"call {i}"
        [channel] = [c for _, c in _channels.values() if c.settings == settings]
        until_sync(lambda: channel.reader_parked, "the background loop's reader parks")
        assert blocked_reads(sync_redis) == 0
    finally:
        llm.close()

"""The client's command batcher against a real Redis: a lone command goes out at
once, commands issued while one is on the wire share the next round trip, and
each caller gets its own answer or error."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ResponseError, TimeoutError

from byzerllm.broker.batcher import CommandBatcher
from byzerllm.broker.connection import create_redis
from byzerllm.broker.settings import BrokerSettings


async def _reads_processed(redis) -> int:
    return int((await redis.info("stats"))["total_reads_processed"])


@pytest.fixture
async def redis(settings: BrokerSettings):
    client = create_redis(settings, timed_reads=False)  # as the client's channel makes it
    yield client
    await client.aclose()


async def test_lone_commands_answer_in_order(redis):
    batcher = CommandBatcher(redis)
    for i in range(5):
        assert await batcher.call("SET", f"batch:{i}", i) is True
        assert await batcher.call("GET", f"batch:{i}") == str(i).encode()
    await batcher.aclose()


async def test_commands_issued_together_share_round_trips(redis, settings):
    observer = create_redis(settings)
    batcher = CommandBatcher(redis)
    await batcher.call("PING")  # the connection is open
    before = await _reads_processed(observer)
    results = await asyncio.gather(*(batcher.call("INCR", "batch:counter") for _ in range(200)))
    reads = await _reads_processed(observer) - before - 1  # the observer's own INFO
    assert sorted(results) == list(range(results[0], results[0] + 200))
    # one for the first command, then the rest in a pipeline or a few
    assert reads < 20, reads
    await batcher.aclose()
    await observer.aclose()


async def test_each_caller_gets_its_own_error(redis):
    batcher = CommandBatcher(redis)
    await redis.set("batch:text", "not a number")
    calls = [
        batcher.call("INCR", "batch:n"),
        batcher.call("INCR", "batch:text"),
        batcher.call("INCR", "batch:n"),
    ]
    first, bad, last = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(bad, ResponseError)
    assert last == first + 1
    with pytest.raises(ResponseError):  # a lone command's error, too
        await batcher.call("INCR", "batch:text")
    await batcher.aclose()


async def test_a_cancelled_caller_leaves_the_batcher_working(redis):
    batcher = CommandBatcher(redis)
    blocked = asyncio.create_task(batcher.call("BLPOP", "batch:never", 1))
    queued = asyncio.create_task(batcher.call("PING"))
    await asyncio.sleep(0)  # both issued: the BLPOP on the wire, the PING queued
    blocked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await blocked
    assert await asyncio.wait_for(queued, 10) is True
    assert await batcher.call("PING") is True
    await batcher.aclose()


async def test_close_sends_what_was_queued(redis):
    await redis.delete("batch:sent")
    batcher = CommandBatcher(redis)
    busy = asyncio.create_task(batcher.call("SET", "batch:first", 1))
    for i in range(10):
        batcher.send("RPUSH", "batch:sent", i)  # nobody waits for these
    await busy
    await batcher.aclose()
    assert await redis.lrange("batch:sent", 0, -1) == [str(i).encode() for i in range(10)]
    with pytest.raises(RuntimeError, match="closed"):
        await batcher.call("PING")


async def test_a_round_trip_past_the_read_timeout_fails_and_the_next_one_works(redis):
    """The batcher times each round trip itself (its client times no reply)."""
    batcher = CommandBatcher(redis, read_timeout=0.2)
    with pytest.raises(TimeoutError, match=r"did not answer 1 command\(s\) within 0.2 s"):
        await batcher.call("BLPOP", "batch:never", 5)  # Redis answers after 5 s
    assert await batcher.call("PING") is True  # on a fresh connection
    await batcher.aclose()

"""Hand-written rogue entries on a request stream: none of them poisons the worker."""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis

from byzerllm.broker.messages import FIELD, Request, RequestKind, encode_request
from tests.waiting import LIMIT, until

WORDS = " ".join(f"w{i}" for i in range(30))


async def _add_request(settings, keys, reply_to: str, text: str) -> str:
    payload = {"conversations": [{"role": "user", "content": text}], "stream": True}
    request = Request.new("echo", RequestKind.CHAT, payload, reply_to, timeout=60)
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        await redis.xadd(keys.alias("echo").requests, {FIELD: encode_request(request)})
    finally:
        await redis.aclose()
    return request.id


async def _stream_beside(llm, rogue) -> str:
    """A normal stream, with the rogue entry added once its first words came."""
    stream = llm.stream_chat_oai(WORDS, delta_mode=True)
    first, _ = await asyncio.wait_for(stream.__anext__(), LIMIT)
    await rogue()
    rest = [t async for t, _ in stream]
    return first + "".join(rest)


async def test_a_reply_to_outside_the_reply_streams_is_dead_lettered(
    start_worker, llm, settings, keys
):
    worker = await start_worker("echo", delay=0.02, concurrency=4)
    spec_key = keys.alias("echo").spec  # a hash: an XADD there fails

    async def rogue() -> None:
        await _add_request(settings, keys, spec_key, "rogue words")

    assert await _stream_beside(llm, rogue) == WORDS  # not a word twice
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        dead = keys.alias("echo").dead_letter
        [(_, fields)] = await until(lambda: redis.xrange(dead), "the rogue entry dead-lettered")
        assert b"is not a reply stream of this prefix" in fields[b"reason"]
        assert await redis.type(spec_key) == b"hash"  # nothing was written into it
    finally:
        await redis.aclose()
    [r] = await llm.chat_oai("still serving")
    assert r.output == "still serving" and not worker._inflight


async def test_a_reply_stream_that_cannot_be_written_is_dropped_once(
    start_worker, llm, settings, keys, caplog
):
    await start_worker("echo", delay=0.02, concurrency=4)
    squatted = keys.reply("squatted")
    redis = aioredis.Redis.from_url(settings.redis_url)
    await redis.hset(squatted, "not", "a stream")  # the right name, the wrong type

    async def rogue() -> None:
        await _add_request(settings, keys, squatted, "one two three four five six")

    with caplog.at_level(logging.WARNING, logger="byzerllm.workers.reply_writer"):
        assert await _stream_beside(llm, rogue) == WORDS  # no reply sent twice
        await until(
            lambda: any("dropping" in r.getMessage() for r in caplog.records), "the drop logged"
        )
        [r] = await llm.chat_oai("still serving")
        assert r.output == "still serving"
    drops = [r for r in caplog.records if "dropping" in r.getMessage()]
    assert len(drops) == 1, [r.getMessage() for r in drops]
    assert "WRONGTYPE" in drops[0].getMessage()
    await redis.aclose()

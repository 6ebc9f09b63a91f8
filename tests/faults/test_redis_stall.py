"""A stalled Redis is not a missing worker: calls made through a stall are served."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from tests.waiting import LIMIT


async def test_calls_through_a_client_pause_are_answered_not_refused(start_worker, llm, settings):
    # FAST timing: a heartbeat lives 1 s, so a 3 s pause outlives every worker's
    await start_worker("echo", concurrency=16)
    await start_worker("echo", concurrency=16)
    [warm] = await llm.chat_oai("warm")
    assert warm.output == "warm"
    admin = aioredis.Redis.from_url(settings.redis_url)
    try:
        await admin.execute_command("CLIENT", "PAUSE", 3000)
        calls = [asyncio.create_task(llm.chat_oai(f"through the stall {i}")) for i in range(20)]
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), LIMIT)
    finally:
        await admin.aclose()
    refused = [r for r in results if isinstance(r, BaseException)]
    assert not refused, refused[:3]
    assert [r[0].output for r in results] == [f"through the stall {i}" for i in range(20)]

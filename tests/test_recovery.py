"""Failures a user would notice: dead workers, bad entries, cancels, shutdowns."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgpack
import redis.asyncio as aioredis

from byzerllm.broker.keys import GROUP
from byzerllm.broker.state import read_alias_stat
from tests.waiting import LIMIT, until

T = TypeVar("T")


async def _busy_worker_pid(settings, keys, alias: str) -> int:
    redis = aioredis.Redis.from_url(settings.redis_url)

    async def busy_pid() -> int | None:
        stat = await read_alias_stat(redis, keys, alias)
        busy = [w for w in stat.workers if w.free_slots < w.max_concurrency] if stat else []
        return busy[0].pid if busy else None

    try:
        return await until(busy_pid, f"a worker of {alias} to be busy")
    finally:
        await redis.aclose()


async def test_sigkilled_worker_request_is_finished_by_another_without_duplicates(
    worker_procs, settings, keys, llm
):
    procs = [worker_procs.start("echo", "delay=0.15") for _ in range(2)]
    text = " ".join(f"w{i}" for i in range(16))  # 16 chunks: ~2.3 s
    stream = llm.stream_chat_oai(text, delta_mode=True)
    got = [(await stream.__anext__())[0] for _ in range(3)]
    victim = await _busy_worker_pid(settings, keys, "echo")
    next(p for p in procs if p.pid == victim).proc.send_signal(signal.SIGKILL)
    items = [item async for item in stream]
    got += [delta for delta, _ in items]
    assert "".join(got) == text
    survivor = next(p for p in procs if p.pid != victim).pid
    assert items[-1][1].extra_info["worker_id"].split("-")[-2] == str(survivor)


async def test_sigkilled_worker_non_streaming_request_is_answered(
    worker_procs, settings, keys, llm
):
    procs = [worker_procs.start("echo", "delay=0.1") for _ in range(2)]
    text = " ".join(f"x{i}" for i in range(20))
    task = asyncio.create_task(llm.chat_oai(text))
    victim = await _busy_worker_pid(settings, keys, "echo")
    next(p for p in procs if p.pid == victim).proc.send_signal(signal.SIGKILL)
    [response] = await asyncio.wait_for(task, 30)
    assert response.output == text
    survivor = next(p for p in procs if p.pid != victim).pid
    assert response.metadata["worker_id"].split("-")[-2] == str(survivor)


async def test_malformed_request_entries_are_dead_lettered_and_acked(
    start_worker, llm, keys, settings
):
    await start_worker("echo")
    ak = keys.alias("echo")
    redis = aioredis.Redis.from_url(settings.redis_url)
    await redis.xadd(ak.requests, {"m": b"\xc1 not msgpack"})
    await redis.xadd(ak.requests, {"other": "field"})
    await redis.xadd(ak.requests, {"m": msgpack.packb({"v": 1, "id": "x"})})
    [response] = await llm.chat_oai("still serving")
    assert response.output == "still serving"
    dead = await until(
        lambda: _when(redis.xrange(ak.dead_letter), lambda d: len(d) == 3),
        "three dead letters",
    )
    reasons = sorted(fields[b"reason"].decode() for _, fields in dead)
    assert any("not msgpack" in r for r in reasons)
    assert any("no 'm' field" in r for r in reasons)
    assert any("invalid request entry" in r for r in reasons)
    pending = await redis.xpending(ak.requests, GROUP)
    assert pending["pending"] == 0
    await redis.aclose()


async def test_malformed_reply_entry_does_not_break_the_client(start_worker, llm, settings, keys):
    await start_worker("echo")
    await llm.chat_oai("warm up")
    redis = aioredis.Redis.from_url(settings.redis_url)
    await redis.xadd(llm.channel.reply_key, {"m": b"\xc1garbage"})
    [response] = await llm.chat_oai("after garbage")
    assert response.output == "after garbage"
    dead = await until(lambda: redis.xrange(keys.dead_letter), "a dead letter")
    assert b"not msgpack" in dead[0][1][b"reason"]
    await redis.aclose()


async def _when(value: Awaitable[T], test: Callable[[T], bool]) -> T | None:
    """``value`` once awaited, if it passes ``test``."""
    result = await value
    return result if test(result) else None


async def _wait_idle(settings, keys, alias: str) -> None:
    """Until the alias' workers report no request in flight (in Redis, as `stat` shows)."""
    redis = aioredis.Redis.from_url(settings.redis_url)

    async def idle() -> bool:
        stat = await read_alias_stat(redis, keys, alias)
        return bool(stat and stat.workers and stat.busy_workers == 0)

    try:
        await until(idle, f"the workers of {alias} to be idle")
    finally:
        await redis.aclose()


# Below, a request would take 30 hours to finish on its own (an hour between
# words): a worker that turns idle has stopped it. Each test first waits until
# Redis shows the worker busy, so that "idle" is not the state before it started.
SLOW = 3600


async def test_leaving_a_stream_early_stops_generation_on_the_worker(
    start_worker, llm, settings, keys
):
    await start_worker("echo", delay=SLOW)
    stream = llm.stream_chat_oai(" ".join(["word"] * 30), delta_mode=True)
    await stream.__anext__()
    await _busy_worker_pid(settings, keys, "echo")
    await stream.aclose()
    await _wait_idle(settings, keys, "echo")


async def test_cancelled_task_stops_generation_on_the_worker(start_worker, llm, settings, keys):
    await start_worker("echo", delay=SLOW)
    task = asyncio.create_task(llm.chat_oai(" ".join(["word"] * 30)))
    await _busy_worker_pid(settings, keys, "echo")
    task.cancel()
    await _wait_idle(settings, keys, "echo")


async def test_vanished_client_stops_generation(start_worker, llm, settings, keys):
    # the worker learns that the client is gone when its next delta finds no reply
    # stream, so words keep coming here; the whole answer would take ten minutes,
    # far past the wait for the worker to go idle
    await start_worker("echo", delay=0.1)
    stream = llm.stream_chat_oai(" ".join(["word"] * 6000), delta_mode=True)
    await stream.__anext__()
    await _busy_worker_pid(settings, keys, "echo")
    redis = aioredis.Redis.from_url(settings.redis_url)
    await redis.delete(llm.channel.reply_key)  # what expiry does when a client dies
    await redis.aclose()
    await _wait_idle(settings, keys, "echo")
    await asyncio.wait_for(stream.aclose(), LIMIT)


async def test_sigterm_drains_in_flight_requests(worker_procs, llm, settings, keys):
    proc = worker_procs.start("echo", "delay=0.1").proc
    text = " ".join(f"d{i}" for i in range(12))  # ~1.1 s
    task = asyncio.create_task(llm.chat_oai(text))
    await _busy_worker_pid(settings, keys, "echo")
    proc.send_signal(signal.SIGTERM)
    [response] = await asyncio.wait_for(task, 15)
    assert response.output == text
    assert await asyncio.to_thread(proc.wait, 15) == 0
    redis = aioredis.Redis.from_url(settings.redis_url)
    assert await redis.zcard(keys.alias("echo").alive) == 0
    await redis.aclose()

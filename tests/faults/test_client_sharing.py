"""Clients of one process share a channel, but closing one ends only its own calls."""

from __future__ import annotations

import asyncio
import threading

import pytest

from byzerllm import ByzerLLM, RequestCancelledError, RequestTooLargeError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.llm import AsyncByzerLLM
from tests.waiting import LIMIT, until

WORDS = " ".join(f"w{i}" for i in range(12))


async def test_closing_one_client_leaves_the_others_calls_alone(start_worker, settings):
    worker = await start_worker("echo", delay=0.05, concurrency=8)
    a = AsyncByzerLLM(settings=settings, default_model_name="echo")
    b = AsyncByzerLLM(settings=settings, default_model_name="echo")
    assert a.channel is b.channel  # one reader for the process
    stream = b.stream_chat_oai(WORDS, delta_mode=True)
    first, _ = await asyncio.wait_for(stream.__anext__(), LIMIT)
    await a.aclose()
    rest = await asyncio.wait_for(_rest(stream), LIMIT)
    assert first + rest == WORDS, "the other client's stream was cut"
    [again] = await asyncio.wait_for(b.chat_oai("still here"), LIMIT)
    assert again.output == "still here"
    await b.aclose()
    await until(lambda: not worker._inflight, "the worker idle")


async def _rest(stream) -> str:
    return "".join([t async for t, _ in stream])


async def test_a_closed_clients_own_calls_end_at_once(start_worker, settings):
    await start_worker("echo", delay=3600)  # an hour between words
    a = AsyncByzerLLM(settings=settings, default_model_name="echo")
    call = asyncio.create_task(a.chat_oai("one two three"))
    await until(lambda: a.channel._calls, "the call in flight")
    await a.aclose()
    with pytest.raises(RequestCancelledError, match="closed"):
        await asyncio.wait_for(call, LIMIT)


async def test_each_client_keeps_its_own_limits(start_worker, settings):
    await start_worker("echo")
    roomy = AsyncByzerLLM(settings=settings, default_model_name="echo")
    strict_settings = settings.model_copy(update={"max_request_bytes": 1000})
    strict = AsyncByzerLLM(settings=strict_settings, default_model_name="echo")
    big = "x" * 5000
    with pytest.raises(RequestTooLargeError):
        await strict.chat_oai(big)
    [r] = await roomy.chat_oai(big)
    assert r.output == big
    await strict.aclose()
    await roomy.aclose()


def test_closing_a_sync_client_in_another_thread_leaves_this_one_alone(worker_procs, settings):
    worker_procs.start("echo", "delay=0.05")
    env = BrokerSettings(redis_url=settings.redis_url, prefix=settings.prefix)
    a = ByzerLLM(settings=env, default_model_name="echo")
    b = ByzerLLM(settings=env, default_model_name="echo")
    a.chat_oai("warm up")
    got: list[str] = []
    started = threading.Event()

    def stream() -> None:
        for delta, _ in b.stream_chat_oai(WORDS, delta_mode=True):
            got.append(delta)
            started.set()

    reader = threading.Thread(target=stream)
    reader.start()
    assert started.wait(LIMIT)
    a.close()
    reader.join(LIMIT)
    assert not reader.is_alive(), "the other thread's stream hangs"
    assert "".join(got) == WORDS
    b.close()

"""One alias end to end: requests in, replies out, in the order and number sent."""

from __future__ import annotations

import asyncio
import time

import pytest

from byzerllm import (
    BackendError,
    ModelNotFoundError,
    NoLiveWorkerError,
    OverloadedError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.types import META_KEYS


async def test_chat_round_trip_returns_answer_and_metadata(start_worker, llm):
    await start_worker("echo", prefix="echo: ")
    [response] = await llm.chat_oai([{"role": "user", "content": "hello world"}])
    assert response.output == "echo: hello world"
    assert set(META_KEYS) <= set(response.metadata)
    assert response.metadata["finish_reason"] == "stop"
    assert response.metadata["generated_tokens_count"] == 3
    assert response.input["instruction"] == "hello world"


async def test_plain_string_conversation_is_one_user_message(start_worker, llm):
    await start_worker("echo")
    [response] = await llm.chat_oai("just text")
    assert response.output == "just text"


async def test_stream_delivers_deltas_in_order(start_worker, llm):
    await start_worker("echo", chunks=8, delay=0.02)
    text = "the quick brown fox jumps over the lazy dog"
    deltas = [t async for t, _ in llm.stream_chat_oai(text, delta_mode=True)]
    assert "".join(deltas) == text
    assert len(deltas) >= 4, "a slow backend's chunks must not all arrive as one"
    assert deltas[-1] == "", "the final item carries usage, not text"


async def test_stream_full_mode_accumulates_and_ends_with_usage(start_worker, llm):
    await start_worker("echo", chunks=4, delay=0.02)
    items = [(t, m) async for t, m in llm.stream_chat_oai("a b c d e f g h")]
    texts = [t for t, _ in items]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1] == "a b c d e f g h"
    final_meta = items[-1][1]
    assert final_meta.finish_reason == "stop"
    assert final_meta.generated_tokens_count == 4
    assert final_meta.input_tokens_count == 8


async def test_first_token_arrives_before_generation_ends(start_worker, llm):
    await start_worker("echo", delay=0.2)  # one chunk per word
    start = time.perf_counter()
    stream = llm.stream_chat_oai("one two three four five", delta_mode=True)
    first, _ = await stream.__anext__()
    first_at = time.perf_counter() - start
    rest = [t async for t, _ in stream]
    assert first + "".join(rest) == "one two three four five"
    total = time.perf_counter() - start
    assert first == "one "
    assert first_at < 0.5 < total


async def test_thousand_in_flight_requests_from_one_client(start_worker, llm):
    for _ in range(2):
        await start_worker("echo", concurrency=300, delay=0.01, chunks=2)
    queries = [f"question number {i}" for i in range(1000)]
    answers = await asyncio.gather(*(llm.chat_oai(q) for q in queries))
    assert [a[0].output for a in answers] == queries
    workers = {a[0].metadata["worker_id"] for a in answers}
    assert len(workers) == 2, "both workers must take part"


async def test_idle_workers_are_used_least_recently_first(start_worker, llm):
    ids = [(await start_worker("echo", concurrency=1)).worker_id for _ in range(3)]
    await asyncio.sleep(0.3)  # all three blocked on the stream, in start order
    seen = []
    for i in range(9):
        [r] = await llm.chat_oai(f"q{i}")
        seen.append(r.metadata["worker_id"])
        await asyncio.sleep(0.02)  # let the worker block again before the next request
    assert sorted(seen[:3]) == sorted(ids), "each idle worker is used once..."
    assert seen == seen[:3] * 3, "...and again in the same order: least recently used first"


async def test_unknown_alias_fails_fast_naming_it(start_worker, llm):
    await start_worker("echo")
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match="'no_such_model'"):
        await llm.chat_oai("hi", model="no_such_model")
    assert time.perf_counter() - start < 1


async def test_alias_without_live_worker_fails_fast(start_worker, llm, settings):
    worker = await start_worker("lonely")
    worker.stop()
    await asyncio.sleep(0.5)
    start = time.perf_counter()
    with pytest.raises(NoLiveWorkerError, match="'lonely'"):
        await llm.chat_oai("hi", model="lonely")
    assert time.perf_counter() - start < 1


async def test_backend_error_reaches_client_with_its_message(start_worker, llm):
    await start_worker("echo", fail_with="vendor said: quota exceeded")
    with pytest.raises(BackendError, match="vendor said: quota exceeded"):
        await llm.chat_oai("hi")


async def test_client_deadline_raises_timeout(start_worker, settings):
    await start_worker("echo", chunks=3, delay=1.0)
    client = AsyncByzerLLM(settings=settings, default_model_name="echo", request_timeout=0.3)
    start = time.perf_counter()
    with pytest.raises(RequestTimeoutError, match="'echo'"):
        await client.chat_oai("a b c")
    assert time.perf_counter() - start < 1.0
    await client.aclose()


async def test_request_past_deadline_is_not_run(start_worker, settings, llm):
    """B expires while queued behind A; the worker answers it without running it."""
    await start_worker("echo", concurrency=1, chunks=4, delay=0.3)  # ~0.9 s a request
    impatient = AsyncByzerLLM(settings=settings, default_model_name="echo", request_timeout=0.4)
    start = time.perf_counter()
    a = asyncio.create_task(llm.chat_oai("a a a a"))
    await asyncio.sleep(0.05)
    with pytest.raises(RequestTimeoutError):
        await impatient.chat_oai("b b b b")
    c = asyncio.create_task(llm.chat_oai("c c c c"))
    assert (await a)[0].output == "a a a a"
    assert (await c)[0].output == "c c c c"
    # had B run, C would finish after three full requests (~2.7 s)
    assert time.perf_counter() - start < 2.4
    await impatient.aclose()


async def test_overload_is_refused_with_a_clear_error(start_worker, redis_server):
    settings = BrokerSettings(redis_url=redis_server.url, prefix="overload", max_waiting=3)
    await start_worker("echo", concurrency=1, chunks=2, delay=0.5, settings_=settings)
    client = AsyncByzerLLM(settings=settings, default_model_name="echo")
    results = await asyncio.gather(
        *(client.chat_oai(f"q {i}") for i in range(8)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, OverloadedError)]
    answered = [r for r in results if isinstance(r, list)]
    assert refused and answered
    assert len(refused) + len(answered) == 8
    assert "limit 3" in str(refused[0]) and "'echo'" in str(refused[0])
    await client.aclose()


async def test_request_larger_than_limit_is_refused(start_worker, redis_server):
    settings = BrokerSettings(redis_url=redis_server.url, prefix="toolarge", max_request_bytes=2000)
    await start_worker("echo", settings_=settings)
    client = AsyncByzerLLM(settings=settings, default_model_name="echo")
    with pytest.raises(RequestTooLargeError, match="limit of 2000"):
        await client.chat_oai("x" * 5000)
    assert (await client.chat_oai("small"))[0].output == "small"
    await client.aclose()


async def test_embeddings_are_stable_vectors(start_worker, llm):
    await start_worker("emb", dim=16)
    llm.setup_default_emb_model_name("emb")
    [a] = await llm.emb_query("hello")
    [b] = await llm.emb_query("hello")
    [c] = await llm.emb_query("other")
    assert len(a.output) == 16
    assert a.output == b.output != c.output
    assert abs(sum(x * x for x in a.output) - 1.0) < 1e-6

"""One alias end to end: requests in, replies out, in the order and number sent."""

from __future__ import annotations

import asyncio
import time
from unittest.mock import ANY

import pytest

from byzerllm import (
    BackendError,
    ModelNotFoundError,
    NoLiveWorkerError,
    OverloadedError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from byzerllm.broker.messages import FINAL_TYPES, ReplyType, RequestKind
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.channel import channel_for
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.types import META_KEYS
from byzerllm.workers.runtime import WorkerTiming
from tests.waiting import LIMIT, until


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
    # an hour between words: the answer can only be complete if streaming is broken
    worker = await start_worker("echo", delay=3600)  # one chunk per word
    stream = llm.stream_chat_oai("one two three four five", delta_mode=True)
    first, _ = await asyncio.wait_for(stream.__anext__(), LIMIT)
    assert first == "one "
    assert len(worker._inflight) == 1, "the first delta must come while the answer is generated"
    await stream.aclose()  # leaving the stream cancels the request on the worker
    await until(lambda: not worker._inflight, "the abandoned request to be cancelled")


async def test_thousand_in_flight_requests_from_one_client(start_worker, llm):
    for _ in range(2):
        await start_worker("echo", concurrency=300, delay=0.01, chunks=2)
    queries = [f"question number {i}" for i in range(1000)]
    answers = await asyncio.gather(*(llm.chat_oai(q) for q in queries))
    assert [a[0].output for a in answers] == queries
    workers = {a[0].metadata["worker_id"] for a in answers}
    assert len(workers) == 2, "both workers must take part"


def _blocked_readers(redis_client) -> set[int]:
    """Ids of the Redis clients blocked in XREADGROUP (idle workers waiting for work)."""
    return {
        int(c["id"])
        for c in redis_client.client_list()
        if c["cmd"] == "xreadgroup" and "b" in c["flags"]
    }


async def test_idle_workers_are_used_least_recently_first(start_worker, llm, sync_redis):
    # Redis serves blocked readers in the order they blocked; a read that times
    # out re-blocks at the back, so reads here block longer than the test runs
    timing = WorkerTiming(
        heartbeat_interval=0.2, heartbeat_ttl=1.0, claim_idle=1.5, block_ms=600_000
    )
    others = _blocked_readers(sync_redis)

    def idle_workers() -> int:
        return len(_blocked_readers(sync_redis) - others)

    ids = []
    for n in range(1, 4):
        ids.append((await start_worker("echo", concurrency=1, timing=timing)).worker_id)
        await until(lambda n=n: idle_workers() == n, f"{n} workers blocked on the stream")
    seen = []
    for i in range(9):
        [r] = await llm.chat_oai(f"q{i}")
        seen.append(r.metadata["worker_id"])
        # the worker that answered reads again, at the back of the line
        await until(lambda: idle_workers() == 3, "all three workers blocked again")
    assert sorted(seen[:3]) == sorted(ids), "each idle worker is used once..."
    assert seen == ids * 3, "...and again in the order they blocked: least recently used first"


async def test_unknown_alias_fails_fast_naming_it(start_worker, llm):
    await start_worker("echo")
    # the error itself proves it failed fast: waiting instead would end in a timeout
    with pytest.raises(ModelNotFoundError, match="'no_such_model'"):
        await llm.chat_oai("hi", model="no_such_model")


async def test_alias_without_live_worker_fails_fast(start_worker, llm, sync_redis, keys):
    worker = await start_worker("lonely")
    worker.stop()
    alive = keys.alias("lonely").alive
    await until(
        lambda: sync_redis.zscore(alive, worker.worker_id) is None, "the worker to sign off"
    )
    # the error itself proves it failed fast: queued instead, it would end in a timeout
    with pytest.raises(NoLiveWorkerError, match="'lonely'"):
        await llm.chat_oai("hi", model="lonely")


async def test_backend_error_reaches_client_with_its_message(start_worker, llm):
    await start_worker("echo", fail_with="vendor said: quota exceeded")
    with pytest.raises(BackendError, match="vendor said: quota exceeded"):
        await llm.chat_oai("hi")


async def test_client_deadline_raises_timeout(start_worker, settings):
    await start_worker("echo", chunks=3, delay=1.0)
    client = AsyncByzerLLM(settings=settings, default_model_name="echo", request_timeout=0.3)
    # the answer takes 2 s at least: without the deadline the call would succeed
    with pytest.raises(RequestTimeoutError, match="'echo'"):
        await client.chat_oai("a b c")
    await client.aclose()


async def test_stream_deadline_raises_timeout_after_the_pieces_in_time(start_worker, settings):
    """One timer serves the whole call: the first piece comes, then the deadline ends it
    (an hour between words: without the deadline the stream would hang)."""
    worker = await start_worker("echo", delay=3600)
    client = AsyncByzerLLM(settings=settings, default_model_name="echo", request_timeout=0.5)
    pieces = []
    with pytest.raises(RequestTimeoutError, match="'echo'"):
        async for text, _meta in client.stream_chat_oai("a b c", delta_mode=True):
            pieces.append(text)
    assert pieces == ["a "]
    await until(lambda: not worker._inflight, "the worker to drop the timed-out request")
    [answer] = await client.chat_oai("d")  # the client serves on
    assert answer.output == "d"
    await client.aclose()


async def test_request_past_deadline_is_not_run(start_worker, settings, llm):
    """B expires while queued behind A; the worker answers it without running it."""
    worker = await start_worker("echo", concurrency=1, delay=3600)  # an hour between words
    a = llm.stream_chat_oai("a a a a", delta_mode=True)
    assert await asyncio.wait_for(a.__anext__(), LIMIT) == ("a ", ANY)  # A holds the only slot
    channel = channel_for(settings)
    payload = {"conversations": [{"role": "user", "content": "b b b b"}], "stream": True}
    b = await channel.submit("echo", RequestKind.CHAT, payload, timeout=0.5)
    await until(lambda: time.time() > b.deadline, "B's deadline to pass")
    assert b.rid not in worker._inflight, "B waits behind A"
    await a.aclose()  # cancels A and frees the slot: the worker takes B now
    replies = []
    while not replies or replies[-1].type not in FINAL_TYPES:
        replies.append(await asyncio.wait_for(b.queue.get(), LIMIT))
    assert [r.type for r in replies] == [ReplyType.ERROR], "B must not stream anything"
    assert replies[0].data["type"] == "RequestTimeoutError"
    assert "passed its deadline before it ran" in replies[0].data["message"]
    [c] = await llm.chat_oai("c")  # one word: answered at once, the worker serves on
    assert c.output == "c"


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

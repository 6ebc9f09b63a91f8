"""``ByzerLLM.stream_chat_oai``: a pump on the client's loop feeds the calling thread.

Items reach the thread through a thread-safe queue rather than one round trip
to the loop each; these tests hold it to what the round trips gave: every
piece in order, errors raised in the caller, and a stream the caller leaves
stops its request on the worker. Real Redis, real worker processes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import byzerllm
from byzerllm import BackendError, RequestCancelledError
from byzerllm.client.loop_thread import iterate_sync, run_sync
from tests.waiting import LIMIT, until_sync


@pytest.fixture
def sync_llm(settings):
    llm = byzerllm.ByzerLLM(redis_url=settings.redis_url, prefix=settings.prefix)
    yield llm
    llm.close()


def test_every_piece_arrives_in_order(worker_procs, sync_llm):
    worker_procs.start("words", "delay=0.001", concurrency=4)  # a delta per word
    text = " ".join(f"w{i}" for i in range(300))
    pieces = [t for t, _ in sync_llm.stream_chat_oai(text, model="words", delta_mode=True)]
    assert "".join(pieces) == text
    assert pieces[-1] == "", "the last item carries usage, not text"


def test_threads_streaming_at_once_each_get_their_own_answer(worker_procs, sync_llm):
    worker_procs.start("words", "delay=0.001", concurrency=16)

    def stream(i: int) -> str:
        text = f"thread {i} says " + " ".join(str(i) for _ in range(20))
        got = "".join(t for t, _ in sync_llm.stream_chat_oai(text, model="words", delta_mode=True))
        assert got == text
        return got

    with ThreadPoolExecutor(8) as pool:
        assert len(list(pool.map(stream, range(32)))) == 32


def test_backend_error_is_raised_in_the_calling_thread(worker_procs, sync_llm):
    worker_procs.start("broken", "fail_with=the model fell over")
    with pytest.raises(BackendError, match="the model fell over"):
        for _ in sync_llm.stream_chat_oai("hi", model="broken"):
            pass


def test_leaving_a_stream_stops_its_request_on_the_worker(worker_procs, sync_llm):
    # one slot, and an hour between words: the one-word call can only be served
    # if leaving the first stream freed the slot
    worker_procs.start("slow", "delay=3600", concurrency=1)
    for text, _ in sync_llm.stream_chat_oai("one two three", model="slow", delta_mode=True):
        assert text == "one "
        break
    [answer] = sync_llm.chat_oai("next", model="slow", llm_config={"request_timeout": LIMIT})
    assert answer.output == "next"


def test_abort_mid_stream_raises_after_the_pieces_given(worker_procs, sync_llm):
    worker_procs.start("slow", "delay=3600", concurrency=1)
    stream = sync_llm.stream_chat_oai(
        "one two three", model="slow", delta_mode=True, llm_config={"gen.request_id": "r-abort"}
    )
    first, _ = next(stream)
    assert first == "one "
    assert sync_llm.abort("r-abort")
    with pytest.raises(RequestCancelledError, match="r-abort"):
        next(stream)


def test_the_pump_reads_no_further_ahead_than_it_may():
    produced: list[int] = []

    async def numbers() -> AsyncIterator[int]:
        for i in range(100):
            produced.append(i)
            yield i
            await asyncio.sleep(0)

    items = iterate_sync(numbers(), read_ahead=4)
    assert next(items) == 0
    until_sync(lambda: len(produced) >= 4, "the pump to fill its read-ahead")
    for _ in range(20):  # loop passes in which an unbounded pump would read on
        run_sync(asyncio.sleep(0))
    assert len(produced) <= 5, "item 0 taken, then at most 4 read ahead"
    assert list(items) == list(range(1, 100)), "the rest, in order, once the consumer reads"


def test_a_pump_left_early_closes_its_iterator():
    closed = threading.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0)
        finally:
            closed.set()

    items = iterate_sync(endless())
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    items.close()
    assert closed.is_set(), "closing the generator waits until the iterator is closed"

"""A worker that dies mid-stream: the retry continues the text already sent
(prefix completion) so the caller reads one answer; a backend that cannot
continue restarts the answer, saying so. Never a spliced answer."""

from __future__ import annotations

import signal

from tests.test_recovery import _busy_worker_pid

WORDS = " ".join(f"w{i}" for i in range(16))


async def _kill_mid_stream(worker_procs, settings, keys, stream, procs):
    """Three items in, SIGKILL the worker serving the stream; its prefix and the other's."""
    got = [await stream.__anext__() for _ in range(3)]
    victim = await _busy_worker_pid(settings, keys, "echo")
    first = "alpha:" if victim == procs[0].pid else "bravo:"
    second = "bravo:" if first == "alpha:" else "alpha:"
    next(p for p in procs if p.pid == victim).proc.send_signal(signal.SIGKILL)
    got += [item async for item in stream]
    return got, first, second


def _two_workers(worker_procs, *options):
    # two workers of one alias that answer differently, as a sampling model would
    return [
        worker_procs.start("echo", "delay=0.15", f"prefix={name}:", *options)
        for name in ("alpha", "bravo")
    ]


async def test_a_retry_continues_from_the_text_already_streamed(worker_procs, settings, keys, llm):
    procs = _two_workers(worker_procs)
    stream = llm.stream_chat_oai(WORDS, delta_mode=True)
    got, first, _ = await _kill_mid_stream(worker_procs, settings, keys, stream, procs)
    assert not [m for _, m in got if m.extra_info.get("restarted")], [t for t, _ in got]
    # the survivor went on from the dead worker's words: one answer, in its words
    assert "".join(t for t, _ in got) == first + WORDS
    assert got[-1][1].extra_info["continued_from"] > 0
    assert got[-1][1].finish_reason == "stop"


async def test_the_whole_text_after_a_continued_retry_is_what_was_streamed(
    worker_procs, settings, keys, llm
):
    procs = _two_workers(worker_procs)
    stream = llm.stream_chat_oai(WORDS)  # each item: the whole answer so far
    got, first, _ = await _kill_mid_stream(worker_procs, settings, keys, stream, procs)
    texts = [t for t, _ in got]
    assert all(b.startswith(a) for a, b in zip(texts, texts[1:], strict=False)), texts
    assert texts[-1] == first + WORDS


async def test_a_retry_on_a_backend_that_cannot_continue_restarts_the_stream(
    worker_procs, settings, keys, llm
):
    procs = _two_workers(worker_procs, "continues=false")
    stream = llm.stream_chat_oai(WORDS, delta_mode=True)
    got, first, second = await _kill_mid_stream(worker_procs, settings, keys, stream, procs)
    deltas = got[:-1]
    restarts = [i for i, (_, meta) in enumerate(deltas) if meta.extra_info.get("restarted")]
    assert len(restarts) == 1, [t for t, _ in got]
    before = "".join(t for t, _ in got[: restarts[0]])
    after = "".join(t for t, _ in got[restarts[0] :])
    assert (first + WORDS).startswith(before)  # what the dead worker said, unspliced
    assert after == second + WORDS  # then the other worker's whole answer
    assert got[-1][1].extra_info["restarted"] is True  # the end says so too

"""A request's first streamed piece leaves the worker on its own, at once.

A backend can hand over a whole answer at once (a vendor's stream already in
the socket buffer, a fast local server): read to its end before the reply
writer runs, the first token would leave with the last. The worker sends the
first piece before reading on, and coalesces what comes after it, so a
burst still costs a few entries, not one per piece. Real Redis, a real
worker process.
"""

from __future__ import annotations

from byzerllm.client.llm import AsyncByzerLLM


async def test_a_burst_sends_its_first_piece_alone_and_coalesces_the_rest(worker_procs, settings):
    worker_procs.start("burst", "chunks=8")  # eight pieces with nothing awaited between
    llm = AsyncByzerLLM(settings=settings, default_model_name="burst")
    try:
        text = "the quick brown fox jumps over the lazy dog"
        pieces = [t async for t, _ in llm.stream_chat_oai(text, delta_mode=True)]
    finally:
        await llm.aclose()
    assert "".join(pieces) == text
    first_piece = text[: -(-len(text) // 8)]
    assert pieces == [first_piece, text[len(first_piece) :], ""], (
        "the first piece alone, the other seven as one entry, then the end"
    )

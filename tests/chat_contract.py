"""What every local chat backend must do, checked the same way for each."""

from __future__ import annotations

from typing import Any

GREEDY = {"temperature": 0}


async def stream_equals_whole_answer(llm: Any, alias: str, max_length: int = 12) -> Any:
    """Streamed deltas (more than one) add up to the whole answer; returns that answer."""
    config = {"max_length": max_length, **GREEDY}
    q = "Count from one to twenty in words."
    [whole] = await llm.chat_oai(q, model=alias, llm_config=config)
    deltas = [
        t async for t, _ in llm.stream_chat_oai(q, model=alias, delta_mode=True, llm_config=config)
    ]
    assert len([d for d in deltas if d]) > 1
    assert "".join(deltas) == whole.output
    return whole


async def stop_word_ends_the_answer(llm: Any, alias: str, max_length: int = 60) -> Any:
    """``gen.stop`` cuts the text at the stop word; returns the answer."""
    [r] = await llm.chat_oai(
        "Count from one to twenty in words, separated by commas.",
        model=alias,
        llm_config={"max_length": max_length, **GREEDY, "gen.stop": [","]},
    )
    assert "," not in r.output and r.output.strip()
    return r

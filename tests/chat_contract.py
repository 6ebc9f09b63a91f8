"""What every local chat backend must do, checked the same way for each.

A tiny model's greedy text differs between CPUs (instruction set, kernels,
thread count), so nothing here expects particular words. Each check takes
its reference from an answer the same backend gave in the same test, and
tests the feature against it: a stop word is picked from an unconstrained
answer, a response prefix is cut from the model's own answer, max_length is
checked on a prompt that always runs long. Within one backend and one
process greedy decoding repeats itself, which is all these checks assume.
"""

from __future__ import annotations

import re
from typing import Any

GREEDY = {"temperature": 0}
# a prompt any chat model answers at length: max_length, not the model, ends it
LONG = "Write a very long story about a dragon who learns to fly."
QUESTION = "Tell me about the sea in a few sentences."


def _messages(conversation: str | list[dict[str, str]]) -> list[dict[str, str]]:
    if isinstance(conversation, str):
        return [{"role": "user", "content": conversation}]
    return list(conversation)


async def answers_with_text_and_usage(llm: Any, alias: str, max_length: int = 16) -> Any:
    """A plain question gets some text and honest token counts; returns the answer."""
    [r] = await llm.chat_oai(QUESTION, model=alias, llm_config={"max_length": max_length, **GREEDY})
    assert r.output.strip(), "the model answered nothing"
    assert r.metadata["input_tokens_count"] > 5, r.metadata
    assert 0 < r.metadata["generated_tokens_count"] <= max_length, r.metadata
    return r


async def stream_equals_whole_answer(llm: Any, alias: str, max_length: int = 12) -> Any:
    """Streamed deltas (more than one) add up to the whole answer; returns that answer."""
    config = {"max_length": max_length, **GREEDY}
    [whole] = await llm.chat_oai(LONG, model=alias, llm_config=config)
    deltas = [
        t
        async for t, _ in llm.stream_chat_oai(LONG, model=alias, delta_mode=True, llm_config=config)
    ]
    assert len([d for d in deltas if d]) > 1, deltas
    assert "".join(deltas) == whole.output
    return whole


async def max_length_stops_a_long_answer(llm: Any, alias: str, short: int = 8) -> Any:
    """An answer that would run on is cut at exactly ``max_length`` tokens.

    The longer answer (twice the limit) shows the short one was cut, not
    finished: it goes on past the short one's text.
    """
    [cut] = await llm.chat_oai(LONG, model=alias, llm_config={"max_length": short, **GREEDY})
    assert cut.metadata["generated_tokens_count"] == short, cut.metadata
    assert cut.metadata["finish_reason"] == "length", cut.metadata
    [longer] = await llm.chat_oai(LONG, model=alias, llm_config={"max_length": 2 * short, **GREEDY})
    assert longer.metadata["generated_tokens_count"] == 2 * short, (
        f"the reference answer ended early, so the prompt did not run long: {longer.output!r}"
    )
    assert cut.output.strip() and longer.output.startswith(cut.output.rstrip())
    assert len(longer.output) > len(cut.output)
    return cut


def pick_stop_word(text: str) -> tuple[str, int]:
    """A word of ``text`` with some text before its first occurrence, and that index.

    Prefers a word near the middle, so that both the part kept and the part
    cut away are non-empty.
    """
    words = [m for m in re.finditer(r"[A-Za-z]{3,}", text) if m.start() > 0]
    candidates = [m for m in words if text.index(m.group()) == m.start()]
    assert candidates, f"no word to stop on in the reference answer {text!r}"
    middle = candidates[len(candidates) // 2]
    return middle.group(), middle.start()


async def stop_word_ends_the_answer(
    llm: Any,
    alias: str,
    conversation: str | list[dict[str, str]] = LONG,
    max_length: int = 32,
    extra: dict[str, Any] | None = None,
) -> Any:
    """``gen.stop`` ends the answer just before the stop word, and generation with it.

    The stop word comes from the unconstrained answer to the same request;
    the stopped answer must be exactly the text before its first occurrence.
    """
    config = {"max_length": max_length, **GREEDY, **(extra or {})}
    messages = _messages(conversation)
    [free] = await llm.chat_oai(messages, model=alias, llm_config=config)
    word, index = pick_stop_word(free.output)
    [stopped] = await llm.chat_oai(messages, model=alias, llm_config={**config, "gen.stop": [word]})
    assert stopped.output == free.output[:index], (word, free.output, stopped.output)
    assert stopped.metadata["finish_reason"] == "stop", stopped.metadata
    assert stopped.metadata["generated_tokens_count"] < free.metadata["generated_tokens_count"], (
        "generation ran on past the stop word"
    )
    return stopped


async def response_prefix_continues_the_answer(
    llm: Any, alias: str, max_length: int = 8
) -> tuple[Any, list[dict[str, str]]]:
    """With ``gen.response_prefix`` the last assistant message is continued, not repeated.

    The prefix is the start of the model's own answer to the question; without
    the feature the model would answer afresh and begin with those same words.
    Returns the continuation and the conversation that asked for it.
    """
    config = {"max_length": 24, **GREEDY}
    [free] = await llm.chat_oai(QUESTION, model=alias, llm_config=config)
    words = free.output.split()
    assert len(words) >= 4, f"the reference answer is too short: {free.output!r}"
    prefix = " ".join(words[:3])
    conversation = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": prefix},
    ]
    [cont] = await llm.chat_oai(
        conversation,
        model=alias,
        llm_config={"max_length": max_length, **GREEDY, "gen.response_prefix": True},
    )
    assert cont.output.strip(), "nothing came after the prefix"
    assert not cont.output.lstrip().startswith(words[0] + " " + words[1]), (
        f"the answer starts over instead of continuing {prefix!r}: {cont.output!r}"
    )
    return cont, conversation

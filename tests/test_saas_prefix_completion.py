"""Chat prefix completion on OpenAI-protocol vendors: the answer continues the
last assistant message (DeepSeek marks it ``"prefix": true``, SiliconFlow takes
a ``prefix`` field), through the real SDK to a protocol server on loopback
that continues only a prefix it is asked to continue, as the vendors do."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import byzerllm
from tests.openai_stub import OpenAIStub

KEY = "sk-test-prefix"
QUESTION = "once upon a time there was a mountain"
PREFIX = "once upon a time"
CONVERSATION = [
    {"role": "user", "content": QUESTION},
    {"role": "assistant", "content": PREFIX},
]
CONTINUE = {"gen.response_prefix": True}


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=KEY) as server:
        yield server


async def _deploy(start_worker, stub, style: str | None = None, model: str = "deepseek-chat"):
    params = {"saas.base_url": stub.base_url, "saas.api_key": KEY, "saas.model": model}
    if style is not None:
        params["saas.prefix_style"] = style
    return await start_worker("ds", model_type="saas/openai", **params)


async def test_the_last_assistant_message_is_marked_and_continued(start_worker, llm, stub):
    await _deploy(start_worker, stub)
    [answer] = await llm.chat_oai(CONVERSATION, model="ds", llm_config=CONTINUE)
    assert answer.output == QUESTION[len(PREFIX) :]  # the continuation only
    sent = stub.last_request
    assert sent["messages"][-1] == {"role": "assistant", "content": PREFIX, "prefix": True}


async def test_siliconflow_style_sends_the_prefix_as_a_field(start_worker, llm, stub):
    await _deploy(start_worker, stub, style="siliconflow")
    [answer] = await llm.chat_oai(CONVERSATION, model="ds", llm_config=CONTINUE)
    assert answer.output == QUESTION[len(PREFIX) :]
    sent = stub.last_request
    assert sent["prefix"] == PREFIX and sent["messages"][-1]["role"] == "user"


async def test_without_the_mark_the_vendor_answers_afresh(start_worker, llm, stub):
    """What the mark is for: a plain last assistant message is not continued."""
    await _deploy(start_worker, stub, style="none")
    [answer] = await llm.chat_oai(CONVERSATION, model="ds", llm_config=CONTINUE)
    assert answer.output == QUESTION
    assert "prefix" not in stub.last_request["messages"][-1]


async def test_streamed_continuation(start_worker, llm, stub):
    await _deploy(start_worker, stub, style="deepseek")
    pieces = [
        text
        async for text, _ in llm.stream_chat_oai(
            CONVERSATION, model="ds", llm_config=CONTINUE, delta_mode=True
        )
    ]
    assert "".join(pieces) == QUESTION[len(PREFIX) :]


async def test_prompt_function_with_return_prefix_reads_as_one_answer(start_worker, llm, stub):
    await _deploy(start_worker, stub)

    @byzerllm.prompt(llm=llm, options={"model": "ds"})
    def story() -> str:  # type: ignore[empty-body]
        """
        once upon a time there was a mountain
        """

    assert await story.with_return_prefix(PREFIX).arun() == QUESTION


async def test_meta_says_which_aliases_continue_and_which_embed(start_worker, llm, stub):
    await _deploy(start_worker, stub, style="deepseek")
    await start_worker(
        "plain",
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": KEY, "saas.model": "gpt-4o"},
    )
    await start_worker(
        "emb",
        model_type="saas/openai",
        **{
            "saas.base_url": stub.base_url,
            "saas.api_key": KEY,
            "saas.model": "text-embedding-3-small",
        },
    )
    deepseek, plain, emb = [await llm.get_meta(model=m) for m in ("ds", "plain", "emb")]
    assert deepseek["support_assistant_prefix"] is True and deepseek["embedding_mode"] is False
    # a server of unknown kind may drop the mark: a retry there restarts, not continues
    assert plain["support_assistant_prefix"] is False and plain["embedding_mode"] is False
    assert emb["embedding_mode"] is True

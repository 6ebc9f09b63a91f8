"""The async side of prompt functions and the sync client's async aliases (in-process workers)."""

from typing import Generator  # noqa: UP035

import pydantic

import byzerllm
from byzerllm import AsyncByzerLLM, ByzerLLM


class Answer(pydantic.BaseModel):
    value: int


@byzerllm.prompt()
def story() -> Generator[str, None, None]:
    """
    tell a story
    """


@byzerllm.prompt()
def compute(a: int, b: int) -> Answer:
    """
    {{ a }} + {{ b }}
    """


async def test_arun_with_an_async_client(start_worker, llm: AsyncByzerLLM):
    await start_worker("echo", script=[{"match": r"1 \+ 2", "reply": '```json\n{"value": 3}\n```'}])
    assert await compute.with_llm(llm).arun(1, 2) == Answer(value=3)


async def test_async_for_over_a_generator_prompt(start_worker, llm: AsyncByzerLLM):
    await start_worker("echo", delay=0.01, script=[{"match": "story", "reply": "once upon a time"}])
    pieces = [p async for p in story.with_llm(llm).arun()]
    assert len(pieces) > 1 and "".join(pieces) == "once upon a time"
    stream = await story.with_llm(llm).arun()
    assert "".join([p async for p in stream]) == "once upon a time"


async def test_sync_client_async_aliases(start_worker, settings):
    await start_worker("echo")
    client = ByzerLLM(redis_url=settings.redis_url, prefix=settings.prefix)
    client.setup_default_model_name("echo")
    [r] = await client.achat_oai([{"role": "user", "content": "hi there"}])
    assert r.output == "hi there"
    texts = [t async for t, _ in client.astream_chat_oai("a b", delta_mode=True)]
    assert "".join(texts) == "a b"
    await client.aio.aclose()


async def test_meta_holder_and_conversation(start_worker, llm: AsyncByzerLLM):
    await start_worker("echo")
    holder = byzerllm.MetaHolder()

    @byzerllm.prompt(llm=llm)
    def echo(q: str) -> str:
        """
        {{ q }}
        """

    prior = [{"role": "user", "content": "earlier"}, {"role": "assistant", "content": "ok"}]
    assert await echo.with_conversation(prior).with_meta(holder).arun("now") == "now"
    assert holder.get_meta()["finish_reason"] == "stop"

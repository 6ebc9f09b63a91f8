"""Tool calls streamed as the vendor makes them: OpenAI's stream through a worker,
the reply stream, the client and the gateway, fragment by fragment.

Everything is real: Redis, ``saas/openai`` worker processes in front of the
OpenAI-protocol stub, the gateway under uvicorn, and the ``openai`` SDK as its
client. The stub streams a tool call as OpenAI does (the call's id and name
first, then its arguments in pieces) and, with ``stream_steps``, sends each
event after the first only when the test releases it: that the first tool-call
chunk reaches the caller while the stub still holds the rest is a condition
the test checks, not a timing.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from typing import Annotated, Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")

from openai.lib.streaming.chat import ChatCompletionStreamState  # noqa: E402

from tests import test_saas_aws_bedrock as bedrock_tests  # noqa: E402
from tests import test_saas_claude as claude_tests  # noqa: E402
from tests.gateway_server import ADD_TOOL, STUB_KEY  # noqa: E402
from tests.openai_stub import OpenAIStub  # noqa: E402
from tests.stubs.anthropic_stub import AnthropicStub  # noqa: E402
from tests.stubs.bedrock_stub import BedrockStub  # noqa: E402
from tests.test_recovery import _busy_worker_pid  # noqa: E402

ARGUMENTS = '{"a": 2, "b": 3}'  # the stub streams it in four pieces, one per word
QUESTION = [{"role": "user", "content": f"please add {ARGUMENTS}"}]
MUL_TOOL = {
    "type": "function",
    "function": {
        "name": "mul",
        "description": "Multiply two numbers.",
        "parameters": ADD_TOOL["function"]["parameters"],
    },
}


def add(a: Annotated[int, "the first number"], b: Annotated[int, "the second number"]) -> int:
    """Add two numbers."""
    return a + b


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=STUB_KEY) as server:
        yield server


def start_gpt(worker_procs: Any, stub: OpenAIStub, count: int = 1) -> list[Any]:
    """``count`` real ``saas/openai`` worker processes of the alias ``gpt``."""
    params = (f"saas.base_url={stub.base_url}", f"saas.api_key={STUB_KEY}", "saas.model=gpt-4o")
    return [worker_procs.start("gpt", *params, model_type="saas/openai") for _ in range(count)]


class Steps:
    """Releases the stub's held stream one event per tool-call item the caller
    got, until it has ``stepwise`` of them; then all the rest at once."""

    def __init__(self, stub: OpenAIStub, stepwise: int = 3) -> None:
        self.stub = stub
        self.sem = stub.stream_steps = threading.Semaphore(0)
        self.stepwise = stepwise
        self.seen = 0
        self.sent_at_first: int | None = None

    def saw_tool_call(self) -> None:
        if self.sent_at_first is None:
            self.sent_at_first = self.stub.paced_events_sent
        self.seen += 1
        self.sem.release(1 if self.seen < self.stepwise else 1000)


async def test_the_sdk_reads_tool_call_deltas_as_the_vendor_streams_them(
    worker_procs, stub, aclient
):
    start_gpt(worker_procs, stub)
    steps = Steps(stub)
    stream = await aclient.chat.completions.create(
        model="gpt",
        messages=QUESTION,
        tools=[ADD_TOOL],
        stream=True,
        stream_options={"include_usage": True},
    )
    state = ChatCompletionStreamState()
    deltas: list[Any] = []  # the tool_calls of each chunk that has some
    finish, usage = None, None
    async for chunk in stream:
        state.handle_chunk(chunk)
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            if choice.delta.tool_calls:
                deltas.append(choice.delta.tool_calls)
                steps.saw_tool_call()

    assert stub.last_request["stream"] is True, "the vendor was asked for a stream"
    assert stub.last_request["tools"] == [ADD_TOOL]
    assert steps.sent_at_first == 1, "the first tool-call chunk came before the stub sent more"
    [opening] = deltas[0]
    assert (opening.index, opening.id, opening.type) == (0, "call_stub1", "function")
    assert opening.function.name == "add" and not opening.function.arguments
    pieces = [d.function.arguments for [d] in deltas[1:] if d.function and d.function.arguments]
    assert len(pieces) >= 2, f"the arguments came in one piece: {pieces}"
    assert all(d.index == 0 and d.id is None for [d] in deltas[1:])
    assert json.loads("".join(pieces)) == {"a": 2, "b": 3}
    assert finish == "tool_calls" and usage is not None and usage.prompt_tokens > 0

    [choice] = state.get_final_completion().choices  # the SDK's own accumulation
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.id == "call_stub1" and call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 2, "b": 3}


async def test_parallel_tool_calls_keep_their_index_and_fragments(worker_procs, stub, aclient):
    """Two calls streamed back to back, unpaced: however the worker merges the
    fragments, each call gets its own id, name and whole arguments."""
    start_gpt(worker_procs, stub)
    stub.every_named_tool = True
    stream = await aclient.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": f"add and mul {ARGUMENTS}"}],
        tools=[ADD_TOOL, MUL_TOOL],
        stream=True,
    )
    state = ChatCompletionStreamState()
    async for chunk in stream:
        state.handle_chunk(chunk)
    [choice] = state.get_final_completion().choices
    assert choice.finish_reason == "tool_calls"
    calls = [
        (c.id, c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls
    ]
    assert calls == [
        ("call_stub1", "add", {"a": 2, "b": 3}),
        ("call_stub2", "mul", {"a": 2, "b": 3}),
    ]


async def test_a_forced_tool_with_empty_arguments_streams(worker_procs, stub, aclient):
    start_gpt(worker_procs, stub)
    stream = await aclient.chat.completions.create(
        model="gpt",
        messages=[{"role": "user", "content": "what now?"}],
        tools=[ADD_TOOL],
        tool_choice={"type": "function", "function": {"name": "add"}},
        stream=True,
    )
    state = ChatCompletionStreamState()
    async for chunk in stream:
        state.handle_chunk(chunk)
    [choice] = state.get_final_completion().choices
    [call] = choice.message.tool_calls
    assert (call.function.name, call.function.arguments) == ("add", "{}")
    assert stub.last_request["tool_choice"] == {"type": "function", "function": {"name": "add"}}


async def test_stream_chat_oai_yields_the_fragments_in_delta_mode(worker_procs, stub, llm):
    start_gpt(worker_procs, stub)
    steps = Steps(stub)
    items = []
    async for text, meta in llm.stream_chat_oai(
        QUESTION, model="gpt", tools=[add], delta_mode=True
    ):
        items.append((text, meta))
        if meta.tool_calls:
            steps.saw_tool_call()

    assert steps.sent_at_first == 1, "the first fragment came before the stub sent more"
    fragments = [f for _, meta in items for f in meta.tool_calls]
    assert fragments[0] == {"index": 0, "id": "call_stub1", "name": "add"}
    pieces = [f["arguments"] for f in fragments[1:]]
    assert len(pieces) >= 2 and all(f.keys() == {"index", "arguments"} for f in fragments[1:])
    assert json.loads("".join(pieces)) == {"a": 2, "b": 3}
    assert all(text == "" for text, _ in items), "no tool choice written as text"
    last = items[-1][1]
    assert last.finish_reason == "tool_calls"
    assert last.extra_info["tool_calls"] == [
        {"id": "call_stub1", "name": "add", "arguments": {"a": 2, "b": 3}}
    ]
    assert not [m for _, m in items if m.extra_info.get("restarted")]
    sent = stub.last_request
    assert sent["tools"][0]["function"]["name"] == "add" and sent["messages"] == QUESTION


async def test_stream_chat_oai_gives_the_calls_so_far_without_delta_mode(worker_procs, stub, llm):
    start_gpt(worker_procs, stub)
    items = [item async for item in llm.stream_chat_oai(QUESTION, model="gpt", tools=[add])]
    calls = [meta.tool_calls for _, meta in items if meta.tool_calls]
    assert calls[-1] == [{"index": 0, "id": "call_stub1", "name": "add", "arguments": ARGUMENTS}]
    grown = [c[0]["arguments"] for c in calls]
    assert all(b.startswith(a) for a, b in zip(grown, grown[1:], strict=False)), grown
    assert items[-1][1].extra_info["tool_calls"][0]["arguments"] == {"a": 2, "b": 3}


async def test_chat_oai_with_tools_is_unchanged(worker_procs, stub, llm):
    """A whole answer still carries the choice in its metadata and as text."""
    start_gpt(worker_procs, stub)
    [response] = await llm.chat_oai(QUESTION, model="gpt", tools=[add], execute_tool=True)
    assert response.values == [5]
    assert stub.last_request["stream"] is False
    assert response.response.metadata["tool_calls"][0]["arguments"] == {"a": 2, "b": 3}
    assert '"tool_calls"' in response.response.output


async def test_a_worker_dying_mid_tool_call_restarts_the_answer(
    worker_procs, stub, settings, keys, llm
):
    """Tool calls cannot be continued from a prefix: the other worker answers
    anew, and the item where its calls start says the answer restarted."""
    procs = start_gpt(worker_procs, stub, count=2)
    stub.stream_steps = threading.Semaphore(0)
    stream = llm.stream_chat_oai(QUESTION, model="gpt", tools=[add], delta_mode=True)
    first = await stream.__anext__()
    assert first[1].tool_calls == [{"index": 0, "id": "call_stub1", "name": "add"}]
    victim = await _busy_worker_pid(settings, keys, "gpt")
    next(p for p in procs if p.pid == victim).proc.send_signal(signal.SIGKILL)
    stub.stream_steps.release(1000)  # the survivor's stream runs through
    rest = [item async for item in stream]

    restarts = [i for i, (_, meta) in enumerate(rest) if meta.extra_info.get("restarted")]
    assert len(restarts) == 1, rest
    again = [f for _, meta in rest[restarts[0] :] for f in meta.tool_calls]
    assert again[0]["id"] == "call_stub1" and again[0]["name"] == "add"
    assert json.loads("".join(f.get("arguments", "") for f in again)) == {"a": 2, "b": 3}
    assert rest[-1][1].extra_info["tool_calls"][0]["arguments"] == {"a": 2, "b": 3}


async def test_the_gateway_fails_a_tool_stream_whose_worker_died(
    worker_procs, stub, settings, keys, aclient
):
    procs = start_gpt(worker_procs, stub, count=2)
    stub.stream_steps = threading.Semaphore(0)
    stream = await aclient.chat.completions.create(
        model="gpt", messages=QUESTION, tools=[ADD_TOOL], stream=True
    )
    chunks = aiter(stream)
    while not (await anext(chunks)).choices[0].delta.tool_calls:
        pass
    victim = await _busy_worker_pid(settings, keys, "gpt")
    next(p for p in procs if p.pid == victim).proc.send_signal(signal.SIGKILL)
    stub.stream_steps.release(1000)
    with pytest.raises(openai.APIError) as failure:
        async for _ in chunks:
            pass
    assert "started over" in str(failure.value)


async def test_simple_byzerllm_streams_tool_call_fragments_in_process(stub):
    """The in-process client (no Redis) streams the same fragments."""
    from byzerllm.simple import AsyncSimpleByzerLLM

    local = AsyncSimpleByzerLLM(default_model_name="gpt")
    params = {"saas.base_url": stub.base_url, "saas.api_key": STUB_KEY, "saas.model": "gpt-4o"}
    try:
        await local.deploy("", "saas/openai", "gpt", params)
        items = [i async for i in local.stream_chat_oai(QUESTION, tools=[add], delta_mode=True)]
    finally:
        await local.aclose()
    fragments = [f for _, meta in items for f in meta.tool_calls]
    assert (fragments[0]["id"], fragments[0]["name"]) == ("call_stub1", "add")
    assert json.loads("".join(f.get("arguments", "") for f in fragments)) == {"a": 2, "b": 3}
    assert items[-1][1].finish_reason == "tool_calls"


# -- Anthropic's format: saas/claude and saas/aws_bedrock stream tool_use blocks ---------


@pytest.fixture
def claude_stub() -> Iterator[Any]:
    with AnthropicStub(claude_tests.KEY) as server:
        yield server


@pytest.fixture
def bedrock_stub() -> Iterator[Any]:
    with BedrockStub(bedrock_tests.ACCESS) as server:
        yield server


async def test_claude_streams_its_text_then_the_tool_call(start_worker, claude_stub, aclient):
    await start_worker("sonnet", model_type="saas/claude", **claude_tests.guide_params(claude_stub))
    stream = await aclient.chat.completions.create(
        model="sonnet", messages=QUESTION, tools=[ADD_TOOL], stream=True
    )
    state = ChatCompletionStreamState()
    arguments_chunks = 0
    async for chunk in stream:
        state.handle_chunk(chunk)
        for delta in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            arguments_chunks += bool(delta.function and delta.function.arguments)
    assert claude_stub.received[-1].json()["stream"] is True
    [choice] = state.get_final_completion().choices
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "I will use a tool."
    [call] = choice.message.tool_calls
    assert (call.id, call.function.name) == ("toolu_stub1", "add")
    assert json.loads(call.function.arguments) == {"a": 2, "b": 3}
    assert arguments_chunks >= 1


async def test_bedrock_streams_the_tool_call_fragments(start_worker, bedrock_stub, llm):
    params = bedrock_tests.guide_params(bedrock_stub)
    await start_worker("bedrock", model_type="saas/aws_bedrock", **params)
    items = [
        item
        async for item in llm.stream_chat_oai(
            QUESTION, model="bedrock", tools=[add], delta_mode=True
        )
    ]
    fragments = [f for _, meta in items for f in meta.tool_calls]  # merged where they queued
    assert (fragments[0]["index"], fragments[0]["id"], fragments[0]["name"]) == (
        0,
        "toolu_stub1",
        "add",
    )
    assert json.loads("".join(f.get("arguments", "") for f in fragments)) == {"a": 2, "b": 3}
    assert items[-1][1].finish_reason == "tool_calls"
    assert items[-1][1].extra_info["tool_calls"] == [
        {"id": "toolu_stub1", "name": "add", "arguments": {"a": 2, "b": 3}}
    ]

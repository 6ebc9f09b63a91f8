"""Native tool calling: OpenAI and Claude receive the tools as JSON schemas.

The vendors (protocol stubs over TCP, driven by the real SDKs) "choose" the
tool the user names, with the JSON object of the user's message as
arguments; the client validates those arguments against the Python
signature and runs the tool. Backends without tool calling get the same
tools described in the prompt, and answer in the same shape.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import pytest

from byzerllm.broker.messages import ReplyType, RequestKind
from byzerllm.client.tools import tool_spec
from byzerllm.types import LLMFunctionCallResponse
from tests.openai_stub import OpenAIStub
from tests.stubs.anthropic_stub import AnthropicStub

pytest.importorskip("anthropic")

OPENAI_KEY = "sk-test-0123456789"
CLAUDE_KEY = "sk-ant-test-0123456789"


def add(
    a: Annotated[int, "the first number"],
    b: Annotated[int, "the second number"],
    unit: Annotated[str, "what is counted", {"enum": ["apple", "pear"]}] = "apple",
) -> str:
    """Add two counts of fruit."""
    return f"{a + b} {unit}s"


def now() -> str:
    """The current time."""
    return "12:00"


@pytest.fixture
def openai_stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=OPENAI_KEY) as server:
        yield server


@pytest.fixture
def claude_stub() -> Iterator[AnthropicStub]:
    with AnthropicStub(CLAUDE_KEY) as server:
        yield server


async def gpt(start_worker: Any, stub: OpenAIStub, **params: Any) -> None:
    await start_worker(
        "gpt",
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": OPENAI_KEY, "saas.model": "gpt-4o"},
        **params,
    )


async def claude(start_worker: Any, stub: AnthropicStub) -> None:
    await start_worker(
        "sonnet",
        model_type="saas/claude",
        **{
            "saas.base_url": stub.base_url,
            "saas.api_key": CLAUDE_KEY,
            "saas.model": "claude-3-5-sonnet-20240620",
        },
    )


async def test_openai_gets_tool_schemas_and_the_tool_runs(start_worker, llm, openai_stub):
    await gpt(start_worker, openai_stub)
    [r] = await llm.chat_oai(
        'please add {"a": 2, "b": 3, "unit": "pear"}',
        model="gpt",
        tools=[add, now],
        execute_tool=True,
    )
    assert isinstance(r, LLMFunctionCallResponse)
    assert r.values == ["5 pears"]
    assert r.metadata["selected_functions"] == ["add"]
    assert r.metadata["reason"] == ""
    sent = openai_stub.last_request
    assert sent is not None
    assert sent["messages"] == [
        {"role": "user", "content": 'please add {"a": 2, "b": 3, "unit": "pear"}'}
    ], "the question goes as asked: no tool description stuffed into the prompt"
    [add_tool, now_tool] = sent["tools"]
    assert add_tool["type"] == "function"
    schema = add_tool["function"]
    assert schema["name"] == "add"
    assert schema["description"] == "Add two counts of fruit."
    assert schema["parameters"]["required"] == ["a", "b"]
    assert schema["parameters"]["properties"]["unit"]["enum"] == ["apple", "pear"]
    assert schema["parameters"]["properties"]["a"]["description"] == "the first number"
    assert now_tool["function"]["name"] == "now"


async def test_openai_tool_choice_is_forced_natively(start_worker, llm, openai_stub):
    await gpt(start_worker, openai_stub)
    [r] = await llm.chat_oai(
        "what time is it?", model="gpt", tools=[add, now], tool_choice=now, execute_tool=True
    )
    assert r.values == ["12:00"]
    assert openai_stub.last_request["tool_choice"] == {
        "type": "function",
        "function": {"name": "now"},
    }


async def test_openai_bad_arguments_give_a_reason_not_an_exception(start_worker, llm, openai_stub):
    await gpt(start_worker, openai_stub)
    [r] = await llm.chat_oai(
        'add {"a": "many", "b": 1}', model="gpt", tools=[add], execute_tool=True
    )
    assert r.values == []
    assert "bad tool arguments" in r.metadata["reason"] and "a" in r.metadata["reason"]


async def test_openai_without_execute_returns_the_choice_as_json(start_worker, llm, openai_stub):
    await gpt(start_worker, openai_stub)
    [r] = await llm.chat_oai('add {"a": 1, "b": 1}', model="gpt", tools=[add])
    call = json.loads(r.output.strip("`\njson"))["tool_calls"][0]
    assert call["function"] == {"name": "add", "arguments": {"a": 1, "b": 1}}
    assert r.metadata["finish_reason"] == "tool_calls"


async def test_native_tools_can_be_turned_off_per_deployment(start_worker, llm, openai_stub):
    await gpt(start_worker, openai_stub, **{"saas.native_tools": "false"})
    await llm.chat_oai('add {"a": 1, "b": 1}', model="gpt", tools=[add])
    sent = openai_stub.last_request
    assert "tools" not in sent
    prompt = sent["messages"][-1]["content"]
    assert '"name": "add"' in prompt and "tool_calls" in prompt, "tools described in the text"


async def test_claude_gets_input_schemas_and_the_tool_runs(start_worker, llm, claude_stub):
    await claude(start_worker, claude_stub)
    [r] = await llm.chat_oai(
        'add {"a": 40, "b": 2}', model="sonnet", tools=[add, now], execute_tool=True
    )
    assert r.values == ["42 apples"]
    assert r.metadata["selected_functions"] == ["add"]
    sent = claude_stub.last.json()
    assert [t["name"] for t in sent["tools"]] == ["add", "now"]
    assert sent["tools"][0]["input_schema"]["properties"]["b"]["type"] == "integer"
    assert sent["messages"] == [{"role": "user", "content": 'add {"a": 40, "b": 2}'}]


async def test_claude_tool_choice_and_words_before_the_choice(start_worker, llm, claude_stub):
    await claude(start_worker, claude_stub)
    [r] = await llm.chat_oai(
        "tell me the time", model="sonnet", tools=[add, now], tool_choice="now"
    )
    assert claude_stub.last.json()["tool_choice"] == {"type": "tool", "name": "now"}
    assert r.output.startswith("I will use a tool.")
    assert '"name": "now"' in r.output


async def test_backend_without_native_tools_gets_them_in_the_prompt(start_worker, llm):
    """The echo test backend answers with the prompt it was sent."""
    await start_worker("plain")
    [r] = await llm.chat_oai("what time is it?", model="plain", tools=[now])
    assert '"name": "now"' in r.output and "what time is it?" in r.output


async def test_bedrock_claude_gets_tools_in_the_anthropic_body(start_worker, llm):
    pytest.importorskip("boto3")
    from tests.stubs.bedrock_stub import BedrockStub
    from tests.test_saas_aws_bedrock import ACCESS, guide_params

    with BedrockStub(ACCESS) as stub:
        await start_worker("bedrock", model_type="saas/aws_bedrock", **guide_params(stub))
        [r] = await llm.chat_oai(
            'add {"a": 1, "b": 2}', model="bedrock", tools=[add], execute_tool=True
        )
        assert r.values == ["3 apples"]
        assert stub.last.json()["tools"][0]["name"] == "add"


async def test_native_tool_choice_travels_structured_not_as_text(start_worker, llm, openai_stub):
    """The worker sends the vendor's tool choice as a field of the end reply; the
    client reads it as it came (and also shows it in the answer text)."""
    await gpt(start_worker, openai_stub)
    channel = llm.channel
    payload = {
        "conversations": [{"role": "user", "content": 'add {"a": 2, "b": 3, "unit": "pear"}'}],
        "tools": [tool_spec(add)],
    }
    call = await channel.submit("gpt", RequestKind.CHAT, payload, timeout=None)
    [end] = [item async for item in channel.replies(call)]
    assert end.type is ReplyType.END
    assert "```" not in end.data["output"]  # no fenced JSON for the client to parse back
    [choice] = end.data["tool_calls"]
    assert choice["name"] == "add" and choice["arguments"] == {"a": 2, "b": 3, "unit": "pear"}
    [r] = await llm.chat_oai(payload["conversations"], model="gpt", tools=[add])
    assert [c["name"] for c in r.metadata["tool_calls"]] == ["add"]

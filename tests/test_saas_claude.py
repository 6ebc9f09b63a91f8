"""``saas/claude`` end to end: client -> Redis -> worker -> anthropic SDK -> Messages API stub."""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from byzerllm import BackendError, ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.workers.runtime import Worker
from tests.stubs.anthropic_stub import AnthropicStub
from tests.stubs.server import first_then_rest, gated

pytest.importorskip("anthropic")

KEY = "sk-ant-test-0123456789"
GUIDE = "saas.api_key=${MODEL_CLAUDE_TOEKN} saas.model=claude-3-5-sonnet-20240620"


@pytest.fixture
def stub() -> Iterator[AnthropicStub]:
    with AnthropicStub(KEY) as server:
        yield server


def guide_params(stub: AnthropicStub, **overrides: Any) -> dict[str, Any]:
    params = parse_infer_params(shlex.split(GUIDE))
    params.update({"saas.api_key": KEY, "saas.base_url": stub.base_url, **overrides})
    return params


async def deploy(start_worker, stub, alias: str = "sonnet_3_5_chat", **overrides: Any) -> None:
    await start_worker(alias, model_type="saas/claude", **guide_params(stub, **overrides))


async def test_guide_deploy_line_chats_with_system_prompt_and_usage(start_worker, llm, stub):
    await deploy(start_worker, stub)
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello claude"},
    ]
    [response] = await llm.chat_oai(conversation, model="sonnet_3_5_chat")
    assert response.output == "hello claude"
    assert response.metadata["input_tokens_count"] == 4
    assert response.metadata["generated_tokens_count"] == 2
    sent = stub.last.json()
    assert sent["system"] == "be brief"
    assert sent["messages"] == [{"role": "user", "content": "hello claude"}]
    assert sent["max_tokens"] == 4096, "Anthropic requires max_tokens; a default is sent"
    assert sent["model"] == "claude-3-5-sonnet-20240620"
    assert stub.last.headers["anthropic-version"]


async def test_stream_reassembles_deltas_and_reports_usage(start_worker, llm, stub):
    await deploy(start_worker, stub)
    text = "the quick brown fox jumps"
    items = [i async for i in llm.stream_chat_oai(text, model="sonnet_3_5_chat", delta_mode=True)]
    assert "".join(t for t, _ in items) == text
    final = items[-1][1]
    assert final.input_tokens_count == 5
    assert final.generated_tokens_count == 5
    assert final.finish_reason == "stop"
    assert stub.last.json()["stream"] is True


async def test_stream_chunks_arrive_as_sent(start_worker, llm):
    gate = threading.Event()
    with AnthropicStub(KEY) as slow:
        events_for = slow._events
        # message_start, content_block_start, ping and the first word; then a wait
        slow._events = lambda *args: gated(events_for(*args), gate, held_from=4)
        try:
            await deploy(start_worker, slow)
            stream = llm.stream_chat_oai("a b c d e", model="sonnet_3_5_chat", delta_mode=True)
            first, rest = await first_then_rest(stream, gate)
        finally:
            gate.set()
    assert first == "a "
    assert first + "".join(rest) == "a b c d e"


async def test_llm_config_maps_to_anthropic_names(start_worker, llm, stub):
    await deploy(start_worker, stub, **{"saas.temperature": 0.3})
    [response] = await llm.chat_oai(
        "one two three four five",
        model="sonnet_3_5_chat",
        llm_config={"max_length": 2, "top_p": 0.5, "gen.stop": '["five"]'},
    )
    sent = stub.last.json()
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (2, 0.3, 0.5)
    assert sent["stop_sequences"] == ["five"]
    assert response.output == "one two"
    assert response.metadata["finish_reason"] == "length"


async def test_images_and_turn_order_follow_anthropic_rules(start_worker, llm, stub):
    await deploy(start_worker, stub)
    image = "data:image/png;base64,iVBORw0KGgo="
    conversation = [
        {"role": "system", "content": "you see images"},
        {"role": "assistant", "content": "hi, send a picture"},
        {"role": "user", "content": json.dumps([{"image": image, "text": "what is this?"}])},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}}],
        },
    ]
    [response] = await llm.chat_oai(conversation, model="sonnet_3_5_chat")
    assert response.output == "what is this?"
    messages = stub.last.json()["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]
    assert messages[2]["content"] == [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
        },
        {"type": "text", "text": "what is this?"},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
    ]


async def test_wrong_key_is_an_authentication_error_without_the_key(start_worker, llm, stub):
    wrong = "sk-ant-wrong-999999"
    await deploy(start_worker, stub, **{"saas.api_key": wrong})
    with pytest.raises(BackendError, match="^authentication failed: invalid x-api-key") as caught:
        await llm.chat_oai("hi", model="sonnet_3_5_chat")
    assert wrong not in str(caught.value)
    assert "HTTP 401" in str(caught.value) and "authentication_error" in str(caught.value)
    assert stub.request_count == 1
    assert not caught.value.retryable


async def test_rate_limit_then_success_is_retried(start_worker, llm, stub):
    await deploy(start_worker, stub)
    stub.fail_next(429, 529)
    [response] = await llm.chat_oai("finally", model="sonnet_3_5_chat")
    assert response.output == "finally"
    assert stub.request_count == 3


async def test_persistent_server_error_is_retryable_after_max_retries(start_worker, llm, stub):
    await deploy(start_worker, stub, **{"saas.max_retries": 1})
    stub.fail_always = 500
    with pytest.raises(BackendError, match="Internal server error.*HTTP 500") as caught:
        await llm.chat_oai("hi", model="sonnet_3_5_chat")
    assert caught.value.retryable
    assert stub.request_count == 2


async def test_bad_model_and_long_prompt_keep_the_vendor_message(start_worker, llm, stub):
    await deploy(start_worker, stub, "bad", **{"saas.model": "claude-9"})
    with pytest.raises(BackendError, match="model: claude-9.*HTTP 404.*not_found_error"):
        await llm.chat_oai("hi", model="bad")
    await deploy(start_worker, stub)
    with pytest.raises(BackendError, match="prompt is too long") as caught:
        async for _ in llm.stream_chat_oai("TOO_LONG", model="sonnet_3_5_chat"):
            pass
    assert not caught.value.retryable


async def test_stalled_server_times_out_after_saas_timeout(start_worker, llm):
    with AnthropicStub(KEY, chunk_delay=2.0) as slow:
        await deploy(start_worker, slow, **{"saas.timeout": 0.3, "saas.max_retries": 0})
        with pytest.raises(BackendError, match=r"no answer within 0.3s \(saas.timeout\)"):
            async for _ in llm.stream_chat_oai("a b c", model="sonnet_3_5_chat"):
                pass


@pytest.mark.parametrize("missing", ["saas.api_key", "saas.model"])
def test_missing_key_or_model_fails_the_deploy(settings, stub, missing):
    params = guide_params(stub)
    del params[missing]
    spec = DeploySpec(alias="c", pretrained_model_type="saas/claude", infer_params=params)
    with pytest.raises(ConfigurationError, match=rf"needs {missing.replace('.', '[.]')}"):
        Worker(spec, settings)

"""``saas/qianwen`` and ``saas/qianwen_vl``: DashScope's OpenAI-compatible mode via the openai SDK.

DashScope's compatible mode speaks OpenAI's wire format, so the server is
the OpenAI stub serving Qwen model names; what is tested here is what
differs: the guide's deploy lines, embedding batches of 10, images for
qwen-vl, and DashScope's default address needing a key.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from byzerllm import BackendError, ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.workers.runtime import Worker
from tests.openai_stub import OpenAIStub, embedding_for

KEY = "sk-dashscope-0123456789"
MODELS = ("qwen1.5-32b-chat", "text-embedding-v2", "qwen-vl-max")


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=KEY, models=MODELS) as server:
        yield server


async def deploy_guide(start_worker, stub, alias: str, model_type: str, line: str) -> None:
    params = parse_infer_params(shlex.split(line))
    params.update({"saas.api_key": KEY, "saas.base_url": stub.base_url})
    await start_worker(alias, model_type=model_type, **params)


async def test_guide_chat_line_chats_and_streams(start_worker, llm, stub):
    await deploy_guide(
        start_worker,
        stub,
        "qwen32b_chat",
        "saas/qianwen",
        "saas.api_key=${MODEL_QIANWEN_TOKEN}  saas.model=qwen1.5-32b-chat",
    )
    [response] = await llm.chat_oai("你好 qwen", model="qwen32b_chat")
    assert response.output == "你好 qwen"
    assert stub.last_request is not None and stub.last_request["model"] == "qwen1.5-32b-chat"
    items = [i async for i in llm.stream_chat_oai("a b c", model="qwen32b_chat", delta_mode=True)]
    assert "".join(t for t, _ in items) == "a b c"
    assert items[-1][1].generated_tokens_count == 3


async def test_guide_embedding_line_batches_by_ten_in_order(start_worker, llm, stub):
    await deploy_guide(
        start_worker,
        stub,
        "qianwen_emb",
        "saas/qianwen",
        "saas.api_key=${MODEL_QIANWEN_TOKEN}  saas.model=text-embedding-v2",
    )
    texts = [f"text number {i}" for i in range(23)]
    before = stub.request_count
    results = await llm.emb("qianwen_emb", texts)
    assert stub.request_count - before == 3, "DashScope takes at most 10 texts per call"
    for result, text in zip(results, texts, strict=True):
        assert result.output == pytest.approx(embedding_for(text, 16), abs=1e-6)


async def test_guide_vl_line_sends_images_as_parts(start_worker, llm, stub):
    await deploy_guide(
        start_worker,
        stub,
        "qianwen_vl_max_chat",
        "saas/qianwen_vl",
        "saas.api_key=${MODEL_2_QIANWEN_TOKEN}  saas.model=qwen-vl-max",
    )
    image = "data:image/png;base64,iVBORw0KGgo="
    content = json.dumps([{"image": image, "text": "这个图片里有什么？"}], ensure_ascii=False)
    [response] = await llm.chat_oai(
        [{"role": "user", "content": content}], model="qianwen_vl_max_chat"
    )
    assert response.output == "这个图片里有什么？"
    assert stub.last_request is not None
    assert stub.last_request["messages"][0]["content"][0] == {
        "type": "image_url",
        "image_url": {"url": image},
    }


async def test_errors_keep_the_vendor_message_and_retry_429(start_worker, llm, stub):
    await deploy_guide(start_worker, stub, "q", "saas/qianwen", "saas.model=qwen1.5-32b-chat")
    stub.fail_next(429)
    [response] = await llm.chat_oai("after a 429", model="q")
    assert response.output == "after a 429"
    stub.fail_always = 500
    with pytest.raises(BackendError, match="HTTP 500") as caught:
        await llm.chat_oai("hi", model="q")
    assert caught.value.retryable


async def test_wrong_key_is_an_authentication_error(start_worker, llm, stub):
    params = {"saas.api_key": "sk-wrong-000000", "saas.base_url": stub.base_url}
    await start_worker("q", model_type="saas/qianwen", **params, **{"saas.model": "qwen-vl-max"})
    with pytest.raises(BackendError, match="^authentication failed") as caught:
        await llm.chat_oai("hi", model="q")
    assert "sk-wrong-000000" not in str(caught.value)


def test_dashscope_default_address_needs_a_key(settings):
    params = {"saas.model": "qwen1.5-32b-chat"}
    spec = DeploySpec(alias="q", pretrained_model_type="saas/qianwen", infer_params=params)
    with pytest.raises(ConfigurationError, match=r"needs saas\.api_key, the DashScope API key"):
        Worker(spec, settings)


def test_default_base_url_is_dashscope_compatible_mode(settings):
    params: dict[str, Any] = {"saas.model": "qwen1.5-32b-chat", "saas.api_key": KEY}
    spec = DeploySpec(alias="q", pretrained_model_type="saas/qianwen_vl", infer_params=params)
    worker = Worker(spec, settings)
    assert worker.backend.options.base_url == "https://dashscope.aliyuncs.com/compatible-mode/v1"

"""``saas/azure_openai``: the SDK's AsyncAzureOpenAI against the OpenAI stub in Azure mode.

The stub serves ``/openai/deployments/<name>/...?api-version=...`` with an
``api-key`` header the way Azure does, so these tests check the addressing
and the Azure-only settings; chat behaviour itself is shared with
``saas/openai`` and tested there.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from byzerllm import BackendError, ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.workers.runtime import Worker
from tests.openai_stub import OpenAIStub

KEY = "azure-key-0123456789abcdef"
GUIDE = (
    'saas.api_type="azure" saas.azure_endpoint="https:/xxx.openai.azure.com/" '
    'saas.api_key="xxx" saas.api_version="2024-02-15-preview" '
    'saas.azure_deployment="gpt-4o-2024-05-13" saas.model=gpt-4o'
)


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=KEY) as server:
        server.azure_deployments = {"gpt-4o-2024-05-13": "gpt-4o", "emb": "text-embedding-3-small"}
        yield server


def guide_params(stub: OpenAIStub, **overrides: Any) -> dict[str, Any]:
    params = parse_infer_params(shlex.split(GUIDE))
    params.update({"saas.azure_endpoint": f"http://127.0.0.1:{stub.port}/", "saas.api_key": KEY})
    params.update(overrides)
    return params


async def test_guide_deploy_line_chats_and_streams(start_worker, llm, stub):
    await start_worker("gpt4o_chat", model_type="saas/azure_openai", **guide_params(stub))
    [response] = await llm.chat_oai("hello azure", model="gpt4o_chat")
    assert response.output == "hello azure"
    assert response.metadata["input_tokens_count"] == 2
    deltas = [
        t
        async for t, _ in llm.stream_chat_oai("one two three", model="gpt4o_chat", delta_mode=True)
    ]
    assert "".join(deltas) == "one two three"
    meta = await llm.get_meta(model="gpt4o_chat")
    assert meta["model_name"] == "gpt-4o"
    assert meta["backend"] == "saas/azure_openai"


async def test_embeddings_through_a_deployment(start_worker, llm, stub):
    params = guide_params(stub, **{"saas.azure_deployment": "emb"})
    del params["saas.model"]
    await start_worker("emb", model_type="saas/azure_openai", **params)
    [result] = await llm.emb("emb", ["some text"])
    assert len(result.output) == 16


async def test_wrong_key_keeps_azure_message_and_hides_the_key(start_worker, llm, stub):
    wrong = "wrong-azure-key-999"
    await start_worker(
        "gpt", model_type="saas/azure_openai", **guide_params(stub, **{"saas.api_key": wrong})
    )
    with pytest.raises(BackendError, match="^authentication failed: Access denied") as caught:
        await llm.chat_oai("hi", model="gpt")
    assert wrong not in str(caught.value)
    assert stub.request_count == 1


async def test_unknown_deployment_keeps_azure_message(start_worker, llm, stub):
    params = guide_params(stub, **{"saas.azure_deployment": "nope"})
    await start_worker("gpt", model_type="saas/azure_openai", **params)
    with pytest.raises(BackendError, match="deployment for this resource does not exist"):
        await llm.chat_oai("hi", model="gpt")


async def test_rate_limit_then_success_is_retried(start_worker, llm, stub):
    await start_worker("gpt", model_type="saas/azure_openai", **guide_params(stub))
    stub.fail_next(429)
    [response] = await llm.chat_oai("after a retry", model="gpt")
    assert response.output == "after a retry"
    assert stub.request_count == 2


@pytest.mark.parametrize(
    "missing", ["saas.azure_endpoint", "saas.api_version", "saas.azure_deployment", "saas.api_key"]
)
def test_missing_azure_key_fails_the_deploy_naming_it(settings, stub, missing):
    params = guide_params(stub)
    del params[missing]
    spec = DeploySpec(alias="a", pretrained_model_type="saas/azure_openai", infer_params=params)
    with pytest.raises(ConfigurationError, match=rf"needs {missing.replace('.', '[.]')}, e\.g\."):
        Worker(spec, settings)


def test_the_guides_typo_in_the_endpoint_is_reported(settings):
    params = parse_infer_params(shlex.split(GUIDE))
    spec = DeploySpec(alias="a", pretrained_model_type="saas/azure_openai", infer_params=params)
    with pytest.raises(ConfigurationError, match=r"saas\.azure_endpoint must be a URL"):
        Worker(spec, settings)

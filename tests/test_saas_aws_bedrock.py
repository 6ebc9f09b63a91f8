"""``saas/aws_bedrock`` end to end: worker -> boto3 bedrock-runtime -> event-stream stub."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from byzerllm import BackendError, ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.workers.runtime import Worker
from tests.stubs.bedrock_stub import BedrockStub

pytest.importorskip("boto3")

ACCESS, SECRET = "AKIASTUBTEST0001", "stub/secret+key/0123456789abcdefghij"
GUIDE = (
    "--cpus_per_worker 0.001 --gpus_per_worker 0 --worker_concurrency 10 --num_workers 1 "
    "--infer_params saas.aws_access_key=xxx saas.aws_secret_key=xx saas.region_name=us-east-1 "
    "saas.model=anthropic.claude-3-5-sonnet-20240620-v1:0 --model sonnet_3_5_chat"
)


def guide_params(stub: BedrockStub, **overrides: Any) -> dict[str, Any]:
    tokens = shlex.split(GUIDE)
    tokens = tokens[tokens.index("--infer_params") + 1 : tokens.index("--model")]
    params = parse_infer_params(tokens)
    params.update(
        {
            "saas.aws_access_key": ACCESS,
            "saas.aws_secret_key": SECRET,
            "saas.endpoint_url": stub.base_url,
            **overrides,
        }
    )
    return params


@pytest.fixture
def stub() -> Iterator[BedrockStub]:
    with BedrockStub(ACCESS) as server:
        yield server


async def deploy(start_worker, stub, alias: str = "sonnet_3_5_chat", **overrides: Any) -> None:
    await start_worker(alias, model_type="saas/aws_bedrock", **guide_params(stub, **overrides))


async def test_guide_deploy_line_invokes_with_the_anthropic_body(start_worker, llm, stub):
    await deploy(start_worker, stub)
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello bedrock"},
    ]
    [response] = await llm.chat_oai(conversation, model="sonnet_3_5_chat")
    assert response.output == "hello bedrock"
    assert response.metadata["input_tokens_count"] == 4
    assert response.metadata["generated_tokens_count"] == 2
    sent = stub.last
    assert sent.path == "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke"
    body = sent.json()
    assert body["anthropic_version"] == "bedrock-2023-05-31", "the default for anthropic.* models"
    assert body["system"] == "be brief"
    assert body["max_tokens"] == 4096
    assert "us-east-1/bedrock/aws4_request" in sent.headers["authorization"]


async def test_stream_decodes_the_aws_event_stream(start_worker, llm, stub):
    await deploy(start_worker, stub)
    text = "the quick brown fox"
    items = [i async for i in llm.stream_chat_oai(text, model="sonnet_3_5_chat", delta_mode=True)]
    assert "".join(t for t, _ in items) == text
    final = items[-1][1]
    assert (final.input_tokens_count, final.generated_tokens_count) == (4, 4)
    assert final.finish_reason == "stop"
    assert stub.last.path.endswith("/invoke-with-response-stream")


async def test_error_inside_the_stream_keeps_the_vendor_message(start_worker, llm, stub):
    await deploy(start_worker, stub)
    with pytest.raises(BackendError, match="Model stream failed midway"):
        async for _ in llm.stream_chat_oai("FAIL_MID_STREAM now", model="sonnet_3_5_chat"):
            pass


async def test_bad_credentials_are_an_authentication_error_without_the_secret(
    start_worker, llm, stub
):
    await deploy(start_worker, stub, **{"saas.aws_access_key": "AKIAWRONG"})
    with pytest.raises(BackendError, match="^authentication failed: The security token") as caught:
        await llm.chat_oai("hi", model="sonnet_3_5_chat")
    assert SECRET not in str(caught.value)
    assert "UnrecognizedClientException" in str(caught.value)
    assert stub.request_count == 1


async def test_throttling_then_success_is_retried_by_botocore(start_worker, llm, stub):
    await deploy(start_worker, stub)
    stub.fail_next(429)
    [response] = await llm.chat_oai("after throttling", model="sonnet_3_5_chat")
    assert response.output == "after throttling"
    assert stub.request_count == 2


async def test_persistent_server_error_is_retryable(start_worker, llm, stub):
    await deploy(start_worker, stub, **{"saas.max_retries": 1})
    stub.fail_always = 500
    with pytest.raises(
        BackendError, match="internal error.*HTTP 500.*InternalServerException"
    ) as caught:
        await llm.chat_oai("hi", model="sonnet_3_5_chat")
    assert caught.value.retryable
    assert stub.request_count == 2


async def test_bad_model_and_long_input_keep_the_vendor_message(start_worker, llm, stub):
    await deploy(start_worker, stub, "bad", **{"saas.model": "anthropic.claude-9"})
    with pytest.raises(BackendError, match="model identifier is invalid.*ValidationException") as c:
        await llm.chat_oai("hi", model="bad")
    assert not c.value.retryable
    await deploy(start_worker, stub)
    with pytest.raises(BackendError, match="Input is too long"):
        await llm.chat_oai("TOO_LONG", model="sonnet_3_5_chat")


@pytest.mark.parametrize(
    "missing", ["saas.aws_access_key", "saas.aws_secret_key", "saas.region_name", "saas.model"]
)
def test_missing_setting_fails_the_deploy_naming_it(settings, stub, missing):
    params = guide_params(stub)
    del params[missing]
    spec = DeploySpec(alias="b", pretrained_model_type="saas/aws_bedrock", infer_params=params)
    with pytest.raises(ConfigurationError, match=rf"needs {missing.replace('.', '[.]')}") as c:
        Worker(spec, settings)
    assert SECRET not in str(c.value)


def test_non_anthropic_model_needs_an_explicit_api_version(settings, stub):
    params = guide_params(stub, **{"saas.model": "meta.llama3-70b-instruct-v1:0"})
    spec = DeploySpec(alias="b", pretrained_model_type="saas/aws_bedrock", infer_params=params)
    with pytest.raises(ConfigurationError, match="saas.model_api_version"):
        Worker(spec, settings)

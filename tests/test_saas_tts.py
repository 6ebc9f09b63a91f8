"""``saas/volcengine`` and ``saas/azure``: TTS over plain HTTP against protocol stubs.

The guide asks TTS deployments through ``chat_oai`` with a JSON request and
decodes ``output`` as base64 audio; the stubs "synthesize" text naming what
they were sent, so decoding the audio shows the request arrived intact.
``stream_chat_oai`` gives the audio as bytes, piece by piece as the vendor
sends it (the stubs hold back all but the first piece until the client has it).
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from byzerllm import BackendError, ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.workers.runtime import Worker
from tests.openai_stub import OpenAIStub
from tests.stubs.server import first_then_rest
from tests.stubs.tts_stubs import AzureSpeechStub, VolcengineStub, decode, dumps

TOKEN, APP_ID, AZURE_KEY = "volc-token-0123456789", "6503259792", "azure-speech-key-abcdef"
VOLC_GUIDE = "saas.api_key=${MODEL_VOLCANO_TTS_TOKEN} saas.app_id=6503259792 saas.model=volcano_tts"
AZURE_GUIDE = "saas.api_key=${MODEL_AZURE_TTS_TOKEN} saas.service_region=eastus"


def guide(line: str, **overrides: Any) -> dict[str, Any]:
    params = parse_infer_params(shlex.split(line))
    params.update(overrides)
    return params


@pytest.fixture
def volc() -> Iterator[VolcengineStub]:
    with VolcengineStub(TOKEN, APP_ID) as server:
        yield server


@pytest.fixture
def azure() -> Iterator[AzureSpeechStub]:
    with AzureSpeechStub(AZURE_KEY) as server:
        yield server


async def deploy_volc(start_worker, volc, **overrides: Any) -> None:
    params = guide(VOLC_GUIDE, **{"saas.api_key": TOKEN, "saas.base_url": volc.base_url})
    params.update(overrides)
    await start_worker("volcano_tts", model_type="saas/volcengine", **params)


async def deploy_azure(start_worker, azure, **overrides: Any) -> None:
    params = guide(AZURE_GUIDE, **{"saas.api_key": AZURE_KEY, "saas.base_url": azure.base_url})
    params.update(overrides)
    await start_worker("azure_tts", model_type="saas/azure", **params)


# -- volcengine --------------------------------------------------------------------------


async def test_volcengine_guide_line_returns_base64_audio(start_worker, llm, volc):
    await deploy_volc(start_worker, volc)
    request = {"input": "你好，火山", "voice": "BV700_streaming", "response_format": "mp3"}
    [response] = await llm.chat_oai(
        [{"role": "user", "content": dumps(request)}], model="volcano_tts"
    )
    assert decode(response.output) == "mp3|BV700_streaming|你好，火山"
    sent = volc.last.json()
    assert sent["app"] == {"appid": "6503259792", "token": TOKEN, "cluster": "volcano_tts"}
    assert sent["request"]["operation"] == "query"


async def test_volcengine_plain_text_uses_the_default_voice(start_worker, llm, volc):
    await deploy_volc(start_worker, volc)
    [response] = await llm.chat_oai("just this", model="volcano_tts")
    assert decode(response.output) == "mp3|BV705_streaming|just this"


async def test_volcengine_wrong_token_hides_it(start_worker, llm, volc):
    await deploy_volc(start_worker, volc, **{"saas.api_key": "volc-wrong-999999"})
    with pytest.raises(BackendError, match="^authentication failed: authenticate request") as c:
        await llm.chat_oai("hi", model="volcano_tts")
    assert "volc-wrong-999999" not in str(c.value)
    assert volc.request_count == 1


async def test_volcengine_retries_429_then_succeeds_and_reports_500(start_worker, llm, volc):
    await deploy_volc(start_worker, volc, **{"saas.max_retries": 2})
    volc.fail_next(429, 500)
    [response] = await llm.chat_oai("third time", model="volcano_tts")
    assert decode(response.output) == "mp3|BV705_streaming|third time"
    assert volc.request_count == 3
    volc.fail_always = 500
    with pytest.raises(BackendError, match="server busy.*HTTP 500.*retried up to 2") as c:
        await llm.chat_oai("hi", model="volcano_tts")
    assert c.value.retryable


async def test_volcengine_vendor_code_error_keeps_its_message(start_worker, llm, volc):
    await deploy_volc(start_worker, volc)
    with pytest.raises(BackendError, match="text too long.*code 3010") as c:
        await llm.chat_oai("x" * 2000, model="volcano_tts")
    assert not c.value.retryable


@pytest.mark.parametrize("missing", ["saas.api_key", "saas.app_id"])
def test_volcengine_missing_setting_fails_the_deploy(settings, missing):
    params = guide(VOLC_GUIDE)
    del params[missing]
    spec = DeploySpec(alias="v", pretrained_model_type="saas/volcengine", infer_params=params)
    with pytest.raises(ConfigurationError, match=rf"needs {missing.replace('.', '[.]')}"):
        Worker(spec, settings)


# -- azure speech ------------------------------------------------------------------------


async def test_azure_guide_line_sends_ssml_and_returns_base64_audio(start_worker, llm, azure):
    await deploy_azure(start_worker, azure)
    request = {"input": "hello <azure> & co", "voice": "en-US-AvaNeural", "response_format": "wav"}
    [response] = await llm.chat_oai(
        [{"role": "user", "content": dumps(request)}], model="azure_tts"
    )
    assert decode(response.output) == "riff-24khz-16bit-mono-pcm|en-US-AvaNeural|hello <azure> & co"
    assert b'xml:lang="en-US"' in azure.last.body


async def test_azure_default_voice_and_mp3(start_worker, llm, azure):
    await deploy_azure(start_worker, azure)
    [response] = await llm.chat_oai("你好", model="azure_tts")
    assert decode(response.output) == "audio-24khz-48kbitrate-mono-mp3|zh-CN-XiaoxiaoNeural|你好"


async def test_azure_wrong_key_hides_it(start_worker, llm, azure):
    await deploy_azure(start_worker, azure, **{"saas.api_key": "azure-wrong-77777"})
    with pytest.raises(BackendError, match="^authentication failed: Access denied") as c:
        await llm.chat_oai("hi", model="azure_tts")
    assert "azure-wrong-77777" not in str(c.value)


async def test_azure_retries_then_reports_empty_bodied_errors(start_worker, llm, azure):
    await deploy_azure(start_worker, azure, **{"saas.max_retries": 1})
    azure.fail_next(429)
    [response] = await llm.chat_oai("after 429", model="azure_tts")
    assert decode(response.output).endswith("|after 429")
    azure.fail_always = 503
    with pytest.raises(BackendError, match="Service Unavailable.*HTTP 503") as c:
        await llm.chat_oai("hi", model="azure_tts")
    assert c.value.retryable
    assert azure.request_count == 4


async def test_azure_unknown_format_says_which_are_offered(start_worker, llm, azure):
    await deploy_azure(start_worker, azure)
    with pytest.raises(ConfigurationError, match="response_format 'flac'.*mp3, wav"):
        await llm.chat_oai(dumps({"input": "x", "response_format": "flac"}), model="azure_tts")
    assert azure.request_count == 0


def test_azure_missing_region_fails_the_deploy(settings):
    params = guide(AZURE_GUIDE)
    del params["saas.service_region"]
    spec = DeploySpec(alias="a", pretrained_model_type="saas/azure", infer_params=params)
    with pytest.raises(ConfigurationError, match=r"needs saas\.service_region"):
        Worker(spec, settings)


def test_azure_region_picks_the_endpoint(settings):
    spec = DeploySpec(
        alias="a", pretrained_model_type="saas/azure", infer_params=guide(AZURE_GUIDE)
    )
    assert (
        Worker(spec, settings).backend.options.base_url == "https://eastus.tts.speech.microsoft.com"
    )


# -- streaming: audio pieces as they arrive ----------------------------------------------

OPENAI_KEY = "sk-openai-tts-0123456789"
OPENAI_GUIDE = "saas.api_key=${MODEL_OPENAI_TOKEN} saas.model=tts-1"
SPEAK = {"input": "hello, open_tts, in pieces", "voice": "alloy", "response_format": "mp3"}
SPOKEN = b"mp3|alloy|hello, open_tts, in pieces"


@pytest.fixture
def openai_stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=OPENAI_KEY) as server:
        yield server


async def deploy_openai_tts(start_worker, stub: OpenAIStub) -> None:
    params = guide(OPENAI_GUIDE, **{"saas.api_key": OPENAI_KEY, "saas.base_url": stub.base_url})
    await start_worker("openai_tts", model_type="saas/openai", **params)


def assert_streamed(first: object, rest: list[object], audio: bytes) -> None:
    """The first piece came alone (the vendor held the rest until the client had
    it), the others followed, and joined they are the whole audio."""
    pieces = [first, *rest]
    assert all(isinstance(p, bytes) for p in pieces), [type(p) for p in pieces]
    assert isinstance(first, bytes) and first and audio.startswith(first) and first != audio
    assert len([p for p in pieces if p]) >= 2
    assert b"".join(pieces) == audio  # type: ignore[arg-type]
    assert rest[-1] == b""  # the last item carries the end metadata, not audio


@pytest.mark.parametrize("delta_mode", [True, False], ids=["delta", "whole"])
async def test_openai_tts_stream_yields_audio_pieces_as_they_arrive(
    start_worker, llm, openai_stub, delta_mode
):
    await deploy_openai_tts(start_worker, openai_stub)
    openai_stub.audio_chunks = 4
    gate = openai_stub.audio_gate = threading.Event()
    stream = llm.stream_chat_oai(
        [{"role": "user", "content": dumps(SPEAK)}], model="openai_tts", delta_mode=delta_mode
    )
    first, rest = await first_then_rest(stream, gate)
    assert_streamed(first, rest, SPOKEN)
    assert openai_stub.last_request == {**SPEAK, "model": "tts-1"}


async def test_openai_tts_unstreamed_still_answers_the_whole_audio_as_base64(
    start_worker, llm, openai_stub
):
    await deploy_openai_tts(start_worker, openai_stub)
    openai_stub.audio_chunks = 4
    [response] = await llm.chat_oai([{"role": "user", "content": dumps(SPEAK)}], model="openai_tts")
    assert decode(response.output) == SPOKEN.decode()


async def test_openai_tts_stream_error_keeps_the_vendor_message(start_worker, llm, openai_stub):
    await deploy_openai_tts(start_worker, openai_stub)
    with pytest.raises(ConfigurationError, match='needs "input"'):
        async for _ in llm.stream_chat_oai(dumps({"voice": "alloy"}), model="openai_tts"):
            pass
    openai_stub.api_key = "sk-someone-else"
    with pytest.raises(BackendError, match="authentication") as caught:
        async for _ in llm.stream_chat_oai("hi", model="openai_tts"):
            pass
    assert OPENAI_KEY not in str(caught.value)


async def test_azure_tts_stream_yields_audio_pieces_as_they_arrive(start_worker, llm, azure):
    await deploy_azure(start_worker, azure)
    azure.pieces = 3
    gate = azure.gate = threading.Event()
    stream = llm.stream_chat_oai("流式合成的语音", model="azure_tts", delta_mode=True)
    first, rest = await first_then_rest(stream, gate)
    assert_streamed(
        first, rest, "audio-24khz-48kbitrate-mono-mp3|zh-CN-XiaoxiaoNeural|流式合成的语音".encode()
    )
    [whole] = await llm.chat_oai("流式合成的语音", model="azure_tts")
    assert decode(whole.output) == b"".join([first, *rest]).decode()


async def test_azure_tts_stream_error_is_raised_not_streamed(start_worker, llm, azure):
    await deploy_azure(start_worker, azure, **{"saas.max_retries": 0})
    azure.fail_always = 503
    with pytest.raises(BackendError, match="HTTP 503"):
        async for _ in llm.stream_chat_oai("hi", model="azure_tts"):
            pass


async def test_volcengine_stream_gives_its_whole_answer_as_one_piece(start_worker, llm, volc):
    await deploy_volc(start_worker, volc)
    items = [item async for item in llm.stream_chat_oai("one piece", model="volcano_tts")]
    assert [text for text, _ in items] == [b"mp3|BV705_streaming|one piece", b""]
    assert items[-1][1].finish_reason == "stop"


async def test_simple_byzerllm_streams_tts_pieces_in_process(openai_stub):
    from byzerllm.simple import AsyncSimpleByzerLLM

    openai_stub.audio_chunks = 3
    gate = openai_stub.audio_gate = threading.Event()
    local = AsyncSimpleByzerLLM(default_model_name="openai_tts")
    params = guide(
        OPENAI_GUIDE, **{"saas.api_key": OPENAI_KEY, "saas.base_url": openai_stub.base_url}
    )
    try:
        await local.deploy("", "saas/openai", "openai_tts", params)
        first, rest = await first_then_rest(local.stream_chat_oai(dumps(SPEAK)), gate)
        assert_streamed(first, rest, SPOKEN)
        [whole] = await local.chat_oai(dumps(SPEAK))
        assert decode(whole.output) == SPOKEN.decode()
    finally:
        await local.aclose()

"""``saas/openai`` end to end: client -> Redis -> worker -> official SDK -> HTTP stub.

Nothing is mocked: the worker's backend talks to :class:`OpenAIStub` over
TCP with the real ``openai`` SDK, so these tests also pin down what we send
on the wire (the stub records the last request body).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from byzerllm import BackendError, ConfigurationError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.workers.runtime import Worker
from tests.openai_stub import OpenAIStub, embedding_for
from tests.redis_server import free_port
from tests.stubs.server import first_then_rest, gated
from tests.waiting import LIMIT, until

KEY = "sk-test-0123456789"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=KEY) as server:
        yield server


async def deploy(
    start_worker: Any,
    stub: OpenAIStub,
    alias: str = "gpt",
    *,
    model: str = "gpt-4o",
    model_type: str = "saas/openai",
    concurrency: int = 4,
    params: dict[str, Any] | None = None,
) -> Any:
    infer_params: dict[str, Any] = {
        "saas.base_url": stub.base_url,
        "saas.api_key": KEY,
        "saas.model": model,
    }
    infer_params.update(params or {})
    return await start_worker(alias, model_type=model_type, concurrency=concurrency, **infer_params)


# -- chat ------------------------------------------------------------------------------


async def test_chat_returns_the_answer_with_vendor_usage(start_worker, llm, stub):
    await deploy(start_worker, stub)
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hello from byzerllm"},
    ]
    [response] = await llm.chat_oai(conversation, model="gpt")
    assert response.output == "hello from byzerllm"
    meta = response.metadata
    assert meta["input_tokens_count"] == 5, "prompt_tokens of the usage chunk"
    assert meta["generated_tokens_count"] == 3, "completion_tokens of the usage chunk"
    assert meta["finish_reason"] == "stop"
    sent = stub.last_request
    assert sent is not None
    assert sent["model"] == "gpt-4o"
    assert sent["messages"] == conversation
    assert sent["stream"] is False, "a whole answer is asked for as one JSON body"


async def test_content_parts_pass_through_unchanged(start_worker, llm, stub):
    await deploy(start_worker, stub)
    parts = [
        {"type": "text", "text": "describe "},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "text", "text": "this"},
    ]
    [response] = await llm.chat_oai([{"role": "user", "content": parts}], model="gpt")
    assert response.output == "describe this"
    assert stub.last_request is not None
    assert stub.last_request["messages"][0]["content"] == parts


async def test_stream_delta_mode_reassembles_text_and_ends_with_usage(start_worker, llm, stub):
    await deploy(start_worker, stub)
    text = "the quick brown fox jumps over the lazy dog"
    items = [item async for item in llm.stream_chat_oai(text, model="gpt", delta_mode=True)]
    deltas = [t for t, _ in items]
    assert "".join(deltas) == text
    assert deltas[-1] == ""
    final = items[-1][1]
    assert final.input_tokens_count == 9
    assert final.generated_tokens_count == 9
    assert final.finish_reason == "stop"
    assert stub.last_request is not None
    assert stub.last_request["stream"] is True
    assert stub.last_request["stream_options"] == {"include_usage": True}


async def test_stream_forwards_chunks_as_the_vendor_sends_them(start_worker, llm):
    gate = threading.Event()
    with OpenAIStub(api_key=KEY, chunk_delay=0.001) as slow:
        stream_for = slow._stream

        def held_back(*args: Any) -> Any:  # the role event and the first word, then a wait
            paced = stream_for(*args)
            paced.events = gated(paced.events, gate, held_from=2)
            return paced

        slow._stream = held_back
        try:
            await deploy(start_worker, slow)
            stream = llm.stream_chat_oai("one two three four five", model="gpt", delta_mode=True)
            first, rest = await first_then_rest(stream, gate)
        finally:
            gate.set()
    assert first == "one "
    assert first + "".join(rest) == "one two three four five"


async def test_leaving_a_stream_early_frees_the_slot_at_once(start_worker, llm):
    with OpenAIStub(api_key=KEY, chunk_delay=3600) as slow:  # an hour between events...
        stream_for = slow._stream

        def first_word_at_once(*args: Any) -> Any:  # ...but the first word comes at once
            paced = stream_for(*args)
            paced.events = [paced.events[0] + paced.events[1], *paced.events[2:]]
            return paced

        slow._stream = first_word_at_once
        await deploy(start_worker, slow, concurrency=1)
        long_text = " ".join(f"w{i}" for i in range(20))
        async for _ in llm.stream_chat_oai(long_text, model="gpt", delta_mode=True):
            break
        [sending] = [c for c in list(slow._connections) if c.busy]
        # read to the end, the vendor stream would stay open for 20 hours
        await until(lambda: sending.transport is None, "the worker to hang up on the vendor")
        # the one slot is free: the next request is answered, not queued for hours
        [response] = await asyncio.wait_for(llm.chat_oai("next", model="gpt"), LIMIT)
    assert response.output == "next"


async def test_reasoning_content_reaches_the_client(start_worker, llm, stub):
    await deploy(start_worker, stub, "reasoner", model="deepseek-reasoner")
    [response] = await llm.chat_oai("why is the sky blue", model="reasoner")
    assert response.output == "why is the sky blue"
    assert response.metadata["reasoning_content"] == "The user said: why is the sky blue"

    items = [
        item async for item in llm.stream_chat_oai("why not", model="reasoner", delta_mode=True)
    ]
    assert "".join(meta.reasoning_content for _, meta in items) == "The user said: why not"
    assert "".join(text for text, _ in items) == "why not"


async def test_llm_config_reaches_the_vendor(start_worker, llm, stub):
    await deploy(start_worker, stub)
    [response] = await llm.chat_oai(
        "one two three four five",
        model="gpt",
        llm_config={"max_length": 3, "temperature": 0.2, "top_p": 0.9},
        extra_request_params={"seed": 7, "user": "tester"},
    )
    sent = stub.last_request
    assert sent is not None
    assert (sent["max_tokens"], sent["temperature"], sent["top_p"]) == (3, 0.2, 0.9)
    assert (sent["seed"], sent["user"]) == (7, "tester"), "extra_request_params go in the body"
    assert response.output == "one two three"
    assert response.metadata["finish_reason"] == "length"


@pytest.mark.parametrize("stop", [["three", "nine"], '["three", "nine"]'])
async def test_gen_stop_as_list_or_json_text(start_worker, llm, stub, stop):
    await deploy(start_worker, stub)
    [response] = await llm.chat_oai(
        "one two three four", model="gpt", llm_config={"gen.stop": stop}
    )
    assert stub.last_request is not None
    assert stub.last_request["stop"] == ["three", "nine"]
    assert response.output == "one two "


async def test_deployment_defaults_apply_unless_the_request_overrides(start_worker, llm, stub):
    await deploy(
        start_worker,
        stub,
        params={"saas.max_output_tokens": 2, "saas.temperature": 0.5},
    )
    [response] = await llm.chat_oai("one two three", model="gpt")
    assert stub.last_request is not None
    assert stub.last_request["max_tokens"] == 2
    assert stub.last_request["temperature"] == 0.5
    assert response.output == "one two"
    await llm.chat_oai("one two three", model="gpt", llm_config={"max_tokens": 5})
    assert stub.last_request["max_tokens"] == 5


async def test_bad_llm_config_value_is_a_configuration_error(start_worker, llm, stub):
    await deploy(start_worker, stub)
    with pytest.raises(ConfigurationError, match="max_length='lots'"):
        await llm.chat_oai("hi", model="gpt", llm_config={"max_length": "lots"})
    assert stub.request_count == 0


# -- embeddings ------------------------------------------------------------------------


async def test_embeddings_have_the_vendor_dimension_in_input_order(start_worker, llm, stub):
    await deploy(start_worker, stub, "emb", model="text-embedding-3-small")
    texts = ["first text", "second text", "third"]
    responses = await llm.emb("emb", texts)
    assert [r.input for r in responses] == texts
    for response, text in zip(responses, texts, strict=True):
        assert len(response.output) == 16
        assert response.output == pytest.approx(embedding_for(text, 16), abs=1e-6)
    assert stub.last_request is not None
    assert stub.last_request["input"] == texts
    [short] = await llm.emb("emb", ["first text"], llm_config={"dimensions": 4})
    assert len(short.output) == 4


# -- errors ----------------------------------------------------------------------------


async def test_wrong_api_key_is_an_authentication_error_without_the_key(start_worker, llm):
    wrong = "sk-wrong-abcdef123456"
    with OpenAIStub(api_key=KEY) as server:
        server.echo_key_in_errors = True  # the worst case: the vendor quotes the key back
        await start_worker(
            "gpt",
            model_type="saas/openai",
            **{"saas.base_url": server.base_url, "saas.api_key": wrong, "saas.model": "gpt-4o"},
        )
        with pytest.raises(BackendError, match="^authentication failed:") as caught:
            await llm.chat_oai("hi", model="gpt")
        assert server.request_count == 1, "a 401 is not retried"
    message = str(caught.value)
    assert wrong not in message
    assert "Incorrect API key" in message and "HTTP 401" in message
    assert not caught.value.retryable


async def test_rate_limit_is_retried_by_the_sdk(start_worker, llm, stub):
    await deploy(start_worker, stub)
    stub.fail_next(429, 429)
    [response] = await llm.chat_oai("finally", model="gpt")
    assert response.output == "finally"
    assert stub.request_count == 3


async def test_persistent_server_error_is_a_retryable_backend_error(start_worker, llm, stub):
    await deploy(start_worker, stub, params={"saas.max_retries": 2})
    stub.fail_always = 500
    with pytest.raises(BackendError, match="server had an error.*HTTP 500") as caught:
        await llm.chat_oai("hi", model="gpt")
    assert caught.value.retryable
    assert stub.request_count == 3, "one try and saas.max_retries retries"


async def test_unknown_model_keeps_the_vendor_message(start_worker, llm, stub):
    await deploy(start_worker, stub, model="gpt-99")
    with pytest.raises(
        BackendError, match="model `gpt-99` does not exist.*model_not_found"
    ) as caught:
        await llm.chat_oai("hi", model="gpt")
    assert not caught.value.retryable


async def test_unreachable_server_names_the_url(start_worker, llm):
    url = f"http://127.0.0.1:{free_port()}/v1"
    await start_worker(
        "gpt",
        model_type="saas/openai",
        **{
            "saas.base_url": url,
            "saas.api_key": KEY,
            "saas.model": "gpt-4o",
            "saas.max_retries": 0,
        },
    )
    with pytest.raises(BackendError, match=f"cannot reach {url}") as caught:
        await llm.chat_oai("hi", model="gpt")
    assert caught.value.retryable
    assert KEY not in str(caught.value)


async def test_stalled_stream_times_out_after_saas_timeout(start_worker, llm):
    with OpenAIStub(api_key=KEY, chunk_delay=2.0) as slow:
        await deploy(start_worker, slow, params={"saas.timeout": 0.3, "saas.max_retries": 0})
        # the vendor pauses 2 s between events: only the 0.3 s timeout ends the stream
        with pytest.raises(BackendError, match=r"no answer within 0.3s \(saas.timeout\)"):
            async for _ in llm.stream_chat_oai("a b c", model="gpt"):
                pass


def new_worker(settings: BrokerSettings, **infer_params: Any) -> Worker:
    """Built directly: the start_worker fixture's teardown assumes a worker started."""
    spec = DeploySpec(alias="gpt", pretrained_model_type="saas/openai", infer_params=infer_params)
    return Worker(spec, settings)


def test_missing_model_fails_the_deploy_naming_the_key(settings, stub):
    with pytest.raises(ConfigurationError, match=r"saas\.model.*saas\.model=gpt-4o"):
        new_worker(settings, **{"saas.base_url": stub.base_url, "saas.api_key": KEY})


def test_official_openai_without_key_fails_the_deploy(settings):
    with pytest.raises(ConfigurationError, match=r"saas\.api_key"):
        new_worker(settings, **{"saas.model": "gpt-4o"})


def test_bad_base_url_fails_the_deploy_without_leaking_credentials(settings):
    with pytest.raises(ConfigurationError, match=r"saas\.base_url") as caught:
        new_worker(settings, **{"saas.model": "gpt-4o", "saas.base_url": "ftp://u:pw@host/v1"})
    assert "pw" not in str(caught.value)


async def test_local_server_needs_no_key(start_worker, llm):
    with OpenAIStub(api_key=None) as local:
        await start_worker(
            "local",
            model_type="saas/openai",
            **{"saas.base_url": local.base_url, "saas.model": "gpt-4o"},
        )
        [response] = await llm.chat_oai("no key needed", model="local")
    assert response.output == "no key needed"


async def test_official_openai_type_serves_chat_and_meta(start_worker, llm, stub):
    await deploy(start_worker, stub, "official", model_type="saas/official_openai")
    [response] = await llm.chat_oai("hello official", model="official")
    assert response.output == "hello official"
    meta = await llm.get_meta(model="official")
    assert meta["model_deploy_type"] == "saas"
    assert meta["model_name"] == "gpt-4o"
    assert meta["support_stream"] is True
    assert meta["backend"] == "saas/official_openai"


async def test_many_concurrent_requests_share_the_connection_pool(start_worker, llm, stub):
    await deploy(start_worker, stub, concurrency=64)
    questions = [f"question {i}" for i in range(300)]
    answers = await asyncio.gather(*(llm.chat_oai(q, model="gpt") for q in questions))
    assert [a[0].output for a in answers] == questions


# -- the stub itself -------------------------------------------------------------------


def _raw_request(path: str, body: dict[str, Any] | None = None) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    method = "POST" if body is not None else "GET"
    return (
        f"{method} {path} HTTP/1.1\r\nhost: stub\r\nauthorization: Bearer {KEY}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
    ).encode() + data


def _read_responses(sock: socket.socket, count: int) -> list[bytes]:
    """Content-length framed responses, in the order the server sent them."""
    buf, out = b"", list[bytes]()
    while len(out) < count:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode()
            length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
            if len(buf) >= head_end + 4 + length:
                out.append(buf[head_end + 4 : head_end + 4 + length])
                buf = buf[head_end + 4 + length :]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the stub closed a keep-alive connection"
        buf += chunk
    return out


def test_stub_answers_pipelined_requests_in_order(stub):
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "first"}]}
    second = {"model": "gpt-4o", "messages": [{"role": "user", "content": "second"}]}
    wire = (
        _raw_request("/v1/chat/completions", chat)
        + _raw_request("/v1/models")
        + _raw_request("/v1/chat/completions", second)
    )
    with socket.create_connection(("127.0.0.1", stub.port), timeout=5) as sock:
        for i in range(0, len(wire), 7):  # split mid-header and mid-body
            sock.sendall(wire[i : i + 7])
        bodies = [json.loads(b) for b in _read_responses(sock, 3)]
    assert bodies[0]["choices"][0]["message"]["content"] == "first"
    assert bodies[1]["object"] == "list"
    assert bodies[2]["choices"][0]["message"]["content"] == "second"


def test_stub_runs_as_a_process():
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_stub", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(_raw_request("/v1/models"))
            [body] = _read_responses(sock, 1)
        assert "gpt-4o" in [m["id"] for m in json.loads(body)["data"]]
    finally:
        proc.terminate()
        proc.wait(10)


# -- multimodal: whisper, tts, dall-e, vision ------------------------------------------


def guide_params(command_line: str, stub: OpenAIStub) -> dict[str, Any]:
    """The guide's ``--infer_params`` tokens, pointed at the stub instead of the vendor."""
    params = parse_infer_params(shlex.split(command_line))
    params["saas.api_key"] = KEY
    params.setdefault("saas.base_url", stub.base_url)
    return params


async def deploy_guide(start_worker, stub, alias: str, command_line: str) -> None:
    await start_worker(alias, model_type="saas/openai", **guide_params(command_line, stub))


def wav_data_url(spoken: str) -> str:
    """The stub hears uploaded bytes as text, so the "audio" is the words themselves."""
    return "data:audio/wav;base64," + base64.b64encode(spoken.encode()).decode()


@pytest.mark.parametrize(
    "content",
    [
        json.dumps({"audio": wav_data_url("in the last chapter")}),
        json.dumps({"audio": base64.b64encode(b"in the last chapter").decode(), "type": "mp3"}),
        f"<_audio_>{wav_data_url('in the last chapter')}</_audio_>",
    ],
    ids=["json-data-url", "json-bare-base64", "audio-tag"],
)
async def test_whisper_returns_verbose_json_with_segments_and_words(
    start_worker, llm, stub, content
):
    await deploy_guide(
        start_worker, stub, "voice2text", "saas.model=whisper-1 saas.api_key=${MODEL_OPENAI_TOKEN}"
    )
    [response] = await llm.chat_oai([{"role": "user", "content": content}], model="voice2text")
    result = json.loads(response.output)
    assert result["text"] == "in the last chapter"
    assert result["task"] == "transcribe"
    assert result["segments"][0]["text"] == " in the last chapter"
    assert [w["word"] for w in result["words"]] == ["in", "the", "last", "chapter"]
    sent = stub.last_request
    assert sent is not None
    assert sent["model"] == "whisper-1"
    assert sent["response_format"] == "verbose_json"
    assert sorted(sent["timestamp_granularities"]) == ["segment", "word"]
    assert sent["file"]["filename"].startswith("audio.")


async def test_whisper_without_audio_says_what_to_send(start_worker, llm, stub):
    await deploy(start_worker, stub, "stt", model="whisper-1")
    with pytest.raises(ConfigurationError, match=r'"audio": "data:audio/wav;base64'):
        await llm.chat_oai("transcribe this please", model="stt")
    assert stub.request_count == 0


async def test_tts_returns_the_audio_bytes_as_base64(start_worker, llm, stub):
    await deploy_guide(start_worker, stub, "openai_tts", "saas.api_key=x saas.model=tts-1")
    request = {"input": "hello, open_tts", "voice": "alloy", "response_format": "mp3"}
    [response] = await llm.chat_oai(
        [{"role": "user", "content": json.dumps(request)}], model="openai_tts"
    )
    assert base64.b64decode(response.output) == b"mp3|alloy|hello, open_tts"
    assert stub.last_request == {**request, "model": "tts-1"}


async def test_tts_of_plain_text_uses_the_default_voice(start_worker, llm, stub):
    await deploy(start_worker, stub, "tts", model="tts-1")
    [response] = await llm.chat_oai("just say this", model="tts")
    assert base64.b64decode(response.output) == b"mp3|alloy|just say this"


async def test_dalle_returns_the_image_as_base64(start_worker, llm, stub):
    await deploy_guide(start_worker, stub, "openai_image_gen", "saas.api_key=x saas.model=dall-e-3")
    request = {"input": "a white siamese cat", "size": "1024x1024", "quality": "standard"}
    [response] = await llm.chat_oai(
        [{"role": "user", "content": json.dumps(request, ensure_ascii=False)}],
        model="openai_image_gen",
    )
    assert base64.b64decode(response.output) == b"1024x1024|standard|a white siamese cat"
    assert stub.last_request is not None
    assert stub.last_request["response_format"] == "b64_json"
    assert stub.last_request["model"] == "dall-e-3"


async def test_dalle_content_filter_keeps_the_vendor_message(start_worker, llm, stub):
    await deploy(start_worker, stub, "img", model="dall-e-3")
    with pytest.raises(BackendError, match="safety system.*content_policy_violation") as caught:
        await llm.chat_oai(json.dumps({"input": "nsfw thing"}), model="img")
    assert not caught.value.retryable


async def test_original_image_json_content_becomes_openai_parts(start_worker, llm, stub):
    await deploy(start_worker, stub)
    image = "data:image/png;base64,iVBORw0KGgo="
    content = json.dumps([{"image": image, "text": "what is in this picture?", "detail": "high"}])
    [response] = await llm.chat_oai([{"role": "user", "content": content}], model="gpt")
    assert response.output == "what is in this picture?"
    assert stub.last_request is not None
    assert stub.last_request["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": image, "detail": "high"}},
        {"type": "text", "text": "what is in this picture?"},
    ]


async def test_image_tags_in_text_become_openai_parts(start_worker, llm, stub):
    await deploy(start_worker, stub)
    content = "<_image_>AAAA</_image_>what is here?"
    [response] = await llm.chat_oai(content, model="gpt")
    assert response.output == "what is here?"
    assert stub.last_request is not None
    assert stub.last_request["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}},
        {"type": "text", "text": "what is here?"},
    ]


async def test_chat_model_given_json_with_input_still_chats(start_worker, llm, stub):
    await deploy(start_worker, stub)
    text = json.dumps({"input": "not an image request"})
    [response] = await llm.chat_oai(text, model="gpt")
    assert response.output == text

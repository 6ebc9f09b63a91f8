"""The gateway's audio, image and rerank endpoints, driven by real clients.

Real Redis, real worker processes (``saas/openai`` in front of the OpenAI
stub, which "speaks" ``<format>|<voice>|<input>``, "hears" the uploaded bytes
as text and "draws" ``<size>|<quality>|<prompt>``; ``custom/bge_rerank`` on a
tiny cross-encoder built by the test), the gateway served by uvicorn, and the
``openai`` SDK (sync and async) or plain HTTP as the client. Since what the
stub answers names what it was sent, each answer shows the request crossed
the gateway, Redis and the worker intact.
"""

from __future__ import annotations

import base64
import io
import threading
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
pytest.importorskip("multipart", reason="python-multipart is not installed (byzerllm[serve])")
openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

from byzerllm.broker.settings import BrokerSettings  # noqa: E402
from byzerllm.client.llm import AsyncByzerLLM  # noqa: E402
from tests.gateway_server import KEY, Gateway  # noqa: E402
from tests.openai_stub import OpenAIStub  # noqa: E402
from tests.waiting import until  # noqa: E402

STUB_KEY = "sk-stub-media-0123456789"
SPOKEN = b"hello from a real wav file"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=STUB_KEY) as server:
        yield server


def vendor(worker_procs: Any, stub: OpenAIStub, alias: str, model: str, **kw: Any) -> None:
    """A ``saas/openai`` worker process for ``model`` of the stub, as the guide deploys one."""
    worker_procs.start(
        alias,
        f"saas.base_url={stub.base_url}",
        f"saas.api_key={STUB_KEY}",
        f"saas.model={model}",
        model_type="saas/openai",
        **kw,
    )


def wav_file(folder: Path) -> Path:
    """A real WAV file (8 kHz mono, 8-bit PCM) whose samples are the bytes of ``SPOKEN``."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(SPOKEN)
    path = folder / "speech.wav"
    path.write_bytes(buffer.getvalue())
    return path


def heard(path: Path) -> str:
    """What the stub transcribes a file as: its bytes read as UTF-8."""
    return path.read_bytes().decode("utf-8", "replace").strip()


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


# -- the openai SDK -----------------------------------------------------------------------


def test_sync_sdk_speech_transcription_and_images(worker_procs, stub, gateway, tmp_path):
    vendor(worker_procs, stub, "speaker", "tts-1")
    vendor(worker_procs, stub, "listener", "whisper-1")
    vendor(worker_procs, stub, "painter", "dall-e-3")
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    try:
        speech = client.audio.speech.create(
            model="speaker", voice="nova", input="hello there", response_format="wav", speed=1.5
        )
        assert speech.content == b"wav|nova|hello there"
        assert speech.response.headers["content-type"] == "audio/wav"
        assert stub.last_request is not None and stub.last_request["speed"] == 1.5
        with client.audio.speech.with_streaming_response.create(
            model="speaker", voice="alloy", input="streamed"
        ) as response:
            assert response.headers["content-type"] == "audio/mpeg"
            assert b"".join(response.iter_bytes()) == b"mp3|alloy|streamed"

        audio = wav_file(tmp_path)
        verbose = client.audio.transcriptions.create(
            model="listener", file=audio, response_format="verbose_json", language="en"
        )
        assert verbose.text == heard(audio) and SPOKEN.decode() in verbose.text
        assert verbose.language == "en"
        assert [w.word for w in verbose.words][-3:] == ["real", "wav", "file"]
        sent = stub.last_request
        assert sent is not None and sent["file"]["content"] == audio.read_bytes()
        assert sent["file"]["filename"].endswith(".wav")
        with audio.open("rb") as f:
            plain = client.audio.transcriptions.create(model="listener", file=f)
        assert plain.text == heard(audio)
        text = client.audio.transcriptions.create(
            model="listener", file=audio, response_format="text"
        )
        assert isinstance(text, str) and text == heard(audio)

        images = client.images.generate(
            model="painter", prompt="a white siamese cat", size="1024x1024", quality="hd", n=2
        )
        assert len(images.data) == 2
        for image in images.data:
            assert base64.b64decode(image.b64_json) == b"1024x1024|hd|a white siamese cat"
        assert stub.last_request is not None and stub.last_request["response_format"] == "b64_json"
    finally:
        client.close()


async def test_async_sdk_streams_speech_as_the_vendor_sends_it(worker_procs, stub, gateway):
    vendor(worker_procs, stub, "speaker", "tts-1")
    gate = threading.Event()
    stub.audio_chunks, stub.audio_gate = 4, gate  # all but the first piece wait for the gate
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    try:
        async with client.audio.speech.with_streaming_response.create(
            model="speaker", voice="echo", input="piece by piece", response_format="opus"
        ) as response:
            assert response.headers["content-type"] == "audio/opus"
            pieces = response.iter_bytes()
            first = await anext(pieces)  # arrived while the vendor still holds the rest
            whole = b"opus|echo|piece by piece"
            assert first and first != whole and whole.startswith(first)
            gate.set()
            rest = b"".join([piece async for piece in pieces])
        assert first + rest == whole
    finally:
        gate.set()
        await client.close()


async def test_leaving_a_speech_stream_cancels_it_on_the_worker(worker_procs, stub, gateway, llm):
    vendor(worker_procs, stub, "speaker", "tts-1", concurrency=2)
    gate = threading.Event()
    stub.audio_chunks, stub.audio_gate = 4, gate
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    try:
        async with client.audio.speech.with_streaming_response.create(
            model="speaker", voice="echo", input="never finished"
        ) as response:
            # the iterator is kept: one dropped here is finalized at once, and closing it
            # closed the connection, so the speech stopped before the block was left
            # (and when the stop beat the worker's next state write, the held slot was
            # never seen: the test's rare failure)
            pieces = response.iter_bytes()
            assert await anext(pieces)
            await _until_free_slots(llm, "speaker", 1, "the speech to hold a slot")
        # leaving the block closed the connection: the worker stops and frees its slot
        await _until_free_slots(llm, "speaker", 2, "the slot to come back")
    finally:
        gate.set()
        await client.close()


async def _until_free_slots(llm: AsyncByzerLLM, alias: str, expected: int, what: str) -> None:
    """Wait for the alias' one worker to show ``expected`` free slots; a failure says
    what the stat showed last."""
    seen: list[Any] = [None]

    async def free_slots() -> bool:
        seen[0] = await llm.stat(alias)
        return seen[0] is not None and seen[0]["state"] == [expected]

    try:
        await until(free_slots, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the stat showed last: {seen[0]}") from None


# -- rerank over plain HTTP -----------------------------------------------------------------


async def test_rerank_ranks_documents_with_the_workers_scores(worker_procs, http, llm, tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (byzerllm[transformers])")
    pytest.importorskip("transformers", reason="transformers is not installed")
    from tests.test_rerank import DOCS, QUERY, _build_reranker

    folder = _build_reranker(tmp_path / "tiny-reranker")
    worker_procs.start(
        "ranker", "threads=1", model_type="custom/bge_rerank", model_path=str(folder)
    )
    [direct] = await llm.emb_rerank("ranker", [[QUERY, doc] for doc in DOCS])
    scores = direct.metadata["scores"]
    documents: list[Any] = [DOCS[0], {"text": DOCS[1]}, DOCS[2], {"text": DOCS[3]}]
    reply = await http.post(
        "/v1/rerank", json={"model": "ranker", "query": QUERY, "documents": documents}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["model"] == "ranker" and body["id"].startswith("rerank-")
    results = body["results"]
    assert sorted(r["index"] for r in results) == [0, 1, 2, 3]
    ranked = [r["relevance_score"] for r in results]
    assert ranked == sorted(ranked, reverse=True)
    for r in results:
        assert abs(r["relevance_score"] - scores[r["index"]]) < 1e-4
        assert r["document"] == {"text": DOCS[r["index"]]}

    top = await http.post(
        "/v1/rerank",
        json={
            "model": "ranker",
            "query": QUERY,
            "documents": DOCS,
            "top_n": 2,
            "return_documents": False,
        },
    )
    assert top.status_code == 200, top.text
    best = top.json()["results"]
    assert [r["index"] for r in best] == [r["index"] for r in results[:2]]
    assert all("document" not in r for r in best)


# -- errors ------------------------------------------------------------------------------


async def test_unknown_alias_is_404_on_every_media_endpoint(start_worker, http, tmp_path):
    await start_worker("echo")
    audio = wav_file(tmp_path).read_bytes()
    replies = {
        "speech": await http.post(
            "/v1/audio/speech", json={"model": "no_such_alias", "input": "x", "voice": "a"}
        ),
        "transcriptions": await http.post(
            "/v1/audio/transcriptions",
            data={"model": "no_such_alias"},
            files={"file": ("speech.wav", audio, "audio/wav")},
        ),
        "images": await http.post(
            "/v1/images/generations", json={"model": "no_such_alias", "prompt": "x"}
        ),
        "rerank": await http.post(
            "/v1/rerank", json={"model": "no_such_alias", "query": "q", "documents": ["d"]}
        ),
    }
    for endpoint, reply in replies.items():
        assert reply.status_code == 404, endpoint
        err = error_of(reply)
        assert err["code"] == "model_not_found" and err["param"] == "model", endpoint
        assert "'no_such_alias'" in err["message"], endpoint


async def test_bad_bodies_are_400_naming_the_parameter(start_worker, stub, http, tmp_path):
    await start_worker(
        "speaker",
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": STUB_KEY, "saas.model": "tts-1"},
    )
    await start_worker(
        "painter",
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": STUB_KEY, "saas.model": "dall-e-3"},
    )

    async def refused(path: str, **kw: Any) -> dict[str, Any]:
        reply = await http.post(path, **kw)
        assert reply.status_code == 400, (path, kw, reply.text)
        return error_of(reply)

    no_input = await refused("/v1/audio/speech", json={"model": "speaker", "voice": "a"})
    assert no_input["param"] == "input" and "the text to speak" in no_input["message"]
    fast = await refused("/v1/audio/speech", json={"model": "speaker", "input": "x", "speed": 9})
    assert fast["param"] == "speed" and "0.25 to 4.0" in fast["message"]
    mp5 = await refused(
        "/v1/audio/speech", json={"model": "speaker", "input": "x", "response_format": "mp5"}
    )
    assert mp5["param"] == "response_format" and "mp3" in mp5["message"]
    broken = await refused(
        "/v1/audio/speech",
        content=b'{"model": "speaker", "input": ',
        headers={"content-type": "application/json"},
    )
    assert "not valid JSON" in broken["message"]

    url = await refused(
        "/v1/images/generations",
        json={"model": "painter", "prompt": "a cat", "response_format": "url"},
    )
    assert url["param"] == "response_format" and url["code"] == "unsupported_parameter"
    assert "b64_json" in url["message"]
    many = await refused("/v1/images/generations", json={"model": "painter", "prompt": "x", "n": 0})
    assert many["param"] == "n" and "1 to 10" in many["message"]
    size = await refused(
        "/v1/images/generations", json={"model": "painter", "prompt": "x", "size": "big"}
    )
    assert size["param"] == "size" and "1024x1024" in size["message"]

    no_docs = await refused("/v1/rerank", json={"model": "r", "query": "q", "documents": []})
    assert no_docs["param"] == "documents"
    bad_doc = await refused("/v1/rerank", json={"model": "r", "query": "q", "documents": [{}]})
    assert bad_doc["param"] == "documents[0]" and '[{"text": "..."}' in bad_doc["message"]

    audio = wav_file(tmp_path).read_bytes()
    as_json = await refused("/v1/audio/transcriptions", json={"model": "speaker"})
    assert "multipart/form-data" in as_json["message"]
    no_file = await refused("/v1/audio/transcriptions", data={"model": "speaker"})
    assert no_file["param"] == "file" and "-F file=@" in no_file["message"]
    srt = await refused(
        "/v1/audio/transcriptions",
        data={"model": "speaker", "response_format": "srt"},
        files={"file": ("speech.wav", audio, "audio/wav")},
    )
    assert srt["param"] == "response_format" and "verbose_json" in srt["message"]
    unnamed = await refused(
        "/v1/audio/transcriptions",
        data={"model": "speaker"},
        files={"file": ("speech", audio, "application/octet-stream")},
    )
    assert unnamed["param"] == "file" and "wav" in unnamed["message"]


async def test_an_alias_of_another_kind_is_400_naming_its_endpoint(
    start_worker, stub, aclient, http, tmp_path
):
    await start_worker("echo")
    await start_worker(
        "speaker",
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": STUB_KEY, "saas.model": "tts-1"},
    )
    with pytest.raises(openai.BadRequestError) as chat_as_speech:
        await aclient.audio.speech.create(model="echo", voice="alloy", input="hi")
    err = chat_as_speech.value
    assert err.param == "model"
    assert "'echo' is a chat (text) model, not a text-to-speech model" in err.message
    assert "/v1/chat/completions" in err.message

    with pytest.raises(openai.BadRequestError) as speech_as_stt:
        await aclient.audio.transcriptions.create(model="speaker", file=wav_file(tmp_path))
    assert "'speaker' is a text-to-speech model" in speech_as_stt.value.message
    assert "POST /v1/audio/speech" in speech_as_stt.value.message

    with pytest.raises(openai.BadRequestError) as speech_as_image:
        await aclient.images.generate(model="speaker", prompt="a cat")
    assert "image generation" in speech_as_image.value.message

    as_rerank = await http.post(
        "/v1/rerank", json={"model": "echo", "query": "q", "documents": ["d"]}
    )
    assert as_rerank.status_code == 400 and "custom/bge_rerank" in error_of(as_rerank)["message"]
    assert stub.request_count == 0, "nothing reached the vendor"


async def test_media_endpoints_need_the_key(start_worker, gateway):
    await start_worker("echo")
    async with httpx2.AsyncClient(base_url=gateway.url("")) as client:
        for path in (
            "/v1/audio/speech",
            "/v1/audio/transcriptions",
            "/v1/images/generations",
            "/v1/rerank",
        ):
            reply = await client.post(path, json={"model": "echo"})
            assert reply.status_code == 401, path
            assert error_of(reply)["code"] == "invalid_api_key"


def test_an_oversized_upload_is_413(redis_server, settings, tmp_path):
    small = BrokerSettings(
        redis_url=redis_server.url, prefix=settings.prefix, max_request_bytes=4096
    )
    audio = wav_file(tmp_path).read_bytes() + bytes(8192)
    with Gateway(small) as gw:
        client = openai.OpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            client.audio.transcriptions.create(model="listener", file=("speech.wav", audio))
        client.close()
    assert caught.value.status_code == 413
    assert "BYZERLLM_MAX_REQUEST_BYTES" in caught.value.message


async def test_no_live_worker_is_503_and_a_vendor_failure_502(
    start_worker, stub, aclient, sync_redis, keys
):
    worker = await start_worker(
        "painter",
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": STUB_KEY, "saas.model": "dall-e-3"},
    )
    with pytest.raises(openai.APIStatusError) as refused:
        await aclient.images.generate(model="painter", prompt="nsfw please")
    assert refused.value.status_code == 502 and "safety system" in refused.value.message
    worker.stop()
    alive = keys.alias("painter").alive
    await until(lambda: sync_redis.zscore(alive, worker.worker_id) is None, "sign off")
    with pytest.raises(openai.InternalServerError) as gone:
        await aclient.images.generate(model="painter", prompt="a cat")
    assert gone.value.status_code == 503 and "'painter'" in gone.value.message

"""Message text never makes the client read a local file.

A chat message is text a user (or a model, or a web page pasted into a
prompt) wrote: a media tag or a JSON image item in it that names a path must
not send that file to the vendor. Files are read only for explicit media
objects (``ImagePath``, ``AudioPath``, ``Image.load_image_from_path``) or
``prepare_messages(..., read_local_files=True)``. What reached the vendor is
read from :class:`OpenAIStub`, behind a real ``saas/openai`` worker.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import byzerllm
from byzerllm import ConfigurationError
from byzerllm.client.multimodal import prepare_messages
from byzerllm.types import AudioPath, ImagePath
from tests.openai_stub import OpenAIStub

KEY = "sk-test-media-files"
SECRET = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA not for the model\n"


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=KEY) as server:
        yield server


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    folder = tmp_path / ".ssh"
    folder.mkdir()
    path = folder / "id_rsa"
    path.write_bytes(SECRET)
    return path


async def gpt(start_worker: Any, stub: OpenAIStub, alias: str = "gpt", model: str = "gpt-4o"):
    return await start_worker(
        alias,
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": KEY, "saas.model": model},
    )


def sent_to_vendor(stub: OpenAIStub) -> str:
    assert stub.last_request is not None, "nothing reached the vendor"
    return json.dumps(stub.last_request, default=repr)


def leaked(text: str) -> bool:
    encoded = base64.b64encode(SECRET).decode()
    return encoded in text or "OPENSSH PRIVATE KEY" in text


async def test_a_path_in_an_image_tag_is_not_read(start_worker, llm, stub, secret_file):
    await gpt(start_worker, stub)
    content = f"<_image_>{secret_file}</_image_>\nwhat is in this picture?"
    [answer] = await llm.chat_oai([{"role": "user", "content": content}], model="gpt")
    sent = sent_to_vendor(stub)
    assert not leaked(sent), "the file named in the tag reached the vendor"
    assert not leaked(answer.output)
    [part] = [p for p in stub.last_request["messages"][0]["content"] if p["type"] == "image_url"]
    # the original's rule for a value that is no URL: it is bare base64, sent as it is
    assert part["image_url"]["url"] == f"data:image/jpeg;base64,{secret_file}"


async def test_a_path_in_a_json_image_item_is_not_read(start_worker, llm, stub, secret_file):
    await gpt(start_worker, stub)
    content = json.dumps([{"image": str(secret_file), "text": "hi"}])
    await llm.chat_oai([{"role": "user", "content": content}], model="gpt")
    assert not leaked(sent_to_vendor(stub)), "the file named in the JSON item reached the vendor"


async def test_a_path_in_an_audio_tag_is_refused_unread(start_worker, llm, stub, secret_file):
    """Audio in text must be a data URL: a path is refused on the client, with the fix."""
    await gpt(start_worker, stub, "stt", model="whisper-1")
    content = f"<_audio_>{secret_file}</_audio_>"
    with pytest.raises(ConfigurationError, match=r"AudioPath\(value=path\)") as caught:
        await llm.chat_oai([{"role": "user", "content": content}], model="stt")
    assert str(secret_file) in str(caught.value), "the error names the value"
    assert not leaked(str(caught.value))
    assert stub.request_count == 0, "nothing reached the vendor"


async def test_stream_chat_does_not_read_a_tagged_path(start_worker, llm, stub, secret_file):
    await gpt(start_worker, stub)
    content = f"<_image_>{secret_file}</_image_> describe"
    async for _text, _meta in llm.stream_chat_oai(content, model="gpt"):
        pass
    assert not leaked(sent_to_vendor(stub))


async def test_image_path_of_the_same_file_is_sent(start_worker, llm, stub, secret_file):
    """The explicit way still works: ImagePath reads the file when it is rendered."""
    await gpt(start_worker, stub)
    content = f"{ImagePath(value=str(secret_file))}\nwhat is in this picture?"
    await llm.chat_oai([{"role": "user", "content": content}], model="gpt")
    [part] = [p for p in stub.last_request["messages"][0]["content"] if p["type"] == "image_url"]
    assert part["image_url"]["url"] == (
        "data:image/jpeg;base64," + base64.b64encode(SECRET).decode()
    )


async def test_load_image_from_path_in_a_json_item_is_sent(start_worker, llm, stub, secret_file):
    await gpt(start_worker, stub)
    image = byzerllm.Image.load_image_from_path(str(secret_file))
    content = json.dumps([{"image": image, "text": "hi"}])
    await llm.chat_oai([{"role": "user", "content": content}], model="gpt")
    assert leaked(sent_to_vendor(stub)), "an explicitly loaded image is sent"


def test_prepare_messages_reads_files_only_when_asked(secret_file):
    tagged = [{"role": "user", "content": f"<_image_>{secret_file}</_image_>\nlook"}]
    [plain] = prepare_messages(tagged)
    assert not leaked(json.dumps(plain))
    [opted_in] = prepare_messages(tagged, read_local_files=True)
    assert opted_in["content"][0]["image_url"]["url"] == (
        "data:image/jpeg;base64," + base64.b64encode(SECRET).decode()
    )
    audio = [{"role": "user", "content": f"<_audio_>{secret_file}</_audio_>"}]
    with pytest.raises(ConfigurationError, match="read_local_files=True"):
        prepare_messages(audio)
    [heard] = prepare_messages(audio, read_local_files=True)
    assert heard["content"][0]["input_audio"]["data"] == base64.b64encode(SECRET).decode()


def test_audio_path_still_reads_its_file(secret_file):
    rendered = str(AudioPath(value=str(secret_file)))
    assert base64.b64encode(SECRET).decode() in rendered

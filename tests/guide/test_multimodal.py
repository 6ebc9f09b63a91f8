"""Guide: 多模态 (images and audio in prompts; JSON contents passed to chat_oai).

The guide's cat1.png is replaced by a small PNG written into tmp_path. The
echo backend answers with the text parts of the last message only, so an
answer without the data URL shows the image arrived as an image part.
"""

import base64
import json
import struct
import zlib

import pytest

import byzerllm
from byzerllm.client.multimodal import prepare_messages
from byzerllm.types import AudioPath, ImagePath


def write_png(path):
    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"\x00\xff\x00\x00"  # one red pixel
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)
    return str(path)


@pytest.fixture
def cat(tmp_path):
    return write_png(tmp_path / "cat1.png")


@pytest.fixture
def vl(serve):
    serve("gpt4o_mini_chat")  # plain echo: answers with the text parts it got


def test_image_path_argument(vl, cat):
    vl_llm = byzerllm.ByzerLLM.from_default_model("gpt4o_mini_chat")

    @byzerllm.prompt()
    def what_in_image(image_path: ImagePath) -> str:
        """
        {{ image_path }}
        这个图片里有什么？
        """

    assert what_in_image.prompt(ImagePath(value=cat)).startswith("<_image_>data:image/png;base64,")
    v = what_in_image.with_llm(vl_llm).run(ImagePath(value=cat))
    assert v == "这个图片里有什么？"


def test_load_image_from_path_in_the_body(vl, cat):
    vl_llm = byzerllm.ByzerLLM.from_default_model("gpt4o_mini_chat")

    @byzerllm.prompt()
    def what_in_image(image_path: str) -> str:
        """
        {{ image }}
        这个图片里有什么？
        """
        return {"image": byzerllm.Image.load_image_from_path(image_path)}

    v = what_in_image.with_llm(vl_llm).run(cat)
    assert v == "这个图片里有什么？"


def test_chat_oai_with_image_and_text_json(vl, cat):
    vl_llm = byzerllm.ByzerLLM.from_default_model("gpt4o_mini_chat")
    image = byzerllm.Image.load_image_from_path(cat)
    v = vl_llm.chat_oai(
        conversations=[
            {
                "role": "user",
                "content": json.dumps(
                    [{"image": image, "text": "这个图片里有什么？"}], ensure_ascii=False
                ),
            }
        ]
    )
    assert v[0].output == "这个图片里有什么？"


def test_chat_oai_with_openai_image_url_parts(vl, cat):
    vl_llm = byzerllm.ByzerLLM.from_default_model("gpt4o_mini_chat")
    image = byzerllm.Image.load_image_from_path(cat)
    v = vl_llm.chat_oai(
        conversations=[
            {
                "role": "user",
                "content": json.dumps(
                    [
                        {"type": "image_url", "image_url": {"url": image, "detail": "high"}},
                        {"text": "这个图片里有什么？", "type": "text"},
                    ],
                    ensure_ascii=False,
                ),
            }
        ]
    )
    assert v[0].output == "这个图片里有什么？"


def test_tts_and_image_generation_requests_pass_through_unchanged(serve):
    serve("openai_tts")
    llm = byzerllm.ByzerLLM.from_default_model("openai_tts")
    request = json.dumps(
        {"input": "hello, open_tts", "voice": "alloy", "response_format": "mp3"}, ensure_ascii=False
    )
    t = llm.chat_oai(conversations=[{"role": "user", "content": request}])
    assert t[0].output == request


def test_audio_path_argument(serve, tmp_path):
    audio_file = tmp_path / "output_audio.mp3"
    audio_file.write_bytes(b"ID3 fake mp3")
    # what reaches the model is an audio part and no text: a whisper-like model answers JSON
    serve(
        "speech_to_text",
        rules=[{"match": "^$", "reply": '{"text": "hello", "task": "transcribe"}'}],
    )
    llm = byzerllm.ByzerLLM.from_default_model("speech_to_text")

    @byzerllm.prompt(llm=llm)
    def audio_to_text(audio_file: AudioPath):
        """
        {{ audio_file }}
        """

    v = audio_to_text(AudioPath(value=str(audio_file)))
    assert json.loads(v)["text"] == "hello"


def test_content_conversion_shapes(cat):
    image = byzerllm.Image.load_image_from_path(cat)
    assert image.startswith("data:image/png;base64,")
    # a path in a tag is read only on request (tests/test_media_files.py: never by default)
    [tagged] = prepare_messages(
        [{"role": "user", "content": f"<_image_>{cat}</_image_>\n看图"}], read_local_files=True
    )
    assert tagged["content"] == [
        {"type": "image_url", "image_url": {"url": image}},
        {"type": "text", "text": "看图"},
    ]
    [pair] = prepare_messages(
        [{"role": "user", "content": json.dumps([{"image": image, "text": "t"}])}]
    )
    assert pair["content"][0]["image_url"]["url"] == image
    audio = str(AudioPath(value="data:audio/mpeg;base64," + base64.b64encode(b"x").decode()))
    [spoken] = prepare_messages([{"role": "user", "content": audio}])
    assert spoken["content"] == [
        {"type": "input_audio", "input_audio": {"data": "eA==", "format": "mp3"}}
    ]
    plain = [
        {"role": "user", "content": "[1, 2, 3]"},
        {"role": "user", "content": '{"input": "x"}'},
    ]
    assert prepare_messages(plain) == plain


def test_missing_image_file_is_a_clear_error(tmp_path):
    with pytest.raises(byzerllm.ConfigurationError, match="nope.png"):
        byzerllm.Image.load_image_from_path(str(tmp_path / "nope.png"))

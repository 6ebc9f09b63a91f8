"""OpenAI's non-chat models behind ``chat``: whisper, tts and dall-e, as the guide uses them.

The original byzerllm had no separate API for these: a deployment of
``whisper-1``, ``tts-1`` or ``dall-e-3`` is asked through ``chat_oai`` with a
JSON object in the last user message, and the answer is text. Binary output
(speech, images) is base64 text because a chat answer is a string; the
transcription is the vendor's verbose JSON, serialized, with its segment and
word timings, because that is what the guide shows callers parsing. Speech
comes from the vendor's streamed response, piece by piece, so a streamed call
passes each piece on as it arrives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.spec import OpenAIMediaKind, openai_media_kind
from byzerllm.workers.backend import Chunk
from byzerllm.workers.media import audio_of, media_request

MediaKind = OpenAIMediaKind
model_kind = openai_media_kind


def media_kind(model: str, content: Any) -> tuple[MediaKind, dict[str, Any]] | None:
    """What to do with a request: the model name decides, the content gives the parameters.

    Only the model decides, so that a chat deployment asked about a JSON
    object that happens to hold ``"input"`` still chats. A tts or dall-e
    deployment sent a bare string speaks or draws that string.
    """
    kind = model_kind(model)
    if kind is None:
        return None
    request = media_request(content)
    if kind == "transcribe":
        if request is None or audio_of(request) is None:
            raise ConfigurationError(
                f"{model} transcribes audio: send the last user message as "
                '{"audio": "data:audio/wav;base64,..."} or <_audio_>data:...</_audio_>'
            )
        return kind, request
    if request is None:
        return kind, {"input": content if isinstance(content, str) else str(content)}
    return kind, request


async def transcribe(client: Any, model: str, request: dict[str, Any]) -> Chunk:
    audio = audio_of(request)
    if audio is None:
        raise ConfigurationError('a speech-to-text request needs "audio": a base64 data URL')
    params: dict[str, Any] = {
        "model": model,
        "file": (f"audio.{audio.format}", audio.data),
        "response_format": request.get("response_format", "verbose_json"),
    }
    if params["response_format"] == "verbose_json":
        params["timestamp_granularities"] = request.get(
            "timestamp_granularities", ["word", "segment"]
        )
    for name in ("language", "prompt", "temperature"):
        if request.get(name) is not None:
            params[name] = request[name]
    result = await client.audio.transcriptions.create(**params)
    if isinstance(result, str):  # text, srt and vtt formats come back as bare text
        return Chunk(text=result, finish_reason="stop")
    return Chunk(text=json.dumps(result.to_dict(), ensure_ascii=False), finish_reason="stop")


async def speak(client: Any, model: str, request: dict[str, Any]) -> AsyncIterator[bytes]:
    """The audio as the vendor streams it (``with_streaming_response``)."""
    text = request.get("input")
    if not isinstance(text, str) or not text:
        raise ConfigurationError(
            'a tts request needs "input", the text to speak: '
            '{"input": "hello", "voice": "alloy", "response_format": "mp3"}'
        )
    params: dict[str, Any] = {
        "model": model,
        "input": text,
        "voice": request.get("voice") or "alloy",
        "response_format": request.get("response_format") or "mp3",
    }
    if request.get("speed") is not None:
        params["speed"] = float(request["speed"])
    async with client.with_streaming_response.audio.speech.create(**params) as response:
        async for piece in response.iter_bytes():
            yield piece


async def draw(client: Any, model: str, request: dict[str, Any]) -> Chunk:
    prompt = request.get("input") or request.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise ConfigurationError(
            'an image request needs "input", the prompt: '
            '{"input": "a white siamese cat", "size": "1024x1024", "quality": "standard"}'
        )
    params: dict[str, Any] = {
        "model": model,
        "prompt": prompt,
        "n": 1,
        "size": request.get("size") or "1024x1024",
        "response_format": "b64_json",
    }
    if request.get("quality"):
        params["quality"] = request["quality"]
    if request.get("style"):
        params["style"] = request["style"]
    result = await client.images.generate(**params)
    return Chunk(text=result.data[0].b64_json or "", finish_reason="stop")

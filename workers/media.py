"""The original byzerllm's message-content conventions, read once for every SaaS backend.

Clients of the original library do not send OpenAI content parts only: a
prompt function renders an image or an audio file as a tag
(``<_image_>data:...</_image_>``; our own client turns tags into
``image_url``/``input_audio`` parts first, other clients may not),
``chat_oai`` users put the JSON text of
``[{"image": dataurl, "text": ...}]`` in ``content``, and TTS, image and
speech-to-text requests are a JSON object (``{"input", "voice"}``,
``{"input", "size"}``, ``{"audio"}``) in the last user message. Every vendor
backend needs the same reading of these, so it lives here, vendor-neutral:
the result is OpenAI-style parts, which each backend maps to its own wire
format.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from byzerllm.broker.errors import ConfigurationError

_TAG = re.compile(r"<_(image|audio)_>(.*?)</_\1_>", re.DOTALL)
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?,(.*)$", re.DOTALL)
# Keys that make a JSON object in ``content`` a media request rather than a chat turn.
_MEDIA_KEYS = ("input", "voice", "audio", "audio_url")


@dataclass(slots=True)
class Audio:
    data: bytes
    format: str  # file extension the vendor uses to guess the codec: wav, mp3...


def decode_json(content: Any) -> Any:
    """``content`` as the client meant it: JSON text is the original's way to send structure."""
    if isinstance(content, str):
        text = content.strip()
        if text[:1] in ("{", "[") and text[-1:] in ("}", "]"):
            try:
                return json.loads(text)
            except ValueError:
                return content
    return content


def media_request(content: Any) -> dict[str, Any] | None:
    """The JSON object of a TTS, image or speech-to-text request, or None for a chat turn."""
    value = decode_json(content)
    if isinstance(value, list):
        audio = next(
            (p for p in value if isinstance(p, dict) and p.get("type") == "input_audio"), None
        )
        if audio is not None:  # the client's own conversion of an <_audio_> tag
            spec = audio.get("input_audio") or {}
            return {"audio": spec.get("data", ""), "type": spec.get("format") or "wav"}
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0] if any(k in value[0] for k in _MEDIA_KEYS) else None
    if isinstance(value, dict) and any(k in value for k in _MEDIA_KEYS):
        return value
    if isinstance(content, str):
        match = next((m for m in _TAG.finditer(content) if m.group(1) == "audio"), None)
        if match is not None:
            return {"audio": match.group(2).strip()}
    return None


def audio_of(request: dict[str, Any]) -> Audio | None:
    """The audio of a speech-to-text request: a data URL, or bare base64 plus ``type``."""
    raw = request.get("audio") or request.get("audio_url")
    if not raw:
        return None
    if not isinstance(raw, str):
        raise ConfigurationError("the audio of a speech-to-text request must be base64 text")
    fmt = str(request.get("type") or "wav")
    match = _DATA_URL.match(raw.strip())
    if match:
        mime, params, payload = match.groups()
        if mime and "/" in mime:
            fmt = mime.split("/", 1)[1].removeprefix("x-")
        if not (params or "").endswith("base64"):
            raise ConfigurationError("audio data URLs must be base64: data:audio/wav;base64,...")
        raw = payload
    try:
        return Audio(base64.b64decode(raw, validate=False), {"mpeg": "mp3"}.get(fmt, fmt))
    except (binascii.Error, ValueError):
        raise ConfigurationError(
            "the audio of a speech-to-text request is not base64; send "
            '{"audio": "data:audio/wav;base64,..."}'
        ) from None


def image_url(value: str) -> str:
    """Bare base64 is what the original sent for JPEGs; vendors want a data URL."""
    value = value.strip()
    if value.startswith(("data:", "http://", "https://")):
        return value
    return "data:image/jpeg;base64," + value


def to_parts(content: Any) -> Any:
    """OpenAI content for one message: text stays text, images become ``image_url`` parts."""
    value = decode_json(content)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        parts = _parts_of_items(value)
        return parts if parts else content
    if isinstance(content, str) and "<_image_>" in content:
        return _parts_of_tags(content)
    return content


def _parts_of_items(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind in ("text", "image_url"):
            parts.append(item)
            continue
        if kind is not None:
            continue
        image = item.get("image") or item.get("image_url")
        if isinstance(image, str) and image:
            extra = {k: v for k, v in item.items() if k not in ("image", "image_url", "text")}
            parts.append({"type": "image_url", "image_url": {"url": image_url(image), **extra}})
        if isinstance(item.get("text"), str):
            parts.append({"type": "text", "text": item["text"]})
    return parts


def _parts_of_tags(text: str) -> list[dict[str, Any]] | str:
    parts: list[dict[str, Any]] = []
    last = 0
    for match in _TAG.finditer(text):
        if match.group(1) != "image":
            continue
        before = text[last : match.start()]
        if before.strip():
            parts.append({"type": "text", "text": before})
        parts.append({"type": "image_url", "image_url": {"url": image_url(match.group(2))}})
        last = match.end()
    if text[last:].strip():
        parts.append({"type": "text", "text": text[last:]})
    return parts or text


def openai_messages(conversations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages with the original's image conventions turned into OpenAI parts."""
    out = []
    for message in conversations:
        content = message.get("content")
        converted = to_parts(content)
        out.append(message if converted is content else {**message, "content": converted})
    return out


def split_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64)`` of a base64 data URL; None for other URLs."""
    match = _DATA_URL.match(url)
    if not match or not (match.group(2) or "").endswith("base64"):
        return None
    return match.group(1) or "image/jpeg", match.group(3)

"""Media requests in a chat message: TTS, image and speech-to-text, read for every backend.

The guide sends these as a JSON object in the last user message
(``{"input", "voice"}`` for speech, ``{"input", "size"}`` for images,
``{"audio"}`` for transcription), or as an ``<_audio_>`` tag that a client
may have turned into an ``input_audio`` part already. SaaS and local
backends (whisper) read them the same way here. Chat content conventions
(tags, JSON lists, image parts) are :mod:`byzerllm.broker.content`.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from byzerllm.broker.content import DATA_URL, TAG, decode_json
from byzerllm.broker.errors import ConfigurationError

# Keys that make a JSON object in ``content`` a media request rather than a chat turn.
_MEDIA_KEYS = ("input", "voice", "audio", "audio_url")


@dataclass(slots=True)
class Audio:
    data: bytes
    format: str  # file extension the vendor uses to guess the codec: wav, mp3...


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
        match = next((m for m in TAG.finditer(content) if m.group(1) == "audio"), None)
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
    match = DATA_URL.match(raw.strip())
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

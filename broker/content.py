"""Message content conventions of the original byzerllm, read once for both sides.

The original's clients do not send OpenAI content parts only: text may embed
``<_image_>url-or-base64</_image_>`` and ``<_audio_>...</_audio_>`` tags or a
bare image data URL, and a content may be a JSON list (or its JSON text)
such as ``[{"image": url, "text": "..."}]`` or OpenAI ``image_url`` parts.
:func:`to_parts` turns all of these into OpenAI content parts. Our client
converts before sending; a worker converts what other clients send. Neither
reads a file a value names: ``load_file`` is given only when the caller
asked for local files explicitly (``prepare_messages(...,
read_local_files=True)``), never for ordinary message text. Other JSON
contents (the TTS and image requests of the guide, JSON objects) pass
through untouched.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

TAG = re.compile(r"<_(image|audio)_>(.*?)</_\1_>", re.DOTALL)
DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?(;[^,]*)?,(.*)$", re.DOTALL)
_BARE_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,[A-Za-z0-9+/=]+")
_PART_KEYS = {"image", "text", "type", "image_url", "audio", "input_audio", "detail"}

# (path, default mime type) -> data URL, or None when the value is not a readable file
LoadFile = Callable[[str, str], str | None]


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


def image_url(value: str, load_file: LoadFile | None = None) -> str:
    """A URL for an image value: URLs as they are, a readable file as a data URL when
    ``load_file`` is given (an explicit opt-in), anything else as the bare base64
    JPEG the original sent: a path is then sent as text, not read."""
    value = value.strip()
    if value.startswith(("data:", "http://", "https://")):
        return value
    loaded = load_file(value, "image/jpeg") if load_file else None
    return loaded or "data:image/jpeg;base64," + value


def image_part(url: str, detail: Any = None, load_file: LoadFile | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"url": image_url(url, load_file)}
    if detail:
        spec["detail"] = detail
    return {"type": "image_url", "image_url": spec}


def audio_part(value: str, load_file: LoadFile | None = None) -> dict[str, Any]:
    """An ``input_audio`` part from a data URL, a readable file (only with
    ``load_file``), or bare base64 (wav)."""
    value = value.strip()
    if not value.startswith("data:"):
        value = (load_file(value, "audio/mpeg") if load_file else None) or (
            "data:audio/wav;base64," + value
        )
    header, _, data = value.partition(",")
    fmt = header.split("/", 1)[-1].split(";", 1)[0]
    fmt = {"mpeg": "mp3", "x-wav": "wav"}.get(fmt, fmt)
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def _text_parts(text: str, load_file: LoadFile | None) -> list[dict[str, Any]] | None:
    """Parts for text with media tags or bare image data URLs; None when it has neither."""
    if "<_image_>" not in text and "<_audio_>" not in text and "data:image/" not in text:
        return None
    parts: list[dict[str, Any]] = []
    for match in TAG.finditer(text):
        kind, body = match.group(1), match.group(2).strip()
        parts.append(
            image_part(body, None, load_file) if kind == "image" else audio_part(body, load_file)
        )
    text = TAG.sub("", text)
    for url in _BARE_DATA_URL.findall(text):
        parts.append(image_part(url))
    text = _BARE_DATA_URL.sub("", text).strip()
    if not parts:
        return None
    if text:
        parts.append({"type": "text", "text": text})
    return parts


def _json_parts(items: list[Any], load_file: LoadFile | None) -> list[dict[str, Any]] | None:
    """OpenAI parts for the guide's JSON list shapes; None if ``items`` is not one."""
    if not items or not all(isinstance(i, dict) and set(i) <= _PART_KEYS for i in items):
        return None
    if not any(("image" in i or "image_url" in i or "audio" in i or "type" in i) for i in items):
        return None
    parts: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "image_url":
            url = item.get("image_url")
            parts.append(
                {"type": "image_url", "image_url": url if isinstance(url, dict) else {"url": url}}
            )
        elif kind is not None:
            parts.append(dict(item))  # already an OpenAI part (text, input_audio)
        else:
            image = item.get("image") or item.get("image_url")
            if image:
                parts.append(image_part(str(image), item.get("detail"), load_file))
            if "audio" in item:
                parts.append(audio_part(str(item["audio"]), load_file))
            if "text" in item:
                parts.append({"type": "text", "text": str(item["text"])})
    return parts


def to_parts(content: Any, load_file: LoadFile | None = None) -> Any:
    """The content as OpenAI parts when it carries media, else unchanged."""
    if isinstance(content, list):
        return _json_parts(content, load_file) or content
    if not isinstance(content, str):
        return content
    stripped = content.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        items = decode_json(stripped)
        if isinstance(items, list):
            parts = _json_parts(items, load_file)
            if parts is not None:
                return parts
    return _text_parts(content, load_file) or content


def with_parts(
    messages: list[dict[str, Any]], load_file: LoadFile | None = None
) -> list[dict[str, Any]]:
    """Copies of ``messages`` whose media contents are OpenAI parts; the input is not changed."""
    out = []
    for message in messages:
        content = message.get("content")
        converted = to_parts(content, load_file)
        out.append(message if converted is content else {**message, "content": converted})
    return out


def split_data_url(url: str) -> tuple[str, str] | None:
    """``(media_type, base64)`` of a base64 data URL; None for other URLs."""
    match = DATA_URL.match(url)
    if not match or not (match.group(2) or "").endswith("base64"):
        return None
    return match.group(1) or "image/jpeg", match.group(3)

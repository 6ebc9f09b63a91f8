"""Images and audio in prompts, converted to OpenAI content parts on the client.

The original's convention (``nontext.py``): text may embed
``<_image_>path-or-data-url</_image_>``; a message content may also be a JSON
list such as ``[{"image": url, "text": "..."}]`` or OpenAI ``image_url``
parts. Backends get one shape only: a list of OpenAI content parts. Other
JSON contents (the TTS / image-generation requests of the guide, which are
JSON objects) pass through untouched.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from byzerllm.broker.errors import ConfigurationError

_TAG = re.compile(r"<_(image|audio)_>(.*?)</_\1_>", re.DOTALL)
_BARE_DATA_URL = re.compile(r"data:image/[\w.+-]+;base64,[A-Za-z0-9+/=]+")
_PART_KEYS = {"image", "text", "type", "image_url", "audio", "input_audio"}


def _data_url(path: str, default_mime: str) -> str:
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read media file {path!r}: {exc.strerror}") from None
    mime = mimetypes.guess_type(file.name)[0] or default_mime
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


class Image:
    """Helpers of the original's ``byzerllm.Image``."""

    @staticmethod
    def load_image_from_path(path: str) -> str:
        """The image file as a ``data:image/...;base64,...`` URL."""
        return _data_url(path, "image/jpeg")


class ImagePath(BaseModel):
    """An image argument of a prompt function; renders as an ``<_image_>`` tag."""

    value: str

    def __str__(self) -> str:
        url = self.value if self.value.startswith(("data:", "http://", "https://")) else None
        return f"<_image_>{url or Image.load_image_from_path(self.value)}</_image_>"


class AudioPath(BaseModel):
    """An audio argument of a prompt function; renders as an ``<_audio_>`` tag."""

    value: str

    def __str__(self) -> str:
        url = self.value if self.value.startswith("data:") else _data_url(self.value, "audio/mpeg")
        return f"<_audio_>{url}</_audio_>"


def _image_part(url: str, detail: str | None = None) -> dict[str, Any]:
    if not url.startswith(("data:", "http://", "https://")):
        url = Image.load_image_from_path(url) if Path(url).expanduser().exists() else url
        if not url.startswith(("data:", "http://", "https://")):
            url = "data:image/jpeg;base64," + url  # a bare base64 payload, as the original allowed
    image_url: dict[str, Any] = {"url": url}
    if detail:
        image_url["detail"] = detail
    return {"type": "image_url", "image_url": image_url}


def _audio_part(url: str) -> dict[str, Any]:
    if not url.startswith("data:"):
        url = _data_url(url, "audio/mpeg")
    header, _, data = url.partition(",")
    fmt = header.split("/", 1)[-1].split(";", 1)[0]
    fmt = {"mpeg": "mp3", "x-wav": "wav"}.get(fmt, fmt)
    return {"type": "input_audio", "input_audio": {"data": data, "format": fmt}}


def _text_parts(text: str) -> list[dict[str, Any]] | None:
    """Parts for text with media tags or bare image data URLs; None when it has neither."""
    if "<_image_>" not in text and "<_audio_>" not in text and "data:image/" not in text:
        return None
    parts: list[dict[str, Any]] = []
    rest: list[str] = []
    for match in _TAG.finditer(text):
        kind, body = match.group(1), match.group(2).strip()
        parts.append(_image_part(body) if kind == "image" else _audio_part(body))
    text = _TAG.sub("", text)
    for url in _BARE_DATA_URL.findall(text):
        parts.append(_image_part(url))
    text = _BARE_DATA_URL.sub("", text)
    rest.append(text.strip())
    if not parts:
        return None
    if rest[0]:
        parts.append({"type": "text", "text": rest[0]})
    return parts


def _json_parts(items: list[Any]) -> list[dict[str, Any]] | None:
    """OpenAI parts for the guide's JSON list shapes; None if ``items`` is not one."""
    if not items or not all(
        isinstance(i, dict) and set(i) <= _PART_KEYS | {"detail"} for i in items
    ):
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
            if "image" in item:
                parts.append(_image_part(str(item["image"]), item.get("detail")))
            if "audio" in item:
                parts.append(_audio_part(str(item["audio"])))
            if "text" in item:
                parts.append({"type": "text", "text": str(item["text"])})
    return parts


def content_parts(content: Any) -> Any:
    """The content as OpenAI parts when it carries media, else unchanged."""
    if isinstance(content, list):
        return _json_parts(content) or content
    if not isinstance(content, str):
        return content
    stripped = content.strip()
    if stripped.startswith("[") and stripped.endswith("]"):
        try:
            items = json.loads(stripped)
        except ValueError:
            items = None
        if isinstance(items, list):
            parts = _json_parts(items)
            if parts is not None:
                return parts
    return _text_parts(content) or content


def prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``messages`` whose media contents are OpenAI parts; the input is not changed."""
    prepared = []
    for message in messages:
        converted = content_parts(message.get("content"))
        prepared.append(
            message if converted is message.get("content") else {**message, "content": converted}
        )
    return prepared

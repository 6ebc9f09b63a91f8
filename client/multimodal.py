"""Images and audio in prompts: the media argument types, and the client's conversion.

The original's convention (``nontext.py``) is read by
:mod:`byzerllm.broker.content`, shared with the workers; the client adds
only what a worker cannot do: read a local file a tag names. Backends get
one shape: a list of OpenAI content parts.
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from byzerllm.broker.content import to_parts, with_parts
from byzerllm.broker.errors import ConfigurationError


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


def _local_file(path: str, default_mime: str) -> str | None:
    """A file a media value names, as a data URL; None when the value is no file.

    An image value that is no file is sent as the bare base64 the original
    allowed; an audio value must be a file or a data URL.
    """
    if Path(path).expanduser().is_file():
        return _data_url(path, default_mime)
    if default_mime.startswith("audio/"):
        raise ConfigurationError(
            f"cannot read audio file {path[:200]!r}: give a file path or a data:audio/... URL"
        )
    return None


def content_parts(content: Any) -> Any:
    """The content as OpenAI parts when it carries media, else unchanged."""
    return to_parts(content, _local_file)


def prepare_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``messages`` whose media contents are OpenAI parts; the input is not changed."""
    return with_parts(messages, _local_file)

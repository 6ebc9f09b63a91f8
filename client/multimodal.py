"""Images and audio in prompts: the media argument types, and the client's conversion.

The original's convention (``nontext.py``) is read by
:mod:`byzerllm.broker.content`, shared with the workers. Backends get one
shape: a list of OpenAI content parts.

Local files are read only for explicit media objects: :class:`ImagePath`,
:class:`AudioPath` and :meth:`Image.load_image_from_path` turn a path into a
data URL, and ``prepare_messages(..., read_local_files=True)`` reads the
paths that tags and JSON items name. Message text itself never makes the
client read a file: it may come from a user, a document or a model, and
``<_image_>~/.ssh/id_rsa</_image_>`` in it must not send that key to a
vendor. A tag value that is no URL is sent as it is (bare base64, as the
original sent it).
"""

from __future__ import annotations

import base64
import mimetypes
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from byzerllm.broker.content import LoadFile, to_parts, with_parts
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


def _no_file(value: str, default_mime: str) -> str | None:
    """What a media value in message text is when files are not read: never a file.

    An image value that is no URL stays the bare base64 the original allowed;
    an audio value must be a data URL, as the client always asked.
    """
    if default_mime.startswith("audio/"):
        raise ConfigurationError(
            f"audio {value[:200]!r} in message text is not a data:audio/...;base64 URL, and "
            "message text never makes the client read a file: use AudioPath(value=path) in a "
            "prompt function, or prepare_messages(messages, read_local_files=True) for "
            "messages you wrote yourself"
        )
    return None


def _loader(read_local_files: bool) -> LoadFile:
    return _local_file if read_local_files else _no_file


def content_parts(content: Any, read_local_files: bool = False) -> Any:
    """The content as OpenAI parts when it carries media, else unchanged.

    ``read_local_files``: see :func:`prepare_messages`.
    """
    return to_parts(content, _loader(read_local_files))


def prepare_messages(
    messages: list[dict[str, Any]], read_local_files: bool = False
) -> list[dict[str, Any]]:
    """Copies of ``messages`` whose media contents are OpenAI parts; the input is not changed.

    Every chat call runs this with ``read_local_files=False``: a path in a
    media tag or JSON image item is then sent as text, never read. Pass True
    only for messages you wrote yourself, and send the result (OpenAI parts
    pass through chat_oai unchanged)::

        llm.chat_oai(prepare_messages(messages, read_local_files=True))

    For one file, ``ImagePath(value=path)`` in a prompt function or
    ``byzerllm.Image.load_image_from_path(path)`` in the message is simpler.
    """
    return with_parts(messages, _loader(read_local_files))

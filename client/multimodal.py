"""Images and audio in prompts: the media argument types, and the client's conversion.

The original's convention (``nontext.py``) is read by
:mod:`byzerllm.broker.content`, shared with the workers. Backends get one
shape: a list of OpenAI content parts.

Local files are read only for explicit media objects: :class:`ImagePath`,
:class:`AudioPath` and :meth:`Image.load_image_from_path` turn a path into a
data URL, ``prepare_messages(..., read_local_files=True)`` reads the
paths that tags and JSON items name, and so do the original's text helpers
``Image(text).to_content()`` and ``Audio(text).to_content()`` when called.
Message text itself never makes the client read a file: it may come from a
user, a document or a model, and ``<_image_>~/.ssh/id_rsa</_image_>`` in it
must not send that key to a vendor. A tag value that is no URL is sent as it is (bare base64, as the
original sent it).
"""

from __future__ import annotations

import base64
import mimetypes
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from byzerllm.broker.content import LoadFile, split_data_url, to_parts, with_parts
from byzerllm.broker.errors import ConfigurationError


def _data_url(path: str, default_mime: str) -> str:
    file = Path(path).expanduser()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read media file {path!r}: {exc.strerror}") from None
    mime = mimetypes.guess_type(file.name)[0] or default_mime
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _save_data_url(kind: str, data_url: str, output_path: str, auto_fix_suffix: bool) -> str:
    """Write a ``data:<kind>/...;base64,`` URL (tags around it allowed) to a file."""
    value = data_url.strip()
    tagged = re.fullmatch(rf"<_{kind}_>(.*)</_{kind}_>", value, re.DOTALL)
    if tagged:
        value = tagged.group(1).strip()
    parts = split_data_url(value) if value.startswith(f"data:{kind}/") else None
    if parts is None:
        raise ConfigurationError(
            f"not {kind} data: expected a data:{kind}/...;base64,... URL, got {value[:60]!r}"
        )
    mime, payload = parts
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise ConfigurationError(f"the {mime} data URL holds invalid base64") from None
    path = Path(output_path)
    if auto_fix_suffix and mimetypes.guess_type(path.name)[0] != mime:
        suffix = mimetypes.guess_extension(mime) or "." + mime.split("/", 1)[1]
        path = path.with_suffix(suffix)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise ConfigurationError(f"cannot write {kind} file {path}: {exc.strerror}") from None
    return str(path)


class _MediaText:
    """Text with ``<_image_>`` / ``<_audio_>`` tags: the original's nontext helpers.

    Unlike message text sent to a model, these helpers read the files that
    tags name: calling them on a text is the explicit opt-in (only do so for
    text you trust, not a model's or a user's).
    """

    kind = ""
    default_mime = ""

    def __init__(self, text: str) -> None:
        self.text = text

    def _bodies(self) -> list[str]:
        """The tag bodies, in order."""
        kind = self.kind
        return [m.strip() for m in re.findall(rf"<_{kind}_>(.*?)</_{kind}_>", self.text, re.DOTALL)]

    def _has(self) -> bool:
        return bool(self._bodies())

    def _as_url(self, value: str) -> str:
        if value.startswith(("data:", "http://", "https://")):
            return value
        return _data_url(value, self.default_mime)

    def _content(self, keep_empty_text: bool) -> list[dict[str, str]]:
        items = [{self.kind: self._as_url(body)} for body in self._bodies()]
        rest = re.sub(rf"<_{self.kind}_>.*?</_{self.kind}_>", "", self.text, flags=re.DOTALL)
        if rest.strip() or keep_empty_text:
            items.append({"text": rest.strip()})
        return items

    @classmethod
    def _paths(cls, text: str, to_base64: bool, tags: tuple[str, ...]) -> list[str]:
        """Tag bodies that are not data URLs (file paths), or those files as data URLs."""
        pattern = rf"<_({'|'.join(tags)})_>(.*?)</_\1_>"
        paths = [b.strip() for _, b in re.findall(pattern, text, re.DOTALL)]
        paths = [p for p in paths if not p.startswith(f"data:{cls.kind}/")]
        return [_data_url(p, cls.default_mime) for p in paths] if to_base64 else paths

    @classmethod
    def _load(cls, path: str, only_content: bool) -> str:
        url = _data_url(path, cls.default_mime)
        return url if only_content else f"<_{cls.kind}_>{url}</_{cls.kind}_>"


class Image(_MediaText):
    """The original's ``byzerllm.Image`` / ``byzerllm.utils.nontext.Image``.

    ``Image(text)`` reads the ``<_image_>`` tags of a text; the static methods
    load and save image files.
    """

    kind = "image"
    default_mime = "image/jpeg"

    def has_image(self) -> bool:
        return self._has()

    def to_content(self) -> list[dict[str, str]]:
        """``[{"image": url}, ..., {"text": rest}]``: tagged files are read as data URLs."""
        return self._content(keep_empty_text=True)

    @staticmethod
    def load_image_from_path(path: str, only_content: bool = True) -> str:
        """The image file as a ``data:image/...;base64,...`` URL.

        ``only_content=False`` wraps it in ``<_image_>`` tags. The original's
        default was the tagged form; here the bare URL is, as the guide puts
        it into ``{"image": ...}`` items and ``image_url`` parts.
        """
        return Image._load(path, only_content)

    @staticmethod
    def save_image_to_path(image_data: str, output_path: str, auto_fix_suffix: bool = False) -> str:
        """Write a ``data:image/...;base64,`` URL to ``output_path``; returns the path written.

        ``auto_fix_suffix`` replaces a suffix that does not fit the image type."""
        return _save_data_url("image", image_data, output_path, auto_fix_suffix)

    @staticmethod
    def extract_image_paths(text: str, to_base64: bool = False) -> list[str]:
        """The paths in ``<_image_>`` / ``<_img_>`` tags (data URLs skipped); read if asked."""
        return Image._paths(text, to_base64, ("image", "img"))

    @staticmethod
    def convert_image_paths_from(
        text: str, start_tag: str = "<img>", end_tag: str = "</img>"
    ) -> str:
        """Rewrite ``<img>path</img>`` (or other tags) as ``<_image_>path</_image_>``."""
        pattern = re.escape(start_tag) + r"(.*?)" + re.escape(end_tag)
        return re.sub(
            pattern, lambda m: f"<_image_>{m.group(1).strip()}</_image_>", text, flags=re.DOTALL
        )


class Audio(_MediaText):
    """The original's ``byzerllm.utils.nontext.Audio``: ``<_audio_>`` tags and audio files."""

    kind = "audio"
    default_mime = "audio/mpeg"

    def has_audio(self) -> bool:
        return self._has()

    def to_content(self) -> list[dict[str, str]]:
        """``[{"audio": url}, ..., {"text": rest}]``, the text item only when there is text."""
        return self._content(keep_empty_text=False)

    @staticmethod
    def load_audio_from_path(path: str, only_content: bool = False) -> str:
        """The audio file as ``<_audio_>data:audio/...;base64,...</_audio_>`` (the bare
        data URL with ``only_content=True``), as in the original."""
        return Audio._load(path, only_content)

    @staticmethod
    def save_audio_to_path(audio_data: str, output_path: str, auto_fix_suffix: bool = False) -> str:
        """Write a ``data:audio/...;base64,`` URL to ``output_path``; returns the path written."""
        return _save_data_url("audio", audio_data, output_path, auto_fix_suffix)

    @staticmethod
    def extract_audio_paths(text: str, to_base64: bool = False) -> list[str]:
        """The paths in ``<_audio_>`` tags (data URLs skipped); read if asked."""
        return Audio._paths(text, to_base64, ("audio",))


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

"""The bodies of the media endpoints: speech, transcriptions, images and rerank.

OpenAI's wire format for the first three, the Cohere/Jina shape that LiteLLM
and vLLM serve for rerank; checked by pydantic, so that a bad field becomes a
400 naming it (:func:`parse_media`). Unknown fields are accepted and ignored,
as clients send fields newer than this file.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from byzerllm.client.gateway.errors import _ApiError
from byzerllm.client.gateway.schemas import parse_body

Body = TypeVar("Body", bound="_MediaBody")

AudioFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]

# what the speech formats are sent as
AUDIO_TYPES: dict[str, str] = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class _MediaBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    # what a field should look like, for the 400 that names it (over schemas.py's,
    # which describe the chat fields: "input" there is an embedding's input)
    EXAMPLES: ClassVar[dict[str, str]] = {}


class SpeechRequest(_MediaBody):
    model: str
    input: Annotated[str, Field(min_length=1, max_length=4096)]
    voice: str | None = None  # None: the deployment's voice
    response_format: AudioFormat = "mp3"
    speed: Annotated[float, Field(ge=0.25, le=4.0)] | None = None
    instructions: str | None = None
    stream_format: Literal["audio"] | None = None

    EXAMPLES: ClassVar[dict[str, str]] = {
        "input": '"input": "the text to speak" (1 to 4096 characters)',
        "voice": '"voice": "alloy" (a voice of the alias\' vendor; leave it out for the '
        "deployment's)",
        "response_format": "one of " + ", ".join(AUDIO_TYPES),
        "speed": "a number from 0.25 to 4.0, e.g. 1.0",
        "stream_format": '"audio" (the bytes stream as they are made; "sse" is not served)',
    }


class TranscriptionForm(_MediaBody):
    """The form fields of a transcription upload, beside its ``file``."""

    model: str
    language: str | None = None
    prompt: str | None = None
    response_format: Literal["json", "text", "verbose_json"] = "json"
    temperature: Annotated[float, Field(ge=0, le=1)] | None = None
    timestamp_granularities: list[Literal["word", "segment"]] | None = None

    EXAMPLES: ClassVar[dict[str, str]] = {
        "response_format": '"json", "text" or "verbose_json"',
        "temperature": "a number from 0 to 1",
        "timestamp_granularities": '"word" and/or "segment" (as timestamp_granularities[])',
        "language": 'an ISO-639-1 code, e.g. "en"',
    }


class ImageRequest(_MediaBody):
    model: str
    prompt: Annotated[str, Field(min_length=1)]
    n: Annotated[int, Field(ge=1, le=10)] = 1
    size: Annotated[str, Field(pattern=r"^(auto|\d{2,5}x\d{2,5})$")] | None = None
    quality: Literal["standard", "hd", "low", "medium", "high", "auto"] | None = None
    style: Literal["vivid", "natural"] | None = None
    # None: b64_json, the one form served (OpenAI's default, url, needs storage)
    response_format: Literal["b64_json", "url"] | None = None
    user: str | None = None

    EXAMPLES: ClassVar[dict[str, str]] = {
        "prompt": '"prompt": "a white siamese cat"',
        "n": "an integer from 1 to 10",
        "size": '"1024x1024" (width x height) or "auto"',
        "quality": "one of standard, hd, low, medium, high, auto",
        "style": '"vivid" or "natural"',
        "response_format": '"b64_json"',
    }


class RerankDocument(_MediaBody):
    text: str


class RerankRequest(_MediaBody):
    model: str
    query: Annotated[str, Field(min_length=1)]
    documents: Annotated[list[str | RerankDocument], Field(min_length=1)]
    top_n: Annotated[int, Field(ge=0)] | None = None  # None or 0: every document
    return_documents: bool = True

    EXAMPLES: ClassVar[dict[str, str]] = {
        "query": '"query": "what is a panda?"',
        "documents": '"documents": ["text", ...] or [{"text": "..."}, ...]',
        "text": '{"text": "a document"}',
        "top_n": "a positive integer (the best n results), or leave it out for all",
        "return_documents": "true or false",
    }

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


def parse_media(cls: type[Body], body: bytes) -> Body:
    """``cls`` read from a JSON body (schemas.py's :func:`parse_body`), its 400s
    completed with this endpoint's example of the bad field."""
    try:
        return parse_body(cls, body)
    except _ApiError as err:
        raise _with_example(cls, err) from None


def parse_form_fields(cls: type[Body], fields: dict[str, Any]) -> Body:
    """``cls`` read from form fields (strings, and lists of them), with the same 400s."""
    return parse_media(cls, json.dumps(fields).encode())


def _with_example(cls: type[_MediaBody], err: _ApiError) -> _ApiError:
    """``err`` with the example of the field it names, where this endpoint has one."""
    if err.status != 400 or not err.param:
        return err
    names = [part.split("[")[0] for part in err.param.split(".")]
    example = next((cls.EXAMPLES[n] for n in reversed(names) if n in cls.EXAMPLES), None)
    if example is None:
        return err
    head = err.message.split("; expected ", 1)[0]
    return _ApiError(400, f"{head}; expected {example}", param=err.param, code=err.code)

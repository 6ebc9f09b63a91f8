"""Audio, image and rerank endpoints of the gateway.

byzerllm asks speech, transcription and image models the way the original
did: through chat, with a JSON object in the last user message
(``{"input", "voice", "response_format"}``, ``{"audio": "data:..."}``,
``{"input", "size", "quality"}``); speech streams back as audio bytes, a
transcription as (verbose) JSON text, an image as base64 text. These routes
translate OpenAI's endpoints to those requests and the answers back.
Rerank has a request kind of its own (:meth:`AsyncByzerLLM.emb_rerank`).

Speech is streamed to the client as the worker passes the vendor's pieces
on; the first piece is awaited before the status line, so a request that
fails at once gets its status. A client that disconnects cancels its
request on the worker, for every endpoint here.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, cast

from starlette import formparsers
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from byzerllm.client.gateway.errors import _ApiError, bad_request, unsupported
from byzerllm.client.gateway.http import (
    JSONBytes,
    alias_of,
    as_api_error,
    error_response,
    guarded,
    log_unexpected,
    until_done_or_gone,
)
from byzerllm.client.gateway.media_kinds import AliasKinds
from byzerllm.client.gateway.media_schemas import (
    AUDIO_TYPES,
    ImageRequest,
    RerankRequest,
    SpeechRequest,
    TranscriptionForm,
    parse_form_fields,
    parse_media,
)
from byzerllm.client.gateway.wire import dumps, new_id
from byzerllm.client.types import LLMResponse, SingleOutputMeta

if TYPE_CHECKING:
    from byzerllm.client.gateway.app import Gateway

log = logging.getLogger("byzerllm.gateway")

# the audio formats OpenAI's transcription API takes, by file extension
AUDIO_EXTENSIONS = frozenset(
    {"flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm"}
)
_UPLOAD = "send the audio as multipart/form-data with a file field, e.g. curl -F file=@speech.wav"


def _user(content: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": json.dumps(content, ensure_ascii=False)}]


# -- speech ------------------------------------------------------------------------------


class AudioStream(Response):
    """Audio bytes as the worker passes them on, raced against the client's disconnect.

    The first piece is awaited before the status line, so a request that
    fails at once gets its status and an OpenAI-shaped error. A failure after
    that cannot be told in an audio body: the response is left unfinished
    (the connection closes without the last chunk), which every HTTP client
    reports as an incomplete read rather than handing on truncated audio as
    whole.
    """

    def __init__(self, pieces: AsyncGenerator[bytes, None], media_type: str) -> None:
        self.pieces = pieces
        self.media_type = media_type
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await until_done_or_gone(Request(scope, receive), self._run(send))
        except _ApiError:  # the client left: its request is cancelled with the stream
            return
        except Exception as exc:  # sending failed: the connection broke under us
            log_unexpected(exc)

    async def _run(self, send: Send) -> None:
        async with aclosing(self.pieces) as pieces:
            try:
                first = await anext(pieces, b"")
            except Exception as exc:
                err = as_api_error(exc)
                response = error_response(err)
                await send(
                    {
                        "type": "http.response.start",
                        "status": err.status,
                        "headers": response.raw_headers,
                    }
                )
                await send({"type": "http.response.body", "body": response.body})
                return
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            try:
                async for piece in pieces:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            except Exception as exc:  # its type only: the message may quote the text
                log.warning("a speech stream failed after it started: %s", type(exc).__name__)
                return
            await send({"type": "http.response.body", "body": b""})


def _not_speech(alias: str) -> _ApiError:
    return bad_request(
        f"{alias!r} answered text, not audio: it is not a text-to-speech model; call it with "
        "POST /v1/chat/completions, or pick a text-to-speech alias (GET /v1/models)",
        param="model",
    )


async def speech_pieces(gw: Gateway, req: SpeechRequest) -> AsyncGenerator[bytes, None]:
    """The audio of ``req``, piece by piece as the alias' vendor sends it."""
    asked: dict[str, Any] = {"input": req.input, "response_format": req.response_format}
    if req.voice:
        asked["voice"] = req.voice
    if req.speed is not None:
        asked["speed"] = req.speed
    stream = cast(
        AsyncGenerator[tuple[Any, SingleOutputMeta], None],
        gw.llm.stream_chat_oai(_user(asked), model=req.model, delta_mode=True),
    )
    started = False
    async with aclosing(stream):
        async for piece, meta in stream:
            if started and meta.extra_info.get("restarted"):
                raise _ApiError(
                    502,
                    "the worker synthesizing this speech failed mid-stream and the audio "
                    "started over; send the request again",
                    type_="api_error",
                    code="answer_restarted",
                )
            if isinstance(piece, str):
                if piece:
                    raise _not_speech(req.model)
                continue
            if piece:
                started = True
                yield bytes(piece)


# -- transcriptions ----------------------------------------------------------------------


async def _one_chunk(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


async def read_form(request: Request, body: bytes) -> FormData:
    """The multipart form of a body already read (and so held to the size limit)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise bad_request(
            f"the body is {content_type or 'untyped'!s}, not multipart/form-data; {_UPLOAD} "
            "-F model=<alias> (the openai SDK's audio.transcriptions.create sends this)",
            param="file",
        )
    if formparsers.multipart is None:
        raise _ApiError(
            501,
            "this gateway cannot read uploads: python-multipart is not installed; install "
            "byzerllm[serve] (or pip install python-multipart) where the gateway runs",
            type_="api_error",
            code="not_installed",
        )
    parser = MultiPartParser(request.headers, _one_chunk(body), max_files=1, max_fields=32)
    try:
        return await parser.parse()
    except MultiPartException as exc:
        raise bad_request(
            f"the multipart body cannot be read ({exc.message}); {_UPLOAD}", None
        ) from None


def _form_fields(form: FormData) -> dict[str, Any]:
    """The text fields of the form (``name[]`` fields as lists), for pydantic."""
    fields: dict[str, Any] = {}
    for name, value in form.multi_items():
        if isinstance(value, UploadFile) or name == "file":
            continue
        if name.endswith("[]"):
            fields.setdefault(name[:-2], []).append(value)
        else:
            fields[name] = value
    return fields


def _audio_format(upload: UploadFile) -> str:
    """The upload's format, from its file name or else its content type."""
    name = upload.filename or ""
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in AUDIO_EXTENSIONS:
        return ext
    mime = (upload.content_type or "").split(";")[0].strip().lower()
    if mime.startswith("audio/"):
        sub = mime.split("/", 1)[1].removeprefix("x-")
        sub = {"mpeg": "mp3", "wave": "wav"}.get(sub, sub)
        if sub in AUDIO_EXTENSIONS:
            return sub
    raise bad_request(
        f"cannot tell the audio format of the file {name!r}: name it with its format's "
        f"extension ({', '.join(sorted(AUDIO_EXTENSIONS))})",
        param="file",
    )


async def audio_of(form: FormData) -> tuple[str, bytes]:
    """The uploaded audio: its format and bytes."""
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise bad_request(
            f"the form has no file 'file' (the audio to transcribe); {_UPLOAD}", param="file"
        )
    fmt = _audio_format(upload)
    data = await upload.read()
    if not data:
        raise bad_request(f"the file {upload.filename!r} is empty; {_UPLOAD}", param="file")
    return fmt, data


def transcription_request(req: TranscriptionForm, fmt: str, data: bytes) -> dict[str, Any]:
    """The JSON every speech-to-text backend reads: the audio as a data URL, OpenAI's options."""
    asked: dict[str, Any] = {
        "audio": f"data:audio/{fmt};base64,{base64.b64encode(data).decode('ascii')}",
        "response_format": req.response_format,
    }
    for name in ("language", "prompt", "temperature", "timestamp_granularities"):
        value = getattr(req, name)
        if value is not None:
            asked[name] = value
    return asked


def transcription_response(response_format: str, output: Any) -> Response:
    """OpenAI's answer in the asked format from what the backend answered.

    Backends answer verbose JSON text (whisper, saas/openai), a JSON object with
    ``text`` and their own fields (SenseVoice), or bare text (a vendor asked for
    ``text``); each asked format is made from any of them.
    """
    raw = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
    try:
        parsed = json.loads(raw) if raw.lstrip().startswith("{") else None
    except ValueError:
        parsed = None
    text = parsed.get("text") if isinstance(parsed, dict) else None
    if not isinstance(text, str):
        parsed, text = None, raw
    if response_format == "text":
        return PlainTextResponse(text)
    if response_format == "verbose_json":
        return JSONBytes(
            dumps(parsed if parsed is not None else {"task": "transcribe", "text": text})
        )
    return JSONBytes(dumps({"text": text}))


# -- images ------------------------------------------------------------------------------


async def draw(gw: Gateway, req: ImageRequest) -> list[LLMResponse]:
    """``req.n`` images, asked at once; a failure cancels the others."""
    asked: dict[str, Any] = {"input": req.prompt}
    for name in ("size", "quality", "style"):
        value = getattr(req, name)
        if value is not None:
            asked[name] = value
    calls = [
        asyncio.ensure_future(gw.llm.chat_oai(_user(asked), model=req.model)) for _ in range(req.n)
    ]
    try:
        answers = await asyncio.gather(*calls)
    finally:
        for call in calls:
            call.cancel()
    return [response for [response] in answers]


def images_body(responses: list[LLMResponse]) -> dict[str, Any]:
    return {
        "created": int(time.time()),
        "data": [{"b64_json": str(r.output)} for r in responses],
    }


# -- rerank ------------------------------------------------------------------------------


def rerank_body(req: RerankRequest, texts: list[str], response: LLMResponse) -> dict[str, Any]:
    scores = [float(s) for s in response.metadata.get("scores", [])]
    order = sorted(range(len(texts)), key=lambda i: scores[i], reverse=True)
    if req.top_n:
        order = order[: req.top_n]
    results: list[dict[str, Any]] = []
    for i in order:
        result: dict[str, Any] = {"index": i, "relevance_score": scores[i]}
        if req.return_documents:
            result["document"] = {"text": texts[i]}
        results.append(result)
    tokens = int(response.metadata.get("input_tokens_count") or 0)
    return {
        "id": new_id("rerank-"),
        "model": req.model,
        "results": results,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


# -- routes ------------------------------------------------------------------------------


def routes(gw: Gateway) -> list[Route]:
    """The endpoints; each asks the authenticator first and admits the caller for the
    alias (its key's limits), as the chat routes do, then checks the alias' kind."""
    kinds = AliasKinds(gw)

    async def speech(request: Request) -> Response:
        caller = await gw.auth(request)
        req = parse_media(SpeechRequest, await gw.read_body(request))
        if req.instructions is not None:
            raise unsupported(
                "instructions",
                "'instructions' is not served: byzerllm's speech backends do not pass it on; "
                "leave it out",
            )
        meter = await caller.admit(alias_of(req.model))
        async with meter:
            await kinds.require(req.model, "speech")
            pieces = meter.stream(speech_pieces(gw, req))
            return AudioStream(pieces, AUDIO_TYPES[req.response_format])

    async def transcriptions(request: Request) -> Response:
        caller = await gw.auth(request)
        form = await read_form(request, await gw.read_body(request))
        try:
            req = parse_form_fields(TranscriptionForm, _form_fields(form))
            fmt, data = await audio_of(form)
        finally:
            await form.close()
        meter = await caller.admit(alias_of(req.model))
        async with meter:
            await kinds.require(req.model, "transcription")
            work = gw.llm.chat_oai(_user(transcription_request(req, fmt, data)), model=req.model)
            [response] = await until_done_or_gone(request, work)
        return transcription_response(req.response_format, response.output)

    async def images(request: Request) -> Response:
        caller = await gw.auth(request)
        req = parse_media(ImageRequest, await gw.read_body(request))
        if req.response_format == "url":
            raise unsupported(
                "response_format",
                "response_format 'url' is not served: the gateway keeps no images to link to; "
                "send response_format 'b64_json' (or leave it out) and decode data[i].b64_json",
            )
        meter = await caller.admit(alias_of(req.model))
        async with meter:
            await kinds.require(req.model, "image")
            responses = await until_done_or_gone(request, draw(gw, req))
        return JSONBytes(dumps(images_body(responses)))

    async def rerank(request: Request) -> Response:
        caller = await gw.auth(request)
        req = parse_media(RerankRequest, await gw.read_body(request))
        meter = await caller.admit(alias_of(req.model))
        async with meter:
            await kinds.require(req.model, "rerank")
            texts = req.texts()
            work = gw.llm.emb_rerank(req.model, [[req.query, text] for text in texts])
            [response] = await until_done_or_gone(request, work)
            body = rerank_body(req, texts, response)
            meter.add(body["usage"])
        return JSONBytes(dumps(body))

    return [
        Route("/v1/audio/speech", guarded(speech), methods=["POST"]),
        Route("/v1/audio/transcriptions", guarded(transcriptions), methods=["POST"]),
        Route("/v1/images/generations", guarded(images), methods=["POST"]),
        Route("/v1/rerank", guarded(rerank), methods=["POST"]),
    ]

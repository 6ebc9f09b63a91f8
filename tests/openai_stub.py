"""A real HTTP server that speaks the OpenAI wire protocol, for tests and benchmarks.

The ``saas/openai`` backend is tested through the official SDK over TCP
rather than with mocks, so what it sees here is what a vendor sends:
``chat.completion`` JSON, ``chat.completion.chunk`` server-sent events with a
final usage chunk, embeddings as floats or base64, and OpenAI-shaped errors.

Answers are deterministic: the reply echoes the last user message, one
"token" is one whitespace-separated word, ``max_tokens`` cuts words and
``stop`` cuts text, so tests can check that parameters arrived by looking at
the answer. Models whose name contains "reasoner" think first, DeepSeek
style, in ``reasoning_content``. With ``tools`` the "model" calls the tool the
last user turn names (``tool_choice_for``), whole or streamed as OpenAI
streams tool calls: the first delta with the call's id and name, then its
arguments in pieces (one per word, or ``chunks``).

The media endpoints are as deterministic: ``/audio/transcriptions`` (a
multipart upload) "hears" the uploaded bytes as UTF-8 text and answers
whisper's verbose JSON with one segment and a word per word;
``/audio/speech`` answers the bytes ``<format>|<voice>|<input>`` (in
``audio_chunks`` pieces, chunked, when set); and
``/images/generations`` answers ``b64_json`` of ``<size>|<quality>|<prompt>``.

In a test::

    with OpenAIStub(api_key="sk-test") as stub:
        ...  # stub.base_url, stub.fail_next(429), stub.last_request

As a process, for benchmarks (prints ``listening on <base_url>`` when ready)::

    python -m tests.openai_stub --port 8000 --chunks 16

The server is an ``asyncio.Protocol`` with HTTP/1.1 keep-alive and
pipelining, no logging and pre-encoded fixed parts, so that at high request
rates the numbers measure the client, not the stub.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import functools
import hashlib
import itertools
import json
import math
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, cast

DEFAULT_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-3.5-turbo",
    "deepseek-chat",
    "deepseek-reasoner",
    "text-embedding-3-small",
    "text-embedding-ada-002",
    "whisper-1",
    "tts-1",
    "dall-e-3",
)
MAX_HEAD = 64 * 1024
MAX_BODY = 64 * 1024 * 1024

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
# What OpenAI says for the statuses tests force: (message, type, code).
_FORCED = {
    400: ("Invalid request.", "invalid_request_error", None),
    403: ("You are not allowed to sample from this model.", "invalid_request_error", None),
    429: (
        "Rate limit reached for requests. Please try again in 1ms.",
        "requests",
        "rate_limit_exceeded",
    ),
    500: (
        "The server had an error while processing your request. Sorry about that!",
        "server_error",
        None,
    ),
    502: ("Bad gateway.", "server_error", None),
    503: ("The engine is currently overloaded, please try again later.", "server_error", None),
}
_SSE_DONE = b"data: [DONE]\n\n"
_CHUNKED_END = b"0\r\n\r\n"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\nx-request-id: req_stub\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def http_response(status: int, body: bytes, extra_headers: bytes = b"") -> bytes:
    """A complete response; ``extra_headers`` are whole ``name: value\\r\\n`` lines."""
    return (
        b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"x-request-id: req_stub\r\n%s\r\n%s"
        % (status, _REASONS.get(status, "Error").encode(), len(body), extra_headers, body)
    )


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> bytes:
    return _dumps(
        {"error": {"message": message, "type": type_, "param": param, "code": code}}
    ).encode()


def text_of(content: Any) -> str:
    """A message's text, whether content is a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


@functools.lru_cache(maxsize=4096)
def embedding_for(text: str, dim: int) -> tuple[float, ...]:
    """A unit vector that only depends on the text, so tests can predict it."""
    raw = struct.unpack(f"<{dim}h", hashlib.shake_256(text.encode()).digest(2 * dim))
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return tuple(x / norm for x in raw)


def split_reply(text: str, chunks: int) -> list[str]:
    """0 chunks: one per word, as a model streams tokens; N: N nearly equal pieces."""
    if not text:
        return []
    if chunks <= 0:
        words = text.split(" ")
        return [w + " " for w in words[:-1]] + [words[-1]]
    size = max(1, math.ceil(len(text) / chunks))
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass(slots=True)
class Answer:
    text: str
    reasoning: str
    finish_reason: str
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return len(self.text.split()) + len(self.reasoning.split())

    def usage(self) -> dict[str, int]:
        done = self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": done,
            "total_tokens": self.prompt_tokens + done,
        }


@dataclass(slots=True)
class Paced:
    """A stream to send ``delay`` seconds apart per event, instead of all at once;
    with a ``gate``, everything after the first event waits until it is set."""

    events: list[bytes]
    delay: float
    head: bytes = _SSE_HEAD
    gate: threading.Event | None = None
    # each event after the first waits for a permit: a test releases them one by one
    steps: threading.Semaphore | None = None


def answer_for(request: dict[str, Any], reasoner: bool) -> Answer:
    messages = request["messages"]
    last_user = next(
        (text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
    )
    text, finish = last_user, "stop"
    # prefix completion, as DeepSeek marks it (the last assistant message has
    # "prefix": true) or SiliconFlow does (a "prefix" field): the answer goes on
    # from the prefix' length; any other last assistant message is ignored, as
    # OpenAI ignores it, and the answer starts afresh
    last = messages[-1] if messages else {}
    prefix = request.get("prefix")
    if not isinstance(prefix, str):
        marked = last.get("role") == "assistant" and last.get("prefix") is True
        prefix = text_of(last.get("content")) if marked else None
    if prefix is not None:
        text = text[len(prefix) :]
    stop = request.get("stop")
    for s in [stop] if isinstance(stop, str) else stop or []:
        if s and s in text:
            text = text[: text.index(s)]
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    if isinstance(limit, int) and limit > 0 and len(text.split()) > limit:
        text, finish = " ".join(text.split()[:limit]), "length"
    prompt = sum(len(text_of(m.get("content")).split()) for m in messages)
    reasoning = f"The user said: {last_user}" if reasoner else ""
    return Answer(text, reasoning, finish, prompt)


def _valid_tools(tools: Any) -> bool:
    return isinstance(tools, list) and all(
        isinstance(t, dict)
        and t.get("type") == "function"
        and isinstance(t.get("function"), dict)
        and isinstance(t["function"].get("name"), str)
        and isinstance(t["function"].get("parameters", {}), dict)
        for t in tools
    )


def tool_calls_for(request: dict[str, Any], every: bool) -> list[dict[str, Any]]:
    """The calls the stub "model" makes: :func:`tool_choice_for`'s one, or with
    ``every`` one per tool the last user turn names (parallel tool calls)."""
    call = tool_choice_for(request)
    if call is None or not every or isinstance(request.get("tool_choice"), dict):
        return [call] if call is not None else []
    last = next(
        (text_of(m.get("content")) for m in reversed(request["messages"]) if m["role"] == "user"),
        "",
    )
    names = [t["function"]["name"] for t in request["tools"] if t["function"]["name"] in last]
    arguments = call["function"]["arguments"]
    return [
        {
            "id": f"call_stub{i}",
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }
        for i, name in enumerate(names, 1)
    ]


def tool_choice_for(request: dict[str, Any]) -> dict[str, Any] | None:
    """The stub "model" calls the tool that ``tool_choice`` forces, else the
    one whose name the last user turn mentions, with the first JSON object of
    that turn as arguments; it answers in words when no tool fits."""
    last = next(
        (text_of(m.get("content")) for m in reversed(request["messages"]) if m["role"] == "user"),
        "",
    )
    names = [t["function"]["name"] for t in request["tools"]]
    forced = request.get("tool_choice")
    if isinstance(forced, dict):
        name = (forced.get("function") or {}).get("name")
    else:
        name = next((n for n in names if n in last), None)
    if name is None:
        return None
    arguments = last[last.index("{") : last.rindex("}") + 1] if "{" in last else "{}"
    return {
        "id": "call_stub1",
        "type": "function",
        "function": {"name": name, "arguments": arguments},
    }


class OpenAIStub:
    """The server and its knobs; attributes may be changed while it runs.

    ``api_key``: the bearer key required (None: any). ``fail_next(*codes)``
    answers the next requests with those statuses; ``fail_always`` answers
    every request with one. ``models``: the known model names (others get
    404 ``model_not_found``). ``chunks``: how a reply is split when streamed;
    ``chunk_delay``: seconds between stream events. ``audio_chunks``: pieces
    of ``/audio/speech`` audio (0: sent whole); ``audio_gate``: a
    threading.Event that holds all but the first piece until it is set.
    ``stream_steps``: a threading.Semaphore; each event of a chat stream after
    the first waits for a permit (``paced_events_sent`` counts events sent), so a
    test sees what arrives before the rest is sent. ``every_named_tool``: call
    every tool the last user turn names, not only the first (parallel calls).
    ``last_request`` is the last JSON body received, ``request_count`` counts
    HTTP requests.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        chunks: int = 0,
        chunk_delay: float = 0.0,
        embedding_dim: int = 16,
        models: tuple[str, ...] | list[str] = DEFAULT_MODELS,
    ) -> None:
        self.api_key = api_key
        self.host = host
        self.port = port
        self.chunks = chunks
        self.chunk_delay = chunk_delay
        self.embedding_dim = embedding_dim
        self.models = set(models)
        self.audio_chunks = 0
        self.audio_gate: threading.Event | None = None
        self.stream_steps: threading.Semaphore | None = None
        self.paced_events_sent = 0
        self.every_named_tool = False
        self.fail_always: int | None = None
        self.retry_after_ms: int | None = 1  # sent with 429/5xx so SDK retries are quick
        self.echo_key_in_errors = False  # some vendors quote the bad key back in full
        # Azure OpenAI mode: /openai/deployments/<name>/... serves the model mapped here.
        self.azure_deployments: dict[str, str] = {}
        self.last_request: dict[str, Any] | None = None
        self.request_count = 0
        self._forced: collections.deque[int] = collections.deque()
        self._ids = itertools.count(1)
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None
        self._models_body = b""

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def fail_next(self, *statuses: int) -> None:
        self._forced.extend(statuses)

    # -- running -----------------------------------------------------------------------

    async def listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    def start(self) -> OpenAIStub:
        """Serve from a background thread with its own loop, so sync and async tests can use it."""
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._thread_main, args=(ready, failure), name="openai-stub", daemon=True
        )
        self._thread.start()
        if not ready.wait(10) or failure:
            raise RuntimeError(f"openai stub did not start: {failure[:1]}")
        return self

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            server = loop.run_until_complete(self.listen())
        except BaseException as exc:  # reported to start(), which raises it
            failure.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown(server))
        loop.close()

    async def _shutdown(self, server: asyncio.Server) -> None:
        server.close()
        for conn in list(self._connections):
            conn.close()
        pending = asyncio.all_tasks() - {asyncio.current_task()}
        for task in pending:  # paced streams still sending
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await server.wait_closed()

    def stop(self) -> None:
        if self.stream_steps is not None:  # nothing waits for permits that never come
            self.stream_steps.release(10_000)
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OpenAIStub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- answering ---------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> bytes | Paced:
        """One request in, one response out; errors in the order OpenAI checks them."""
        self.request_count += 1
        path, _, query = target.partition("?")
        path = path.removeprefix("/v1")
        if path.startswith("/openai/"):
            return self._azure(method, path, query, headers, body)
        payload: Any = None
        if method == "POST":
            content_type = headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                payload = parse_multipart(content_type, body)
            else:
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = None
            if isinstance(payload, dict):
                self.last_request = payload
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return self._unauthorized(headers.get("authorization", ""))
        status = self._forced.popleft() if self._forced else self.fail_always
        if status:
            return self._forced_error(status)
        return self._route(method, path, payload)

    def _azure(
        self, method: str, path: str, query: str, headers: dict[str, str], body: bytes
    ) -> bytes | Paced:
        """Azure OpenAI: the deployment in the path picks the model, ``api-key`` authenticates."""
        _, _, rest = path.partition("/openai/deployments/")
        deployment, _, endpoint = rest.partition("/")
        if "api-version=" not in query:
            return http_response(
                404, _dumps({"error": {"code": "404", "message": "Resource not found"}}).encode()
            )
        if self.api_key is not None and headers.get("api-key") != self.api_key:
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."
            )
            return http_response(
                401, _dumps({"error": {"code": "401", "message": message}}).encode()
            )
        model = self.azure_deployments.get(deployment)
        if model is None:
            message = (
                "The API deployment for this resource does not exist. If you created the "
                "deployment within the last 5 minutes, please wait a moment and try again."
            )
            body404 = {"error": {"code": "DeploymentNotFound", "message": message}}
            return http_response(404, _dumps(body404).encode())
        if headers.get("content-type", "").startswith("application/json"):
            try:
                payload = json.loads(body)
            except ValueError:
                payload = None
            if isinstance(payload, dict):
                body = _dumps({**payload, "model": model}).encode()
        bearer = {**headers, "authorization": f"Bearer {self.api_key}"}
        self.request_count -= 1  # handle() counts it again
        return self.handle(method, f"/v1/{endpoint}", bearer, body)

    def _route(self, method: str, path: str, payload: Any) -> bytes | Paced:
        if method == "GET" and path == "/models":
            return self._list_models()
        if method != "POST" or path not in _POST_PATHS:
            return http_response(
                404, error_body(f"Invalid URL ({method} /v1{path})", "invalid_request_error", None)
            )
        if not isinstance(payload, dict):
            return http_response(
                400,
                error_body(
                    "We could not parse the JSON body of your request.",
                    "invalid_request_error",
                    None,
                ),
            )
        model = payload.get("model")
        if model not in self.models:
            return http_response(
                404,
                error_body(
                    f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error",
                    "model_not_found",
                ),
            )
        if path == "/embeddings":
            return self._embeddings(payload)
        if path == "/audio/transcriptions":
            return _transcription(payload)
        if path == "/audio/speech":
            return _speech(payload, self.audio_chunks, self.chunk_delay, self.audio_gate)
        if path == "/images/generations":
            return _image(payload)
        return self._chat(payload)

    def _unauthorized(self, authorization: str) -> bytes:
        given = authorization.removeprefix("Bearer ").strip()
        if not given:
            message = "You didn't provide an API key."
        else:
            shown = given if self.echo_key_in_errors else f"{given[:3]}***{given[-4:]}"
            message = f"Incorrect API key provided: {shown}."
        return http_response(401, error_body(message, "invalid_request_error", "invalid_api_key"))

    def _forced_error(self, status: int) -> bytes:
        default = (
            "Stub error.",
            "server_error" if status >= 500 else "invalid_request_error",
            None,
        )
        message, type_, code = _FORCED.get(status, default)
        extra = b""
        if (status == 429 or status >= 500) and self.retry_after_ms is not None:
            extra = b"retry-after-ms: %d\r\n" % self.retry_after_ms
        return http_response(status, error_body(message, type_, code), extra)

    def _list_models(self) -> bytes:
        data = [
            {"id": m, "object": "model", "created": 1700000000, "owned_by": "stub"}
            for m in sorted(self.models)
        ]
        return http_response(200, _dumps({"object": "list", "data": data}).encode())

    def _chat(self, request: dict[str, Any]) -> bytes | Paced:
        messages = request.get("messages")
        if (
            not isinstance(messages, list)
            or not messages
            or not all(isinstance(m, dict) for m in messages)
        ):
            return http_response(
                400,
                error_body(
                    "'messages' must be a non-empty array of objects.",
                    "invalid_request_error",
                    None,
                    "messages",
                ),
            )
        model = str(request["model"])
        tools = request.get("tools")
        if tools is not None and not _valid_tools(tools):
            return _bad_request(
                "Invalid 'tools': expected an array of {type: 'function', function: "
                "{name, description, parameters}}.",
                "tools",
            )
        answer = answer_for(request, reasoner="reasoner" in model)
        rid = f"chatcmpl-stub{next(self._ids)}"
        calls = tool_calls_for(request, self.every_named_tool) if tools else []
        if calls and not request.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": calls,
            }
            answer.finish_reason = "tool_calls"
        elif request.get("stream"):
            return self._stream(request, model, rid, answer, calls)
        else:
            message = {"role": "assistant", "content": answer.text, "refusal": None}
        if answer.reasoning:
            message["reasoning_content"] = answer.reasoning
        body = {
            "id": rid,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": "fp_stub",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": answer.finish_reason,
                }
            ],
            "usage": answer.usage(),
        }
        return http_response(200, _dumps(body).encode())

    def _stream(
        self,
        request: dict[str, Any],
        model: str,
        rid: str,
        answer: Answer,
        calls: list[dict[str, Any]] | None = None,
    ) -> bytes | Paced:
        options = request.get("stream_options")
        with_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        events = _chunk_events(model, rid, answer, self.chunks, with_usage, calls)
        events.append(_SSE_DONE)
        if self.chunk_delay > 0 or self.stream_steps is not None:
            return Paced(events, self.chunk_delay, steps=self.stream_steps)
        payload = b"".join(events)
        return b"%s%x\r\n%s\r\n%s" % (_SSE_HEAD, len(payload), payload, _CHUNKED_END)

    def _embeddings(self, request: dict[str, Any]) -> bytes:
        texts = request.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            return http_response(
                400,
                error_body(
                    "'input' must be a string or a non-empty array of strings.",
                    "invalid_request_error",
                    None,
                    "input",
                ),
            )
        dim = request.get("dimensions") or self.embedding_dim
        as_base64 = request.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector: Any = embedding_for(text, int(dim))
            if as_base64:
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vector})
        tokens = sum(len(t.split()) for t in texts)
        body = {
            "object": "list",
            "data": data,
            "model": request["model"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return http_response(200, _dumps(body).encode())


_POST_PATHS = frozenset(
    {
        "/chat/completions",
        "/embeddings",
        "/audio/transcriptions",
        "/audio/speech",
        "/images/generations",
    }
)


def parse_multipart(content_type: str, body: bytes) -> dict[str, Any] | None:
    """Form fields as text, files as ``{"filename", "content"}``; lists for ``name[]``."""
    boundary = content_type.partition("boundary=")[2].strip().strip('"')
    if not boundary:
        return None
    fields: dict[str, Any] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
        disposition = next(
            (
                line
                for line in head.decode("latin-1").split("\r\n")
                if line.lower().startswith("content-disposition")
            ),
            "",
        )
        params = dict(
            (k.strip(), v.strip().strip('"'))
            for k, _, v in (p.partition("=") for p in disposition.split(";")[1:])
        )
        name = params.get("name", "")
        item: Any = (
            {"filename": params["filename"], "content": value}
            if "filename" in params
            else value.decode()
        )
        if name.endswith("[]"):
            fields.setdefault(name[:-2], []).append(item)
        else:
            fields[name] = item
    return fields


def _bad_request(message: str, param: str | None = None) -> bytes:
    return http_response(400, error_body(message, "invalid_request_error", None, param))


def _transcription(payload: dict[str, Any]) -> bytes:
    upload = payload.get("file")
    if not isinstance(upload, dict):
        return _bad_request("Could not parse multipart form: 'file' is required.", "file")
    text = upload["content"].decode("utf-8", "replace").strip()
    if payload.get("response_format") != "verbose_json":
        return http_response(200, _dumps({"text": text}).encode())
    words = [{"word": w, "start": float(i), "end": i + 0.5} for i, w in enumerate(text.split())]
    duration = float(len(words))
    body = {
        "task": "transcribe",
        "language": payload.get("language") or "english",
        "duration": duration,
        "text": text,
        "segments": [
            {
                "id": 0,
                "seek": 0,
                "start": 0.0,
                "end": duration,
                "text": " " + text,
                "tokens": list(range(50364, 50364 + len(words))),
                "temperature": 0.0,
                "avg_logprob": -0.25,
                "compression_ratio": 1.4,
                "no_speech_prob": 0.01,
            }
        ],
    }
    if "word" in payload.get("timestamp_granularities", []):
        body["words"] = words
    return http_response(200, _dumps(body).encode())


_AUDIO_TYPES = {"mp3": "audio/mpeg", "wav": "audio/wav", "opus": "audio/opus"}


def _speech(
    payload: dict[str, Any], pieces: int, delay: float, gate: threading.Event | None
) -> bytes | Paced:
    text, voice = payload.get("input"), payload.get("voice")
    if not isinstance(text, str) or not text or not voice:
        return _bad_request("'input' and 'voice' are required.", "input")
    fmt = str(payload.get("response_format") or "mp3")
    audio = f"{fmt}|{voice}|{text}".encode()
    kind = _AUDIO_TYPES.get(fmt, "application/octet-stream")
    if pieces > 1:  # chunked, as a vendor streams speech while it synthesizes
        cuts = sorted({len(audio) * i // pieces for i in range(pieces)} | {len(audio)})
        parts = [audio[a:b] for a, b in zip(cuts, cuts[1:], strict=False) if b > a]
        head = b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ntransfer-encoding: chunked\r\n\r\n"
        return Paced(parts, delay, head % kind.encode(), gate)
    return b"HTTP/1.1 200 OK\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        kind.encode(),
        len(audio),
        audio,
    )


def _image(payload: dict[str, Any]) -> bytes:
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return _bad_request("'prompt' is required.", "prompt")
    if "nsfw" in prompt:
        message = "Your request was rejected as a result of our safety system."
        return http_response(
            400, error_body(message, "invalid_request_error", "content_policy_violation")
        )
    picture = f"{payload.get('size')}|{payload.get('quality')}|{prompt}".encode()
    item: dict[str, Any] = {"revised_prompt": prompt}
    if payload.get("response_format") == "b64_json":
        item["b64_json"] = base64.b64encode(picture).decode()
    else:
        item["url"] = "https://stub.invalid/image.png"
    return http_response(200, _dumps({"created": int(time.time()), "data": [item]}).encode())


def _chunk_events(
    model: str,
    rid: str,
    answer: Answer,
    chunks: int,
    with_usage: bool,
    calls: list[dict[str, Any]] | None = None,
) -> list[bytes]:
    """``chat.completion.chunk`` events; the fixed parts are formatted once per request.
    With ``calls``, the tool calls as OpenAI streams them instead of the text."""
    head = (
        f'data: {{"id":"{rid}","object":"chat.completion.chunk","created":{int(time.time())},'
        f'"model":{_dumps(model)},"system_fingerprint":"fp_stub","choices":'
    ).encode()
    usage_null = b',"usage":null' if with_usage else b""

    def event(delta: str, finish: str | None = None) -> bytes:
        reason = b"null" if finish is None else _dumps(finish).encode()
        return b'%s[{"index":0,"delta":%s,"logprobs":null,"finish_reason":%s}]%s}\n\n' % (
            head,
            delta.encode(),
            reason,
            usage_null,
        )

    if calls:
        events = _tool_call_events(event, calls, chunks)
        if with_usage:
            events.append(head + b'[],"usage":%s}\n\n' % _dumps(answer.usage()).encode())
        return events
    reasoner = bool(answer.reasoning)
    first = (
        '{"role":"assistant","content":null,"reasoning_content":""}'
        if reasoner
        else '{"role":"assistant","content":""}'
    )
    events = [event(first)]
    for piece in split_reply(answer.reasoning, chunks):
        events.append(event(f'{{"content":null,"reasoning_content":{_dumps(piece)}}}'))
    tail = ',"reasoning_content":null}' if reasoner else "}"
    for piece in split_reply(answer.text, chunks):
        events.append(event(f'{{"content":{_dumps(piece)}{tail}'))
    events.append(event("{}", answer.finish_reason))
    if with_usage:
        events.append(head + b'[],"usage":%s}\n\n' % _dumps(answer.usage()).encode())
    return events


def _tool_call_events(event: Any, calls: list[dict[str, Any]], chunks: int) -> list[bytes]:
    """OpenAI's streamed tool calls: the first delta carries the role and the first
    call's id, type and name with empty arguments; each call's arguments follow
    in pieces under its ``index``; the last event says ``tool_calls``."""
    events = []
    for i, call in enumerate(calls):
        function = call["function"]
        opening: dict[str, Any] = {
            "tool_calls": [
                {
                    "index": i,
                    "id": call["id"],
                    "type": "function",
                    "function": {"name": function["name"], "arguments": ""},
                }
            ]
        }
        if i == 0:
            opening = {"role": "assistant", "content": None, **opening, "refusal": None}
        events.append(event(_dumps(opening)))
        for piece in split_reply(function["arguments"], chunks):
            fragment = {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}
            events.append(event(_dumps(fragment)))
    events.append(event("{}", "tool_calls"))
    return events


class _Connection(asyncio.Protocol):
    """HTTP/1.1 on one socket: keep-alive, pipelined requests answered in order."""

    def __init__(self, stub: OpenAIStub) -> None:
        self.stub = stub
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a paced stream is being sent; later requests wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.stub._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.stub._connections.discard(self)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._serve_buffered()

    def _serve_buffered(self) -> None:
        while self.transport is not None and not self.busy:
            request = self._next_request()
            if request is None:
                return
            method, target, headers, body, keep_alive = request
            self._respond(self.stub.handle(method, target, headers, body), keep_alive)

    def _respond(self, reply: bytes | Paced, keep_alive: bool) -> None:
        assert self.transport is not None
        if isinstance(reply, Paced):
            self.busy = True
            asyncio.get_running_loop().create_task(self._send_paced(reply, keep_alive))
            return
        self.transport.write(reply)
        if not keep_alive:
            self.transport.close()

    async def _send_paced(self, reply: Paced, keep_alive: bool) -> None:
        try:
            await self._write_paced(reply)
        finally:
            self.busy = False
        if not keep_alive:
            self.close()
        else:
            self._serve_buffered()

    async def _write_paced(self, reply: Paced) -> None:
        for i, event in enumerate(reply.events):
            if i == 1 and reply.gate is not None:
                await asyncio.get_running_loop().run_in_executor(None, reply.gate.wait, 60)
            if i and reply.steps is not None:
                await asyncio.get_running_loop().run_in_executor(
                    None, reply.steps.acquire, True, 60
                )
            if i:
                await asyncio.sleep(reply.delay)
            transport = self.transport
            if transport is None:  # the client hung up mid-stream
                return
            transport.write((b"" if i else reply.head) + b"%x\r\n%s\r\n" % (len(event), event))
            self.stub.paced_events_sent += 1
        if self.transport is not None:
            self.transport.write(_CHUNKED_END)

    def _next_request(self) -> tuple[str, str, dict[str, str], bytes, bool] | None:
        """The first complete request in the buffer, or None while it is still arriving."""
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > MAX_HEAD:
                self._reject(431, "request headers too large")
            return None
        lines = buf[:end].decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self._reject(400, "malformed request line")
            return None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._reject(411, "chunked request bodies are not supported; send content-length")
            return None
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._reject(400 if length < 0 else 413, "bad content-length")
            return None
        total = end + 4 + length
        if len(buf) < total:
            return None
        body = bytes(buf[end + 4 : total])
        del buf[:total]
        method, target, version = parts
        connection = headers.get("connection", "").lower()
        keep_alive = connection != "close" if version == "HTTP/1.1" else connection == "keep-alive"
        return method, target, headers, body, keep_alive

    def _reject(self, status: int, message: str) -> None:
        """The stream can no longer be framed: answer once and hang up."""
        self.buf.clear()
        if self.transport is not None:
            self.transport.write(
                http_response(
                    status,
                    error_body(message, "invalid_request_error", None),
                    b"connection: close\r\n",
                )
            )
            self.transport.close()


async def serve_forever(stub: OpenAIStub) -> None:
    server = await stub.listen()
    print(f"listening on {stub.base_url}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An OpenAI-compatible stub server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    parser.add_argument("--chunks", type=int, default=0, help="stream pieces; 0: one per word")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between events")
    parser.add_argument("--embedding-dim", type=int, default=16)
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="a model name to accept besides the defaults (repeatable)",
    )
    args = parser.parse_args(argv)
    stub = OpenAIStub(
        args.api_key,
        host=args.host,
        port=args.port,
        chunks=args.chunks,
        chunk_delay=args.chunk_delay,
        embedding_dim=args.embedding_dim,
        models=(*DEFAULT_MODELS, *args.model),
    )
    try:
        import uvloop  # the "fast" extra; the stub should not be the bottleneck
    except ImportError:
        runner = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve_forever(stub))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""The gateway's ASGI app: OpenAI's HTTP API over the aliases, on one AsyncByzerLLM.

Stateless: everything it knows is in Redis, so any number of replicas serve
behind a load balancer. One client per process (one reply stream, one
reader task) serves every request in flight; a request costs no connection
of its own.

A client that disconnects ends its request on the worker: a streamed answer
and a whole one alike are raced against the connection's ``http.disconnect``,
and leaving byzerllm's call early cancels it (client/channel.py).

Nothing of a key or a prompt is logged: errors are answered to the client
that caused them, and an unexpected failure is logged as its type and
traceback frames, without its message.
"""

from __future__ import annotations

import array
import asyncio
import base64
import logging
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar, cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from byzerllm.broker import catalog
from byzerllm.broker.connection import redis_errors
from byzerllm.broker.errors import ByzerLLMError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.gateway import dashboard, media, metrics_routes
from byzerllm.client.gateway.auth import Authenticator
from byzerllm.client.gateway.errors import (
    _ApiError,
    bad_request,
)
from byzerllm.client.gateway.http import (
    EventStream,
    JSONBytes,
    alias_of,
    error_response,
    guarded,
    until_done_or_gone,
)
from byzerllm.client.gateway.metering import UNMETERED, Meter
from byzerllm.client.gateway.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    parse_body,
)
from byzerllm.client.gateway.wire import (
    DONE,
    Answer,
    ChatChunks,
    ChatPlan,
    ChunkEncoder,
    ToolCallDeltas,
    answer_of,
    chat_body,
    chat_plan,
    check_chat,
    check_completion,
    completion_body,
    dumps,
    needs_backend_type,
    new_id,
    sampling,
    usage_of,
)
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.types import LLMResponse, SingleOutputMeta

log = logging.getLogger("byzerllm.gateway")

T = TypeVar("T")
BACKEND_TYPE_TTL = 10.0  # seconds an alias' backend type is remembered
READY_TIMEOUT = 2.0  # seconds /health/ready waits for Redis


def _restarted_error() -> _ApiError:
    return _ApiError(
        502,
        "the worker answering this stream failed and its alias cannot continue a partial "
        "answer, so the answer started over; send the request again",
        type_="api_error",
        code="answer_restarted",
    )


def _speech_error(alias: str) -> _ApiError:
    return bad_request(
        f"{alias!r} is a text-to-speech model: it answers audio, which chat completions "
        "cannot carry; call it without stream for base64 audio",
        param="model",
    )


class Gateway:
    """What the routes share: one client, the settings, the authenticator."""

    def __init__(
        self,
        settings: BrokerSettings,
        authenticator: Authenticator,
        request_timeout: float | None | str = "default",
    ) -> None:
        self.settings = settings
        self.auth = authenticator
        self.request_timeout = request_timeout
        self._llm: AsyncByzerLLM | None = None
        self._types: dict[str, tuple[float, str]] = {}

    @property
    def llm(self) -> AsyncByzerLLM:
        if self._llm is None:  # served without the lifespan (a test client that skips it)
            self._llm = self._client()
        return self._llm

    def _client(self) -> AsyncByzerLLM:
        return AsyncByzerLLM(settings=self.settings, request_timeout=self.request_timeout)

    async def start(self) -> None:
        self._llm = self._client()
        try:
            await self._llm.channel.start()
        except ByzerLLMError as exc:  # serve anyway: /health/ready says so until Redis is back
            log.warning("Redis is not reachable yet: %s", exc)

    async def stop(self) -> None:
        await self.auth.aclose()  # the API keys' usage writes under way
        if self._llm is not None:
            await self._llm.aclose()

    async def _redis(self) -> Any:
        channel = self.llm.channel
        await channel.start()
        return channel.redis, channel.keys

    async def backend_type(self, alias: str) -> str | None:
        now = time.monotonic()
        known = self._types.get(alias)
        if known is not None and known[0] > now:
            return known[1]
        with redis_errors(self.settings):
            redis, keys = await self._redis()
            value = await catalog.backend_type(redis, keys, alias)
        if value is not None:
            self._types[alias] = (now + BACKEND_TYPE_TTL, value)
        return value

    async def served_models(self) -> list[catalog.ServedModel]:
        with redis_errors(self.settings):
            redis, keys = await self._redis()
            return await catalog.served_models(redis, keys)

    async def ready(self) -> None:
        with redis_errors(self.settings):
            async with asyncio.timeout(READY_TIMEOUT):
                redis, _ = await self._redis()
                await catalog.ping(redis)

    async def read_body(self, request: Request) -> bytes:
        """The body, refused past the request size limit before it is all read."""
        limit = self.settings.max_request_bytes
        too_large = _ApiError(
            413,
            f"the request body is larger than {limit} bytes (BYZERLLM_MAX_REQUEST_BYTES); "
            "send less, e.g. shorter messages or smaller images",
            code="request_too_large",
        )
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    # -- chat --------------------------------------------------------------------------

    async def complete(self, plan: ChatPlan) -> Answer:
        tools: dict[str, Any] = (
            {"tools": plan.tools, "tool_choice": plan.tool_choice} if plan.tools else {}
        )
        [response] = await self.llm.chat_oai(
            plan.messages,
            model=plan.alias,
            llm_config=plan.llm_config,
            extra_request_params=plan.extra or None,
            **tools,
        )
        return answer_of(response, plan)

    def _stream(
        self,
        messages: list[dict[str, Any]],
        alias: str,
        config: dict[str, Any],
        extra: dict[str, Any],
        tools: dict[str, Any] | None = None,
    ) -> AsyncGenerator[tuple[Any, SingleOutputMeta], None]:
        """The answer's deltas (delta mode): an async generator, closed to cancel it;
        ``tools``: ``tools`` and ``tool_choice`` for the client."""
        stream = self.llm.stream_chat_oai(
            messages,
            model=alias,
            delta_mode=True,
            llm_config=config,
            extra_request_params=extra or None,
            **(tools or {}),
        )
        return cast(AsyncGenerator[tuple[Any, SingleOutputMeta], None], stream)

    async def chat_events(
        self, plan: ChatPlan, meter: Meter = UNMETERED
    ) -> AsyncGenerator[bytes, None]:
        """``meter``: told the answer's usage (an API key's tokens)."""
        out = ChatChunks(plan)
        if plan.whole_first:
            answer = await self.complete(plan)
            meter.add(answer.usage())
            yield out.whole(answer, plan.include_usage) + DONE
            return
        stream = self._stream(
            plan.messages, plan.alias, plan.llm_config, plan.extra, plan.tool_fields()
        )
        started = False
        finish, usage = "stop", usage_of(0, 0)
        tool_calls = ToolCallDeltas()
        async with aclosing(stream):
            async for text, meta in stream:
                if meta.finish_reason is not None and not (
                    text or meta.reasoning_content or meta.tool_calls
                ):
                    finish = meta.finish_reason
                    usage = usage_of(meta.input_tokens_count, meta.generated_tokens_count)
                    continue
                if isinstance(text, bytes):
                    raise _speech_error(plan.alias)
                if started and meta.extra_info.get("restarted"):
                    raise _restarted_error()
                delta: dict[str, Any] = {}
                if meta.reasoning_content:
                    delta["reasoning_content"] = meta.reasoning_content
                if text:
                    delta["content"] = text
                if meta.tool_calls:
                    delta["tool_calls"] = tool_calls(meta.tool_calls)
                if not delta:
                    continue
                event = out.delta(delta)
                if not started:
                    started = True
                    event = out.role() + event
                yield event
        tail = out.delta({}, "tool_calls" if tool_calls.seen else finish)
        if not started:
            tail = out.role() + tail
        if plan.include_usage:
            tail += out.usage(usage)
        meter.add(usage)
        yield tail + DONE

    async def completion_events(
        self,
        req: CompletionRequest,
        prompt: str,
        config: dict[str, Any],
        extra: dict[str, Any],
        meter: Meter = UNMETERED,
    ) -> AsyncGenerator[bytes, None]:
        rid, created = new_id("cmpl-"), int(time.time())
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        out = ChunkEncoder("text_completion", rid, created, req.model, include_usage)

        def choice(text: str, finish: str | None = None) -> bytes:
            return out.choice({"text": text, "index": 0, "logprobs": None, "finish_reason": finish})

        stream = self._stream([{"role": "user", "content": prompt}], req.model, config, extra)
        finish, usage = "stop", usage_of(0, 0)
        started = False
        async with aclosing(stream):
            async for text, meta in stream:
                if meta.finish_reason is not None and not text:
                    finish = meta.finish_reason
                    usage = usage_of(meta.input_tokens_count, meta.generated_tokens_count)
                    continue
                if isinstance(text, bytes):
                    raise _speech_error(req.model)
                if started and meta.extra_info.get("restarted"):
                    raise _restarted_error()
                if not text:
                    continue
                if not started and req.echo:
                    text = prompt + text
                started = True
                yield choice(text)
        tail = choice(prompt if req.echo and not started else "", finish)
        if include_usage:
            tail += out.usage(usage)
        meter.add(usage)
        yield tail + DONE

    async def complete_texts(
        self,
        req: CompletionRequest,
        prompts: list[str],
        config: dict[str, Any],
        extra: dict[str, Any],
    ) -> dict[str, Any]:
        """A legacy completion body: each prompt as a one-message chat, all at once."""

        async def one(prompt: str) -> LLMResponse:
            [response] = await self.llm.chat_oai(
                [{"role": "user", "content": prompt}],
                model=req.model,
                llm_config=config,
                extra_request_params=extra or None,
            )
            return response

        responses = await asyncio.gather(*(one(p) for p in prompts))
        texts, prompt_tokens, completion_tokens = [], 0, 0
        for prompt, response in zip(prompts, responses, strict=True):
            meta = response.metadata
            text = str(response.output)
            finish = str(meta.get("finish_reason") or "stop")
            texts.append((prompt + text if req.echo else text, finish))
            prompt_tokens += int(meta.get("input_tokens_count") or 0)
            completion_tokens += int(meta.get("generated_tokens_count") or 0)
        usage = usage_of(prompt_tokens, completion_tokens)
        return completion_body(new_id("cmpl-"), int(time.time()), req.model, texts, usage)


def embeddings_body(req: EmbeddingRequest, responses: list[LLMResponse]) -> dict[str, Any]:
    data = [
        {"object": "embedding", "index": i, "embedding": _embedding(r.output, req.encoding_format)}
        for i, r in enumerate(responses)
    ]
    tokens = int(responses[0].metadata.get("input_tokens_count") or 0) if responses else 0
    return {
        "object": "list",
        "data": data,
        "model": req.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _embedding(vector: list[float], encoding: str) -> Any:
    if encoding != "base64":
        return vector
    packed = array.array("f", vector)
    if sys.byteorder != "little":  # OpenAI's base64 is little-endian float32
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def _routes(gw: Gateway) -> list[Route]:
    """The endpoints; each asks the authenticator first (the seam for per-key auth)."""

    async def chat_completions(request: Request) -> Response:
        caller = await gw.auth(request)
        req = parse_body(ChatCompletionRequest, await gw.read_body(request))
        check_chat(req)
        meter = await caller.admit(alias_of(req.model))
        async with meter:
            backend = await gw.backend_type(req.model) if needs_backend_type(req) else None
            plan = chat_plan(req, backend)
            if plan.stream:
                return EventStream(meter.stream(gw.chat_events(plan, meter)))
            answer = await until_done_or_gone(request, gw.complete(plan))
            meter.add(answer.usage())
        return JSONBytes(dumps(chat_body(plan, answer)))

    async def completions(request: Request) -> Response:
        caller = await gw.auth(request)
        req = parse_body(CompletionRequest, await gw.read_body(request))
        prompts = check_completion(req)
        meter = await caller.admit(alias_of(req.model))
        async with meter:
            backend = await gw.backend_type(req.model) if needs_backend_type(req) else None
            config, extra = sampling(req, backend)
            if req.stream:
                events = gw.completion_events(req, prompts[0], config, extra, meter)
                return EventStream(meter.stream(events))
            body = await until_done_or_gone(request, gw.complete_texts(req, prompts, config, extra))
            meter.add(body["usage"])
        return JSONBytes(dumps(body))

    async def embeddings(request: Request) -> Response:
        caller = await gw.auth(request)
        req = parse_body(EmbeddingRequest, await gw.read_body(request))
        texts = [req.input] if isinstance(req.input, str) else list(req.input)
        if not texts:
            raise bad_request("input is an empty list; send a string or a list of strings", "input")
        meter = await caller.admit(alias_of(req.model))
        async with meter:
            config = {"dimensions": req.dimensions} if req.dimensions else None
            work = gw.llm.emb(req.model, texts, config)
            body = embeddings_body(req, await until_done_or_gone(request, work))
            meter.add(body["usage"])
        return JSONBytes(dumps(body))

    async def models(request: Request) -> Response:
        caller = await gw.auth(request)
        served = await gw.served_models()
        data = [_model_entry(m) for m in served if caller.may_use(m.alias)]
        return JSONBytes(dumps({"object": "list", "data": data}))

    async def model(request: Request) -> Response:
        caller = await gw.auth(request)
        name = str(request.path_params["model"])
        caller.check_alias(alias_of(name))
        for served in await gw.served_models():
            if served.alias == name:
                return JSONBytes(dumps(_model_entry(served)))
        raise _ApiError(
            404,
            f"no live worker serves a model named {name!r}; GET /v1/models lists them",
            param="model",
            code="model_not_found",
        )

    async def live(request: Request) -> Response:
        return JSONBytes(b'{"status":"ok"}')

    async def ready(request: Request) -> Response:
        try:
            await gw.ready()
        except (ByzerLLMError, TimeoutError) as exc:
            reason = str(exc) or "Redis did not answer in time"
            raise _ApiError(503, reason, type_="service_unavailable", code="not_ready") from None
        return JSONBytes(b'{"status":"ready"}')

    return [
        Route("/v1/chat/completions", guarded(chat_completions), methods=["POST"]),
        Route("/v1/completions", guarded(completions), methods=["POST"]),
        Route("/v1/embeddings", guarded(embeddings), methods=["POST"]),
        Route("/v1/models", guarded(models), methods=["GET"]),
        Route("/v1/models/{model:path}", guarded(model), methods=["GET"]),
        Route("/health/live", live, methods=["GET"]),
        Route("/health/ready", guarded(ready), methods=["GET"]),
    ]


def _model_entry(model: catalog.ServedModel) -> dict[str, Any]:
    return {"id": model.alias, "object": "model", "created": model.created, "owned_by": "byzerllm"}


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no such route or method), in OpenAI's shape."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        message, code = f"no such endpoint: {request.method} {request.url.path}", "not_found"
    elif status == 405:
        message, code = f"{request.method} is not allowed on {request.url.path}", None
    else:
        message, code = str(getattr(exc, "detail", "")) or "HTTP error", None
    return error_response(_ApiError(status, message, code=code))


def create_app(
    settings: BrokerSettings | None = None,
    *,
    master_key: str | None = None,
    request_timeout: float | None | str = "default",
) -> Starlette:
    """The gateway app for ``settings`` (default: from the environment).

    ``master_key``: the key clients must send (None: no authentication; then
    serve it on loopback only, as ``byzerllm serve`` does). ``request_timeout``:
    seconds before a request's deadline (default: ``BYZERLLM_REQUEST_TIMEOUT``).
    """
    settings = settings or BrokerSettings.from_env()
    gw = Gateway(settings, Authenticator(master_key, settings), request_timeout)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()

    app = Starlette(
        routes=[
            *_routes(gw),
            *media.routes(gw),
            *metrics_routes.routes(gw),
            *dashboard.routes(gw),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.gateway = gw
    return app

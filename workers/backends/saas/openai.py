"""``saas/openai``: any vendor or local server that speaks the OpenAI chat API.

OpenAI, DeepSeek, Moonshot, vLLM, Ollama and most gateways accept the same
``/chat/completions`` and ``/embeddings`` requests, so one backend built on
the official SDK serves them all; ``saas.base_url`` picks the vendor. The
model name picks the job: whisper, tts and dall-e models answer ``chat``
through :mod:`.openai_media`, and the original byzerllm's image conventions
become OpenAI content parts (:mod:`.content`).

The SDK already retries 429s, 5xx and dropped connections with backoff
(``saas.max_retries``); what still fails reaches the client as a
:class:`BackendError` carrying the vendor's own message, with ``retryable``
set where trying again later can help. The API key never appears in an
error message: vendors that echo it back have it masked.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from byzerllm.broker.content import with_parts
from byzerllm.broker.errors import BackendLoadError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.settings import mask_url
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Chunk, content_text, wants_prefix
from byzerllm.workers.backends.saas import openai_media
from byzerllm.workers.backends.saas.base import SaasBackend, SaasOptions
from byzerllm.workers.backends.saas.connection import (
    check_connection,
    http_client,
    parse_local_address,
    parse_proxies,
    parse_verify,
)
from byzerllm.workers.backends.saas.vendor_errors import SdkErrors
from byzerllm.workers.llm_config import first as _first
from byzerllm.workers.llm_config import number as _number
from byzerllm.workers.llm_config import stop_list as _stop_list

if TYPE_CHECKING:
    from openai import AsyncOpenAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# What local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) conventionally
# accept when no key is configured; the SDK refuses to start without one.
NO_KEY = "EMPTY"
_OFFICIAL_HOSTS = frozenset({"api.openai.com"})
# vendors that continue a marked last assistant message, by a word of their host
_PREFIX_HOSTS = ("deepseek", "siliconflow")


class OpenAIOptions(SaasOptions):
    api_key: SecretStr | None = Field(default=None, alias="saas.api_key")
    base_url: str = Field(default=DEFAULT_BASE_URL, alias="saas.base_url")
    # Some older compatible servers reject ``stream_options``; they can turn it off.
    include_usage: bool = Field(default=True, alias="saas.include_usage")
    # How the vendor continues a last assistant message (gen.response_prefix):
    # "deepseek" marks it "prefix": true, "siliconflow" sends it as a "prefix"
    # field; "auto" picks by the base URL's host and otherwise marks it as
    # DeepSeek does (as the original byzerllm did); "none" sends it unmarked.
    prefix_style: Literal["auto", "deepseek", "siliconflow", "none"] = Field(
        default="auto", alias="saas.prefix_style"
    )
    # Reasoning models (OpenAI's o1/o3, DeepSeek R1, ...) refuse or ignore
    # temperature and top_p, and OpenAI's take the output limit only as
    # max_completion_tokens: saas.is_reasoning leaves the sampling settings out
    # and, with max_tokens_field "auto", names the limit that way. Vendors that
    # read max_tokens for their reasoners too (DeepSeek) set the field.
    # ("is_reasoning" without the prefix is the original SimpleByzerLLM's spelling.)
    is_reasoning: bool = Field(default=False, alias="saas.is_reasoning")
    max_tokens_field: Literal["auto", "max_tokens", "max_completion_tokens"] = Field(
        default="auto", alias="saas.max_tokens_field"
    )
    # How connections reach the vendor (see connection.py): a proxy, TLS
    # checks (false, or a CA bundle), the local address to connect from.
    proxies: dict[str, str | None] | None = Field(default=None, alias="saas.proxies")
    https_verify: bool | str = Field(default=True, alias="saas.https_verify")
    local_address: str | None = Field(default=None, alias="saas.local_address")

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, value: Any) -> Any:
        if value in (None, ""):
            return DEFAULT_BASE_URL
        if isinstance(value, str):
            return value.strip().rstrip("/")
        return value

    @field_validator("proxies", mode="before")
    @classmethod
    def _proxies(cls, value: Any) -> Any:
        return parse_proxies(value)

    @field_validator("https_verify", mode="before")
    @classmethod
    def _https_verify(cls, value: Any) -> Any:
        return parse_verify(value)

    @field_validator("local_address", mode="before")
    @classmethod
    def _local_address(cls, value: Any) -> Any:
        return parse_local_address(value)


class OpenAIBackend(SaasBackend):
    Options = OpenAIOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "embed", "tools"})
    options: OpenAIOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._client: AsyncOpenAI | None = None
        self._sdk: ModuleType | None = None

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> OpenAIOptions:
        """Fail at deploy time, with the fix spelled out, rather than on the first request."""
        options: OpenAIOptions = super().parse_options(spec)
        where = f"{spec.pretrained_model_type} ({spec.alias})"
        cls.check_options(options, where)
        check_connection(options, where)
        return options

    @classmethod
    def check_options(cls, options: Any, where: str) -> None:
        """What the vendor needs that pydantic cannot tell; subclasses check their own keys."""
        if not options.model.strip():
            raise ConfigurationError(
                f"{where} needs saas.model, the vendor's model name, "
                "e.g. --infer_params saas.model=gpt-4o"
            )
        if urlsplit(options.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(
                f"{where}: saas.base_url must be an http(s) URL such as "
                f"{DEFAULT_BASE_URL}, not {mask_url(options.base_url)!r}"
            )
        if not _key(options) and urlsplit(options.base_url).hostname in _OFFICIAL_HOSTS:
            raise ConfigurationError(
                f"{where} needs saas.api_key for {options.base_url}, "
                "e.g. --infer_params saas.api_key=sk-..."
            )

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def prefix_style(self) -> str:
        """The prefix-completion style in use: the option, or the vendor's by host."""
        style = self.options.prefix_style
        if style != "auto":
            return style
        host = urlsplit(self.options.base_url).hostname or ""
        return next((name for name in _PREFIX_HOSTS if name in host), "auto")

    @property
    def max_tokens_field(self) -> str:
        """The name the output limit goes under: the option, else by is_reasoning."""
        field = self.options.max_tokens_field
        if field != "auto":
            return field
        return "max_completion_tokens" if self.options.is_reasoning else "max_tokens"

    @property
    def continues_answers(self) -> bool:
        """Only for vendors known (or said) to continue a marked prefix: an unknown
        server may ignore the mark and answer afresh, so a retry restarts there."""
        return self.prefix_style in _PREFIX_HOSTS

    async def start(self) -> None:
        sdk = _import_sdk()
        self._sdk = sdk
        self._client = self._make_client(sdk)

    def _make_client(self, sdk: ModuleType) -> AsyncOpenAI:
        opts = self.options
        client: AsyncOpenAI = sdk.AsyncOpenAI(
            api_key=_key(opts) or NO_KEY,
            base_url=opts.base_url,
            timeout=opts.timeout,
            max_retries=opts.max_retries,
            http_client=http_client(sdk, opts, self.spec.worker_concurrency),
        )
        return client

    def _where(self) -> str:
        """The vendor URL for error messages, without credentials."""
        return mask_url(self.options.base_url)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "model_deploy_type": "saas",
            "support_stream": True,
            "model_name": self.options.model,
            # one backend serves chat and embedding models: the model name tells which
            "embedding_mode": "embedding" in self.options.model.lower(),
        }

    # -- chat --------------------------------------------------------------------------

    # Both paths go through the SDK's own post(): its auth, retries, SSE decoding
    # and errors, but without building response models that we would only take
    # apart again; that halves the SDK's CPU time and its first-chunk latency.

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        content = request.conversations[-1].get("content") if request.conversations else ""
        media = openai_media.media_kind(self.options.model, content)
        if media is not None and media[0] == "speech":  # tts: the audio as it arrives
            async for chunk in self._speech(media[1]):
                yield chunk
            return
        if media is not None:  # whisper, dall-e: one whole answer, streamed or not
            yield await self._media(*media)
            return
        if not request.stream:  # one JSON answer parses far cheaper than an SSE stream
            yield await self._chat_whole(request)
            return
        usage: dict[str, Any] | None = None
        finish_reason: str | None = None
        deltas = 0
        calls = _CallIndexes()
        try:
            stream = await self._post(request, stream=True)
            async with stream:
                async for event in stream:
                    usage = event.get("usage") or usage
                    for choice in (event.get("choices") or ())[:1]:  # n > 1: not in this API
                        finish_reason = choice.get("finish_reason") or finish_reason
                        piece = _delta_chunk(choice.get("delta"), calls)
                        if piece is not None:
                            deltas += 1
                            yield piece
        except Exception as exc:
            self._reraise(exc)
        yield _final_chunk(usage, finish_reason, deltas)

    async def _chat_whole(self, request: ChatPayload) -> Chunk:
        try:
            body = json.loads(await self._post(request))
        except Exception as exc:
            self._reraise(exc)
        choices = body.get("choices") or [{}]
        piece = _delta_chunk(choices[0].get("message")) or Chunk()
        final = _final_chunk(body.get("usage"), choices[0].get("finish_reason"), 1)
        piece.input_tokens, piece.output_tokens = final.input_tokens, final.output_tokens
        piece.finish_reason = final.finish_reason
        return piece

    async def _media(self, kind: openai_media.MediaKind, media: dict[str, Any]) -> Chunk:
        run = {"transcribe": openai_media.transcribe, "image": openai_media.draw}[kind]
        try:
            return await run(self._ready(), self.options.model, media)
        except Exception as exc:
            self._reraise(exc)

    async def _speech(self, media: dict[str, Any]) -> AsyncIterator[Chunk]:
        try:
            async for piece in openai_media.speak(self._ready(), self.options.model, media):
                if piece:
                    yield Chunk(audio=piece)
        except Exception as exc:
            self._reraise(exc)
        yield Chunk(finish_reason="stop")

    async def _post(self, request: ChatPayload, stream: bool = False) -> Any:
        client = self._ready()
        params = self._chat_params(request)
        params.update(params.pop("extra_body", None) or {})  # what create() would do
        if not stream:
            return await client.post("/chat/completions", body=params, cast_to=str)
        return await client.post(
            "/chat/completions",
            body=params,
            cast_to=object,
            stream=True,
            stream_cls=self._sdk.AsyncStream[object],  # type: ignore[union-attr]
        )

    def _chat_params(self, request: ChatPayload) -> dict[str, Any]:
        """Per-request llm_config wins over the deployment's defaults."""
        opts, config = self.options, request.llm_config
        params: dict[str, Any] = {
            "model": opts.model,
            "messages": with_parts(request.conversations),
            "stream": request.stream,
        }
        if opts.include_usage and request.stream:
            params["stream_options"] = {"include_usage": True}
        max_tokens = _first(config, "max_length", "max_tokens", default=opts.max_output_tokens)
        if max_tokens is not None and _number("max_length", max_tokens, int) > 0:
            params[self.max_tokens_field] = _number("max_length", max_tokens, int)
        if not opts.is_reasoning:  # reasoning models refuse them (OpenAI: HTTP 400)
            params.update(_sampling(opts, config))
        stop = _stop_list(config.get("gen.stop"))
        if stop:
            params["stop"] = stop
        if request.tools:
            params["tools"] = [{"type": "function", "function": spec} for spec in request.tools]
            if request.tool_choice:
                params["tool_choice"] = {
                    "type": "function",
                    "function": {"name": request.tool_choice},
                }
        if request.extra_request_params:
            params["extra_body"] = dict(request.extra_request_params)
        if wants_prefix(request):
            self._mark_prefix(params)
        return params

    def _mark_prefix(self, params: dict[str, Any]) -> None:
        """Ask the vendor to continue the last assistant message, its own way."""
        style = self.prefix_style
        messages = params["messages"]
        if style == "none":
            return
        if style == "siliconflow":
            prefix = content_text(messages[-1].get("content"))
            params["messages"] = messages[:-1]
            params["extra_body"] = {**params.get("extra_body", {}), "prefix": prefix}
            return
        params["messages"] = [*messages[:-1], {**messages[-1], "prefix": True}]

    # -- embeddings ----------------------------------------------------------------------

    async def embed(self, texts: list[str], llm_config: dict[str, Any]) -> list[list[float]]:
        if not texts:
            return []
        client = self._ready()
        extra: dict[str, Any] = {}
        if llm_config.get("dimensions"):
            extra["dimensions"] = int(llm_config["dimensions"])
        try:
            result = await client.embeddings.create(model=self.options.model, input=texts, **extra)
        except Exception as exc:
            self._reraise(exc)
        ordered = sorted(result.data, key=lambda item: item.index)  # vendors may reorder
        return [list(item.embedding) for item in ordered]

    # -- errors --------------------------------------------------------------------------

    def _ready(self) -> AsyncOpenAI:
        client: AsyncOpenAI = super()._ready()
        return client

    def _translate(self, exc: Exception) -> Exception:
        """The vendor's words, our exception type, and a hint about what to try."""
        if self._sdk is None:
            return exc
        opts = self.options
        return SdkErrors(
            self._sdk,
            self._sdk.OpenAIError,
            self._where(),
            _key(opts),
            opts.timeout,
            opts.max_retries,
        ).translate(exc)


# -- helpers ---------------------------------------------------------------------------


def _import_sdk() -> ModuleType:
    """Imported on start so that deploy-time config errors need no SDK installed."""
    try:
        import openai
    except ImportError as exc:
        raise BackendLoadError(
            f"saas/openai needs the openai package ({exc}): pip install 'byzerllm[openai]'"
        ) from exc
    return openai


def _sampling(options: OpenAIOptions, config: dict[str, Any]) -> dict[str, float]:
    """temperature and top_p: the request's, else the deployment's, where set."""
    chosen: dict[str, float] = {}
    for name, default in (("temperature", options.temperature), ("top_p", options.top_p)):
        value = _first(config, name, default=default)
        if value is not None:
            chosen[name] = _number(name, value, float)
    return chosen


def _key(options: OpenAIOptions) -> str:
    return options.api_key.get_secret_value().strip() if options.api_key else ""


def _tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI's ``tool_calls`` (arguments as JSON text) as our structured tool choice."""
    chosen = []
    for call in calls:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            pass  # the client reports arguments it cannot read, with the text
        chosen.append(
            {"id": call.get("id"), "name": function.get("name", ""), "arguments": arguments}
        )
    return chosen


class _CallIndexes:
    """The index of each streamed tool call. OpenAI numbers a call's fragments
    with ``index``; a server that leaves it out sends each call whole, so a new
    id (or none seen yet) is a new call and anything else goes on with the last."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.last = -1

    def index_of(self, delta: dict[str, Any]) -> int:
        index = delta.get("index")
        if isinstance(index, int):
            self.last = index
            return index
        call_id = delta.get("id")
        if self.last < 0 or (call_id and call_id not in self.ids):
            self.last += 1
        if call_id and call_id not in self.ids:
            self.ids.append(call_id)
        return self.last


def _call_fragments(deltas: list[dict[str, Any]], calls: _CallIndexes) -> list[dict[str, Any]]:
    """OpenAI's streamed ``tool_calls`` deltas as fragments {index, id?, name?, arguments?}."""
    fragments = []
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        function = delta.get("function") or {}
        fragment: dict[str, Any] = {"index": calls.index_of(delta)}
        if delta.get("id"):
            fragment["id"] = str(delta["id"])
        if function.get("name"):
            fragment["name"] = str(function["name"])
        arguments = function.get("arguments")
        if arguments:
            fragment["arguments"] = (
                arguments if isinstance(arguments, str) else json.dumps(arguments)
            )
        if len(fragment) > 1:
            fragments.append(fragment)
    return fragments


def _delta_chunk(delta: dict[str, Any] | None, calls: _CallIndexes | None = None) -> Chunk | None:
    """A stream delta (``calls``: the stream's tool-call numbering), or the whole
    message of an unstreamed answer; DeepSeek-style servers send the model's
    thinking as ``reasoning_content``."""
    if not delta:
        return None
    text = delta.get("content") or ""
    whole = fragments = None
    if delta.get("tool_calls"):
        if calls is None:
            whole = _tool_calls(delta["tool_calls"])
        else:  # passed on as they come: a client sees the call before its arguments end
            fragments = _call_fragments(delta["tool_calls"], calls) or None
    reasoning = delta.get("reasoning_content") or ""
    if not (text or reasoning or whole or fragments):
        return None
    return Chunk(text=text, reasoning=reasoning, tool_calls=whole, tool_call_fragments=fragments)


def _final_chunk(usage: dict[str, Any] | None, finish_reason: str | None, deltas: int) -> Chunk:
    """Without a usage chunk, count one token per delta: how these servers stream."""
    if not usage:
        return Chunk(output_tokens=deltas, finish_reason=finish_reason or "stop")
    return Chunk(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        finish_reason=finish_reason or "stop",
    )

"""``saas/openai``: any vendor or local server that speaks the OpenAI chat API.

OpenAI, DeepSeek, Moonshot, vLLM, Ollama and most gateways accept the same
``/chat/completions`` and ``/embeddings`` requests, so one backend built on
the official SDK serves them all; ``saas.base_url`` picks the vendor.

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
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn
from urllib.parse import urlsplit

from pydantic import ConfigDict, Field, SecretStr, field_validator

from byzerllm.broker.errors import BackendError, BackendLoadError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.settings import mask_url
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, BackendOptions, Chunk

if TYPE_CHECKING:
    from openai import AsyncOpenAI

DEFAULT_BASE_URL = "https://api.openai.com/v1"
# What local OpenAI-compatible servers (vLLM, Ollama, llama.cpp) conventionally
# accept when no key is configured; the SDK refuses to start without one.
NO_KEY = "EMPTY"
_OFFICIAL_HOSTS = frozenset({"api.openai.com"})


class OpenAIOptions(BackendOptions):
    """``--infer_params`` keys keep their dots, hence the aliases."""

    model_config = ConfigDict(populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="saas.api_key")
    base_url: str = Field(default=DEFAULT_BASE_URL, alias="saas.base_url")
    model: str = Field(default="", alias="saas.model")
    timeout: float = Field(default=600.0, gt=0, alias="saas.timeout")
    max_retries: int = Field(default=3, ge=0, alias="saas.max_retries")
    max_output_tokens: int | None = Field(default=None, gt=0, alias="saas.max_output_tokens")
    temperature: float | None = Field(default=None, alias="saas.temperature")
    top_p: float | None = Field(default=None, alias="saas.top_p")
    # Some older compatible servers reject ``stream_options``; they can turn it off.
    include_usage: bool = Field(default=True, alias="saas.include_usage")

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, value: Any) -> Any:
        if value in (None, ""):
            return DEFAULT_BASE_URL
        if isinstance(value, str):
            return value.strip().rstrip("/")
        return value


class OpenAIBackend(Backend):
    Options = OpenAIOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "embed"})
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
        return options

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        sdk = _import_sdk()
        opts = self.options
        self._sdk = sdk
        self._client = sdk.AsyncOpenAI(
            api_key=_key(opts) or NO_KEY,
            base_url=opts.base_url,
            timeout=opts.timeout,
            max_retries=opts.max_retries,
            http_client=_http_client(sdk, self.spec.worker_concurrency),
        )

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
        }

    # -- chat --------------------------------------------------------------------------

    # Both paths go through the SDK's own post(): its auth, retries, SSE decoding
    # and errors, but without building response models that we would only take
    # apart again; that halves the SDK's CPU time and its first-chunk latency.

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        if not request.stream:  # one JSON answer parses far cheaper than an SSE stream
            yield await self._chat_whole(request)
            return
        usage: dict[str, Any] | None = None
        finish_reason: str | None = None
        deltas = 0
        try:
            stream = await self._post(request, stream=True)
            async with stream:
                async for event in stream:
                    usage = event.get("usage") or usage
                    for choice in (event.get("choices") or ())[:1]:  # n > 1: not in this API
                        finish_reason = choice.get("finish_reason") or finish_reason
                        piece = _delta_chunk(choice.get("delta"))
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
            "messages": request.conversations,
            "stream": request.stream,
        }
        if opts.include_usage and request.stream:
            params["stream_options"] = {"include_usage": True}
        max_tokens = _first(config, "max_length", "max_tokens", default=opts.max_output_tokens)
        if max_tokens is not None and _number("max_length", max_tokens, int) > 0:
            params["max_tokens"] = _number("max_length", max_tokens, int)
        for name, default in (("temperature", opts.temperature), ("top_p", opts.top_p)):
            value = _first(config, name, default=default)
            if value is not None:
                params[name] = _number(name, value, float)
        stop = _stop_list(config.get("gen.stop"))
        if stop:
            params["stop"] = stop
        if request.extra_request_params:
            params["extra_body"] = dict(request.extra_request_params)
        return params

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
        if self._client is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        return self._client

    def _reraise(self, exc: Exception) -> NoReturn:
        err = self._translate(exc)
        if err is exc:
            raise exc
        raise err from exc

    def _translate(self, exc: Exception) -> Exception:
        """The vendor's words, our exception type, and a hint about what to try."""
        sdk = self._sdk
        if isinstance(exc, BackendError) or sdk is None:
            return exc
        where = mask_url(self.options.base_url)
        if isinstance(exc, sdk.APIStatusError):
            return self._status_error(exc, where)
        if isinstance(exc, sdk.APITimeoutError) or _is_transport_timeout(exc):
            return self._error(
                f"cannot reach {where}: no answer within {self.options.timeout:g}s (saas.timeout)",
                retryable=True,
            )
        if isinstance(exc, sdk.APIConnectionError) or _is_transport_error(exc):
            reason = _cause_text(exc)
            return self._error(f"cannot reach {where}: {reason}", retryable=True)
        if isinstance(exc, sdk.OpenAIError):
            return self._error(f"{where}: {type(exc).__name__}: {exc}")
        return exc

    def _status_error(self, exc: Any, where: str) -> BackendError:
        sdk, status = self._sdk, exc.status_code
        assert sdk is not None
        detail = f"{_vendor_message(exc)} (HTTP {status} from {where}"
        detail += f", code {exc.code})" if exc.code else ")"
        if isinstance(exc, sdk.AuthenticationError | sdk.PermissionDeniedError):
            hint = "" if _key(self.options) else "; saas.api_key is not set"
            return self._error(f"authentication failed: {detail}{hint}")
        retryable = status == 429 or status >= 500
        if retryable:
            detail += f"; retried up to {self.options.max_retries} times (saas.max_retries)"
        return self._error(detail, retryable=retryable)

    def _error(self, message: str, retryable: bool = False) -> BackendError:
        key = _key(self.options)
        if key:
            message = message.replace(key, "***")
        err = BackendError(message)
        err.retryable = retryable
        return err


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


def _http_client(sdk: Any, concurrency: int) -> Any:
    """Keep a pooled connection per slot, so a busy worker does not reconnect per request."""
    limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(
        max_connections=max(1000, concurrency),
        max_keepalive_connections=max(100, concurrency),
    )
    return sdk.DefaultAsyncHttpxClient(limits=limits)


def _key(options: OpenAIOptions) -> str:
    return options.api_key.get_secret_value().strip() if options.api_key else ""


def _first(config: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def _number(name: str, value: Any, kind: type[int] | type[float]) -> Any:
    """A bad llm_config value is the caller's mistake, not a backend failure."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"llm_config {name}={value!r} is not a number; e.g. {name}={kind(1)}"
        ) from None


def _stop_list(value: Any) -> list[str]:
    """``gen.stop`` arrives as a list, or as the JSON text of one from the CLI."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v != ""]
    raise ConfigurationError(f"gen.stop must be a list of strings, not {type(value).__name__}")


def _delta_chunk(delta: dict[str, Any] | None) -> Chunk | None:
    """DeepSeek-style servers send the model's thinking as ``reasoning_content``."""
    if not delta:
        return None
    text = delta.get("content") or ""
    reasoning = delta.get("reasoning_content") or ""
    if not (text or reasoning):
        return None
    return Chunk(text=text, reasoning=reasoning)


def _final_chunk(usage: dict[str, Any] | None, finish_reason: str | None, deltas: int) -> Chunk:
    """Without a usage chunk, count one token per delta: how these servers stream."""
    if not usage:
        return Chunk(output_tokens=deltas, finish_reason=finish_reason or "stop")
    return Chunk(
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
        finish_reason=finish_reason or "stop",
    )


def _vendor_message(exc: Any) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return str(exc.message)


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("httpx")}


def _is_transport_timeout(exc: BaseException) -> bool:
    """httpx errors raised while reading a stream are not wrapped by the SDK."""
    return "TimeoutException" in _class_names(exc)


def _is_transport_error(exc: BaseException) -> bool:
    return "TransportError" in _class_names(exc)


def _cause_text(exc: BaseException) -> str:
    """The SDK's own text is a bare "Connection error."; the cause says which."""
    cause = exc.__cause__ or exc
    return f"{cause} ({type(cause).__name__})" if str(cause) else type(cause).__name__

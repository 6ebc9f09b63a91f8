"""``saas/claude``: Anthropic's Messages API through the official ``anthropic`` SDK.

Like ``saas/openai``, requests go through the SDK's own ``post()``: its
auth headers, retries of 429/5xx/529 with backoff (``saas.max_retries``),
SSE decoding and typed errors, without building response models we would
only take apart again. The body and the stream events are Anthropic's
Messages format, shared with Bedrock in :mod:`.anthropic_messages`.

The SDK is the ``claude`` extra and is imported on start, so a deployment
without it fails with the pip command to run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any, ClassVar, NoReturn
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from byzerllm.broker.errors import BackendLoadError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.settings import mask_url
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Chunk
from byzerllm.workers.backends.saas import anthropic_messages as fmt
from byzerllm.workers.backends.saas.base import SaasBackend, SaasOptions
from byzerllm.workers.backends.saas.vendor_errors import SdkErrors

DEFAULT_BASE_URL = "https://api.anthropic.com"


class ClaudeOptions(SaasOptions):
    api_key: SecretStr | None = Field(default=None, alias="saas.api_key")
    base_url: str = Field(default=DEFAULT_BASE_URL, alias="saas.base_url")

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, value: Any) -> Any:
        if value in (None, ""):
            return DEFAULT_BASE_URL
        return value.strip().rstrip("/").removesuffix("/v1") if isinstance(value, str) else value

    def key(self) -> str:
        return self.api_key.get_secret_value().strip() if self.api_key else ""


class ClaudeBackend(SaasBackend):
    Options = ClaudeOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "tools"})
    options: ClaudeOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._sdk: ModuleType | None = None
        self._client: Any = None  # anthropic.AsyncAnthropic once started

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> ClaudeOptions:
        options: ClaudeOptions = super().parse_options(spec)
        where = f"{spec.pretrained_model_type} ({spec.alias})"
        if not options.model.strip():
            raise ConfigurationError(
                f"{where} needs saas.model, "
                "e.g. --infer_params saas.model=claude-3-5-sonnet-20240620"
            )
        if not options.key():
            raise ConfigurationError(
                f"{where} needs saas.api_key, e.g. --infer_params saas.api_key=sk-ant-..."
            )
        if urlsplit(options.base_url).scheme not in ("http", "https"):
            raise ConfigurationError(
                f"{where}: saas.base_url must be an http(s) URL such as {DEFAULT_BASE_URL}, "
                f"not {mask_url(options.base_url)!r}"
            )
        return options

    async def start(self) -> None:
        try:
            import anthropic
        except ImportError as exc:
            raise BackendLoadError(
                f"saas/claude needs the anthropic package ({exc}): pip install 'byzerllm[claude]'"
            ) from exc
        opts = self.options
        self._sdk = anthropic
        self._client = anthropic.AsyncAnthropic(
            api_key=opts.key(),
            base_url=opts.base_url,
            timeout=opts.timeout,
            max_retries=opts.max_retries,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "support_stream": True, "model_name": self.options.model}

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        body = self._body(request)
        client = self._ready()
        if not request.stream:
            try:
                text = await client.post("/v1/messages", body=body, cast_to=str)
            except Exception as exc:
                self._reraise(exc)
            yield fmt.whole_chunk(json.loads(text))
            return
        reader = fmt.StreamReader()
        try:
            stream = await client.post(
                "/v1/messages",
                body={**body, "stream": True},
                cast_to=object,
                stream=True,
                stream_cls=self._sdk.AsyncStream[object],  # type: ignore[union-attr]
            )
            async with stream:
                async for event in stream:
                    piece = reader.feed(event)
                    if piece is not None:
                        yield piece
        except Exception as exc:
            self._reraise(exc)
        yield reader.final()

    def _body(self, request: ChatPayload) -> dict[str, Any]:
        opts = self.options
        body = fmt.build_body(request, opts, request.extra_request_params)
        return {"model": opts.model, **body}

    def _reraise(self, exc: Exception) -> NoReturn:
        err = exc
        if self._sdk is not None:
            opts = self.options
            err = SdkErrors(
                self._sdk,
                self._sdk.AnthropicError,
                mask_url(opts.base_url),
                opts.key(),
                opts.timeout,
                opts.max_retries,
            ).translate(exc)
        if err is exc:
            raise exc
        raise err from exc

"""What the text-to-speech vendors share: the request's reading, the HTTP client, the errors.

A TTS deployment is asked through ``chat`` like the original byzerllm did:
the last user message is ``{"input", "voice", "response_format"}`` as JSON
(or just the text to speak), and the answer is the audio as base64 text,
which the guide decodes with ``base64.b64decode(t[0].output)``. Streamed
(``stream_chat_oai``), the audio comes as it arrives from the vendor: each
piece goes to the client as bytes (an audio delta), not as base64 text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any, ClassVar, NoReturn

from pydantic import ConfigDict, Field, SecretStr

from byzerllm.broker.errors import BackendError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, BackendOptions, Chunk
from byzerllm.workers.backends.saas.http_retry import import_httpx, send_with_retry
from byzerllm.workers.backends.saas.vendor_errors import backend_error
from byzerllm.workers.media import media_request


class TTSOptions(BackendOptions):
    model_config = ConfigDict(populate_by_name=True)

    api_key: SecretStr | None = Field(default=None, alias="saas.api_key")
    base_url: str = Field(default="", alias="saas.base_url")
    model: str = Field(default="", alias="saas.model")
    voice: str = Field(default="", alias="saas.voice")
    timeout: float = Field(default=60.0, gt=0, alias="saas.timeout")
    max_retries: int = Field(default=3, ge=0, alias="saas.max_retries")

    def key(self) -> str:
        return self.api_key.get_secret_value().strip() if self.api_key else ""


class SpeechRequest:
    __slots__ = ("text", "voice", "format", "extra")

    def __init__(self, text: str, voice: str, fmt: str, extra: dict[str, Any]) -> None:
        self.text, self.voice, self.format, self.extra = text, voice, fmt, extra


class TTSBackend(Backend):
    """Subclasses set ``DEFAULT_VOICE`` and implement ``synthesize`` (an async
    generator of audio pieces, as the vendor sends them) and ``where``."""

    Options = TTSOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})
    DEFAULT_VOICE: ClassVar[str] = ""
    options: TTSOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._httpx: ModuleType | None = None
        self._client: Any = None

    async def start(self) -> None:
        httpx = self._httpx = import_httpx(self.name)
        self._client = httpx.AsyncClient(timeout=self.options.timeout)

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "support_stream": True, "model_name": self.options.model}

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        """The audio pieces as they come; the worker streams them, or (unstreamed)
        answers them joined, as base64 text."""
        speech = self.speech_request(request)
        try:
            async for piece in self.synthesize(speech):
                if piece:
                    yield Chunk(audio=piece)
        except BackendError:
            raise
        except Exception as exc:
            self._reraise(exc)
        yield Chunk(finish_reason="stop")

    def speech_request(self, request: ChatPayload) -> SpeechRequest:
        content = request.conversations[-1].get("content") if request.conversations else ""
        asked = media_request(content) or {"input": content}
        text = asked.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ConfigurationError(
                f"{self.name} speaks text: send the last user message as "
                '{"input": "hello", "voice": "...", "response_format": "mp3"} or plain text'
            )
        voice = str(asked.get("voice") or self.options.voice or self.DEFAULT_VOICE)
        fmt = str(asked.get("response_format") or "mp3")
        extra = {k: v for k, v in asked.items() if k not in ("input", "voice", "response_format")}
        return SpeechRequest(text, voice, fmt, extra)

    def synthesize(self, speech: SpeechRequest) -> AsyncIterator[bytes]:
        raise NotImplementedError

    def where(self) -> str:
        raise NotImplementedError

    async def post(self, url: str, *, stream: bool = False, **kwargs: Any) -> Any:
        """POST with retries; the final response, whatever its status. With
        ``stream`` its body is not read yet (``aiter_bytes``; the caller closes it)."""
        client, httpx = self._client, self._httpx
        if client is None or httpx is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        if stream:
            return await send_with_retry(
                httpx,
                lambda: client.send(client.build_request("POST", url, **kwargs), stream=True),
                self.options.max_retries,
            )
        return await send_with_retry(
            httpx, lambda: client.post(url, **kwargs), self.options.max_retries
        )

    def _reraise(self, exc: Exception) -> NoReturn:
        httpx, opts = self._httpx, self.options
        if httpx is not None and isinstance(exc, httpx.TimeoutException):
            raise backend_error(
                f"cannot reach {self.where()}: no answer within {opts.timeout:g}s (saas.timeout)",
                (opts.key(),),
                retryable=True,
            ) from exc
        if httpx is not None and isinstance(exc, httpx.TransportError):
            raise backend_error(
                f"cannot reach {self.where()}: {exc or type(exc).__name__}",
                (opts.key(),),
                retryable=True,
            ) from exc
        raise exc

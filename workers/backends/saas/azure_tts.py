"""``saas/azure``: Azure AI Speech text-to-speech over its REST API, with SSML.

``POST https://<region>.tts.speech.microsoft.com/cognitiveservices/v1`` with
the key in ``Ocp-Apim-Subscription-Key``, an SSML body naming the voice, and
``X-Microsoft-OutputFormat`` choosing the codec; the answer is the audio
bytes, chunked as the service synthesizes them, and passed on as they come.
The REST API avoids the Speech SDK, a native library with no async
API. Settings as in the guide: ``saas.api_key``, ``saas.service_region``;
optionally ``saas.voice`` (default ``zh-CN-XiaoxiaoNeural``) and
``saas.base_url`` to point elsewhere. Plain httpx, retried by
:mod:`.http_retry`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, ClassVar
from xml.sax.saxutils import escape, quoteattr

from pydantic import Field

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import mask_url
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backends.saas.tts import SpeechRequest, TTSBackend, TTSOptions
from byzerllm.workers.backends.saas.vendor_errors import status_error

# response_format -> X-Microsoft-OutputFormat
OUTPUT_FORMATS = {
    "mp3": "audio-24khz-48kbitrate-mono-mp3",
    "wav": "riff-24khz-16bit-mono-pcm",
    "pcm": "raw-24khz-16bit-mono-pcm",
    "opus": "ogg-24khz-16bit-mono-opus",
    "ogg": "ogg-24khz-16bit-mono-opus",
    "webm": "webm-24khz-16bit-mono-opus",
}


class AzureTTSOptions(TTSOptions):
    service_region: str = Field(default="", alias="saas.service_region")


class AzureTTSBackend(TTSBackend):
    Options = AzureTTSOptions
    DEFAULT_VOICE: ClassVar[str] = "zh-CN-XiaoxiaoNeural"
    options: AzureTTSOptions

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> AzureTTSOptions:
        options: AzureTTSOptions = super().parse_options(spec)
        where = f"{spec.pretrained_model_type} ({spec.alias})"
        if not options.key():
            raise ConfigurationError(
                f"{where} needs saas.api_key, the Speech resource key, "
                "e.g. --infer_params saas.api_key=<key>"
            )
        if not options.service_region.strip() and not options.base_url:
            raise ConfigurationError(
                f"{where} needs saas.service_region, e.g. --infer_params saas.service_region=eastus"
            )
        region = options.service_region.strip()
        options.base_url = (
            options.base_url or f"https://{region}.tts.speech.microsoft.com"
        ).rstrip("/")
        options.model = options.model or "azure_tts"
        return options

    def where(self) -> str:
        return mask_url(self.options.base_url)

    async def synthesize(self, speech: SpeechRequest) -> AsyncIterator[bytes]:
        output = OUTPUT_FORMATS.get(speech.format)
        if output is None:
            raise ConfigurationError(
                f"response_format {speech.format!r} is not one Azure TTS offers here; "
                f"use one of {', '.join(OUTPUT_FORMATS)}"
            )
        response = await self.post(
            f"{self.options.base_url}/cognitiveservices/v1",
            content=ssml(speech.text, speech.voice, speech.extra).encode(),
            headers={
                "Ocp-Apim-Subscription-Key": self.options.key(),
                "Content-Type": "application/ssml+xml",
                "X-Microsoft-OutputFormat": output,
                "User-Agent": "byzerllm",
            },
            stream=True,
        )
        try:
            if response.status_code != 200:
                await response.aread()
                raise status_error(
                    response.status_code,
                    _message(response),
                    self.where(),
                    secrets=(self.options.key(),),
                    max_retries=self.options.max_retries,
                )
            async for piece in response.aiter_bytes():
                yield piece
        finally:
            await response.aclose()


def ssml(text: str, voice: str, extra: dict[str, Any]) -> str:
    """The text escaped into SSML; a voice's language is the first two parts of its name."""
    lang = "-".join(voice.split("-")[:2]) or "en-US"
    body = escape(text)
    rate = extra.get("rate") or extra.get("speed")
    if rate:
        body = f"<prosody rate={quoteattr(str(rate))}>{body}</prosody>"
    return (
        "<speak version='1.0' xmlns='http://www.w3.org/2001/10/synthesis' "
        f"xml:lang={quoteattr(lang)}>"
        f"<voice name={quoteattr(voice)}>{body}</voice></speak>"
    )


def _message(response: Any) -> str:
    """Azure often sends no body at all; the status line is then all there is."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or response.reason_phrase)
    text = response.text.strip()
    return text[:300] if text else str(response.reason_phrase or f"HTTP {response.status_code}")

"""``saas/volcengine``: Volcengine (ByteDance) text-to-speech over its HTTP API.

``POST /api/v1/tts`` with ``Authorization: Bearer;<token>`` (a semicolon,
not a space: the vendor's own convention) and a JSON body of ``app``
(``appid``, ``token``, ``cluster``), ``user``, ``audio`` (``voice_type``,
``encoding``) and ``request`` (``reqid``, ``text``, ``operation: query``).
The answer is JSON with the audio already base64 in ``data`` and a
vendor ``code``: 3000 is success, others carry the reason in ``message``.
This HTTP API answers the audio whole, so a streamed call gets it as one piece.

Settings as in the guide: ``saas.api_key`` (the access token),
``saas.app_id``, ``saas.model`` (the cluster, ``volcano_tts``), and
optionally ``saas.voice`` (default ``BV705_streaming``) and
``saas.base_url``. Plain httpx, retried by :mod:`.http_retry`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import Field

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import mask_url
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backends.saas.tts import SpeechRequest, TTSBackend, TTSOptions
from byzerllm.workers.backends.saas.vendor_errors import backend_error, status_error

DEFAULT_BASE_URL = "https://openspeech.bytedance.com"
# Vendor codes that mean "try again later", though some arrive with HTTP 200.
_BUSY_CODES = frozenset({3003, 3005, 3030})


class VolcengineOptions(TTSOptions):
    app_id: str = Field(default="", alias="saas.app_id")
    uid: str = Field(default="byzerllm", alias="saas.uid")


class VolcengineTTSBackend(TTSBackend):
    Options = VolcengineOptions
    DEFAULT_VOICE: ClassVar[str] = "BV705_streaming"
    options: VolcengineOptions

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> VolcengineOptions:
        options: VolcengineOptions = super().parse_options(spec)
        where = f"{spec.pretrained_model_type} ({spec.alias})"
        for name, example, value in (
            ("api_key", "saas.api_key=<access token>", options.key()),
            ("app_id", "saas.app_id=6503259792", options.app_id),
        ):
            if not str(value).strip():
                raise ConfigurationError(
                    f"{where} needs saas.{name}, e.g. --infer_params {example}"
                )
        options.model = options.model or "volcano_tts"
        options.base_url = (options.base_url or DEFAULT_BASE_URL).rstrip("/")
        return options

    def where(self) -> str:
        return mask_url(self.options.base_url)

    async def synthesize(self, speech: SpeechRequest) -> AsyncIterator[bytes]:
        opts = self.options
        audio: dict[str, Any] = {"voice_type": speech.voice, "encoding": speech.format}
        for name in ("speed_ratio", "volume_ratio", "pitch_ratio", "rate", "emotion", "language"):
            if name in speech.extra:
                audio[name] = speech.extra[name]
        body = {
            "app": {"appid": opts.app_id, "token": opts.key(), "cluster": opts.model},
            "user": {"uid": opts.uid},
            "audio": audio,
            "request": {
                "reqid": str(uuid.uuid4()),
                "text": speech.text,
                "text_type": "plain",
                "operation": "query",
            },
        }
        response = await self.post(
            f"{opts.base_url}/api/v1/tts",
            json=body,
            headers={"Authorization": f"Bearer;{opts.key()}"},
        )
        yield self._audio(response)

    def _audio(self, response: Any) -> bytes:
        secrets = (self.options.key(),)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        code = answer.get("code") if isinstance(answer, dict) else None
        message = str(answer.get("message") or response.text[:300] or response.reason_phrase)
        if response.status_code != 200 or code != 3000:
            status = response.status_code
            if status == 200 and code in _BUSY_CODES:
                status = 429 if code == 3003 else 503
            elif status == 200:
                status = 400
            raise status_error(
                status,
                message,
                self.where(),
                code=None if code is None else str(code),
                secrets=secrets,
                max_retries=self.options.max_retries,
            )
        try:
            return base64.b64decode(answer.get("data") or "", validate=True)
        except (binascii.Error, ValueError):
            raise backend_error(f"{self.where()} sent audio that is not base64", secrets) from None

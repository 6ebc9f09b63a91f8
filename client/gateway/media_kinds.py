"""What an alias answers (chat, speech, transcription, images, rerank), read from its spec.

byzerllm asks every model through one request shape, so a speech request sent
to a chat alias would not fail: the chat model would answer the JSON with
text, and the client would get text where it wanted audio. The media
endpoints therefore look at what the alias is before they send anything, and
answer a clear 400 naming the endpoint the alias belongs to.

What an alias is follows from its spec hash (``pretrained_model_type`` and,
for OpenAI-compatible backends, ``saas.model``), which ``deploy`` and the
workers write and any gateway replica can read. Only backends known here are
judged: an alias of a plugin's backend type is let through, and its worker
answers for itself.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Literal

from byzerllm.broker import deployments
from byzerllm.broker.connection import redis_errors
from byzerllm.broker.errors import ModelNotFoundError
from byzerllm.broker.spec import openai_media_kind
from byzerllm.client.gateway.errors import bad_request

if TYPE_CHECKING:
    from byzerllm.client.gateway.app import Gateway

Kind = Literal["chat", "speech", "transcription", "image", "rerank"]

KIND_TTL = 10.0  # seconds an alias' kind is remembered (a re-deploy may change it)

_BY_BACKEND: dict[str, Kind] = {
    "saas/volcengine": "speech",
    "saas/azure": "speech",
    "custom/whisper": "transcription",
    "custom/sensevoice": "transcription",
    "custom/bge_rerank": "rerank",
    "custom/bge": "chat",  # an embedding model: no media endpoint serves it either
    "custom/echo": "chat",
    "custom/auto": "chat",
    "saas/claude": "chat",
    "saas/aws_bedrock": "chat",
}

# OpenAI's media kinds (broker.spec.openai_media_kind) as the gateway names them
_OPENAI_KIND: dict[str, Kind] = {
    "transcribe": "transcription",
    "speech": "speech",
    "image": "image",
}

_WHAT: dict[Kind, str] = {
    "chat": "chat (text) model",
    "speech": "text-to-speech model",
    "transcription": "speech-to-text model",
    "image": "image generation model",
    "rerank": "reranker",
}

_ENDPOINT: dict[Kind, str] = {
    "chat": "POST /v1/chat/completions (or /v1/embeddings for an embedding model)",
    "speech": "POST /v1/audio/speech",
    "transcription": "POST /v1/audio/transcriptions",
    "image": "POST /v1/images/generations",
    "rerank": "POST /v1/rerank",
}

_DEPLOY: dict[Kind, str] = {
    "speech": "saas/openai with saas.model=tts-1, saas/volcengine or saas/azure",
    "transcription": "saas/openai with saas.model=whisper-1, custom/whisper or custom/sensevoice",
    "image": "saas/openai with saas.model=dall-e-3",
    "rerank": "custom/bge_rerank",
    "chat": "a chat model",
}


def kind_of(spec: dict[str, str]) -> Kind | None:
    """The kind of the alias whose spec hash is ``spec``; None for a backend not known here."""
    backend = spec.get("pretrained_model_type", "")
    if backend in _BY_BACKEND:
        return _BY_BACKEND[backend]
    if backend.startswith("custom/auto"):
        return "chat"
    if not backend.startswith("saas/"):
        return None
    try:
        params = json.loads(spec.get("infer_params") or "{}")
    except ValueError:
        params = {}
    model = str(params.get("saas.model") or "").lower() if isinstance(params, dict) else ""
    media = openai_media_kind(model)
    return "chat" if media is None else _OPENAI_KIND[media]


class AliasKinds:
    """The kinds of the aliases, read from Redis and remembered for a few seconds."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self._known: dict[str, tuple[float, Kind | None]] = {}

    async def of(self, alias: str) -> Kind | None:
        """The alias' kind (None: not known here); ModelNotFoundError when nothing is
        deployed under it."""
        now = time.monotonic()
        known = self._known.get(alias)
        if known is not None and known[0] > now:
            return known[1]
        channel = self.gw.llm.channel
        await channel.start()
        with redis_errors(self.gw.settings):
            spec = await deployments.info(channel.redis, channel.keys, alias)
        if spec is None:
            raise ModelNotFoundError(alias)
        kind = kind_of(spec)
        self._known[alias] = (now + KIND_TTL, kind)
        return kind

    async def require(self, alias: str, wanted: Kind) -> None:
        """A 400 naming the right endpoint when ``alias`` is known to be of another kind."""
        kind = await self.of(alias)
        if kind is None or kind == wanted:
            return
        raise bad_request(
            f"{alias!r} is a {_WHAT[kind]}, not a {_WHAT[wanted]}: call it with "
            f"{_ENDPOINT[kind]}. {_ENDPOINT[wanted]} needs an alias deployed with "
            f"{_DEPLOY[wanted]} (GET /v1/models lists the aliases)",
            param="model",
        )

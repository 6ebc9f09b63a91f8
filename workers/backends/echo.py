"""``custom/echo``: a deterministic backend for tests, benchmarks and demos.

It answers like a model would, without one: by default it echoes the last
message; ``replies`` scripts the answers (cycled in order), ``reply`` fixes
one. ``script`` answers like a model by rules: a JSON list (or the path of a
JSON file holding one) of ``{"match": regex, "reply": text}``; the first rule
whose regex is found in the last user message answers (earlier user
messages are tried when none does, so a "continue" turn keeps the topic).
A scripted reply is one whole answer: assistant messages after the matched
user message (earlier rounds, or a ``gen.response_prefix`` prefix) count as
already said, and only the rest is sent. Unscripted, a ``gen.response_prefix``
prefix is continued from its length: the echo answer after that many
characters, whatever the prefix says. ``gen.stop`` cuts the answer before
the first stop string; ``max_length`` cuts it to that many characters.
``chunks`` splits the answer into that many stream deltas, ``delay``
sleeps between them and ``first_token_delay`` before the first, so tests can
hold a request in flight for as long as they need.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import re
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field, SecretStr, field_validator

from byzerllm.broker.errors import BackendError, BackendLoadError
from byzerllm.broker.messages import ChatPayload
from byzerllm.workers.backend import (
    Backend,
    BackendOptions,
    Chunk,
    content_text,
    last_user_text,
    wants_prefix,
)
from byzerllm.workers.llm_config import stop_list


class ScriptRule(BaseModel):
    match: str
    reply: str


class EchoOptions(BackendOptions):
    reply: str | None = None
    script: list[ScriptRule] | None = None
    replies: list[str] | None = None
    prefix: str = ""
    chunks: int = 0  # 0: one chunk per word
    delay: float = 0.0
    first_token_delay: float = 0.0
    fail_with: str | None = None
    fail_on_start: str | None = None
    start_delay: float = 0.0
    dim: int = 8
    # False: answers like a model that cannot continue a text (no prefix completion)
    continues: bool = True
    # never used: accepted so tests and demos can follow a secret through a
    # deployment (masked in Redis, sealed, never on a command line)
    api_key: SecretStr | None = Field(default=None, alias="saas.api_key")

    @field_validator("replies", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value

    @field_validator("script", mode="before")
    @classmethod
    def _script(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value if value.lstrip().startswith("[") else Path(value).read_text("utf-8")
            return json.loads(text)
        return value


class EchoBackend(Backend):
    Options = EchoOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "prefix", "embed"})

    options: EchoOptions

    @property
    def continues_answers(self) -> bool:
        return self.options.continues

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._script = itertools.cycle(self.options.replies) if self.options.replies else None
        self._rules = [(re.compile(r.match), r.reply) for r in self.options.script or []]

    async def start(self) -> None:
        if self.options.start_delay:
            await asyncio.sleep(self.options.start_delay)
        if self.options.fail_on_start:
            raise BackendLoadError(self.options.fail_on_start)

    def _scripted(self, conversations: list[dict[str, Any]]) -> str | None:
        users = [i for i, m in enumerate(conversations) if m.get("role") == "user"]
        for index in reversed(users):
            text = content_text(conversations[index].get("content", ""))
            for pattern, reply in self._rules:
                if pattern.search(text):
                    said = "".join(
                        content_text(m.get("content", ""))
                        for m in conversations[index + 1 :]
                        if m.get("role") == "assistant"
                    )
                    return reply[len(said) :] if said and reply.startswith(said) else reply
        return None

    def _answer(self, request: ChatPayload) -> str:
        conversations = request.conversations
        if self._rules:
            scripted = self._scripted(conversations)
            if scripted is not None:
                return scripted
        prefixing = self.options.continues and wants_prefix(request)
        if prefixing and self._script is None and self.options.reply is None:
            said = content_text(conversations[-1].get("content", ""))
            users = [m for m in conversations if m.get("role") == "user"]
            asked = content_text(users[-1].get("content", "")) if users else ""
            answer = self.options.prefix + asked
            # continued from the prefix' length, as a model goes on from any text
            return answer[len(said) :]
        if self._script is not None:
            return next(self._script)
        if self.options.reply is not None:
            return self.options.reply
        return self.options.prefix + last_user_text(request)

    @staticmethod
    def _split(text: str, chunks: int) -> list[str]:
        if chunks <= 0:
            parts = text.split(" ")
            return [p + " " for p in parts[:-1]] + [parts[-1]] if text else []
        size = max(1, math.ceil(len(text) / chunks))
        return [text[i : i + size] for i in range(0, len(text), size)]

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        opts = self.options
        if opts.fail_with:
            raise BackendError(opts.fail_with)
        answer = self._answer(request)
        for stop in stop_list(request.llm_config.get("gen.stop")):
            if stop in answer:
                answer = answer[: answer.index(stop)]
        max_length = request.llm_config.get("max_length")
        if isinstance(max_length, int) and max_length > 0:
            answer = answer[:max_length]
        pieces = self._split(answer, opts.chunks)
        if opts.first_token_delay:
            await asyncio.sleep(opts.first_token_delay)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in request.conversations)
        for i, piece in enumerate(pieces):
            if i and opts.delay:
                await asyncio.sleep(opts.delay)
            yield Chunk(text=piece)
        yield Chunk(
            input_tokens=prompt_tokens,
            output_tokens=len(pieces),
            finish_reason="stop",
        )

    async def embed(self, texts: list[str], llm_config: dict[str, Any]) -> list[list[float]]:
        """A unit vector per text, derived from its hash: same text, same vector."""
        vectors = []
        for text in texts:
            digest = hashlib.sha256(text.encode()).digest() * (1 + self.options.dim * 4 // 32)
            raw = struct.unpack(f"<{self.options.dim}i", digest[: self.options.dim * 4])
            norm = math.sqrt(sum(x * x for x in raw)) or 1.0
            vectors.append([x / norm for x in raw])
        return vectors

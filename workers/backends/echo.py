"""``custom/echo``: a deterministic backend for tests, benchmarks and demos.

It answers like a model would, without one: by default it echoes the last
message; ``replies`` scripts the answers (cycled in order), ``reply`` fixes
one. ``chunks`` splits the answer into that many stream deltas, ``delay``
sleeps between them and ``first_token_delay`` before the first, so tests can
hold a request in flight for as long as they need.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any, ClassVar

from pydantic import field_validator

from byzerllm.broker.errors import BackendError, BackendLoadError
from byzerllm.broker.messages import ChatPayload
from byzerllm.workers.backend import Backend, BackendOptions, Chunk, last_user_text


class EchoOptions(BackendOptions):
    reply: str | None = None
    replies: list[str] | None = None
    prefix: str = ""
    chunks: int = 0  # 0: one chunk per word
    delay: float = 0.0
    first_token_delay: float = 0.0
    fail_with: str | None = None
    fail_on_start: str | None = None
    start_delay: float = 0.0
    dim: int = 8

    @field_validator("replies", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value)
        return value


class EchoBackend(Backend):
    Options = EchoOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "embed"})
    options: EchoOptions

    def __init__(self, spec: Any) -> None:
        super().__init__(spec)
        self._script = itertools.cycle(self.options.replies) if self.options.replies else None

    async def start(self) -> None:
        if self.options.start_delay:
            await asyncio.sleep(self.options.start_delay)
        if self.options.fail_on_start:
            raise BackendLoadError(self.options.fail_on_start)

    def _answer(self, request: ChatPayload) -> str:
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

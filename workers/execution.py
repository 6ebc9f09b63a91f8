"""Running one request on a backend: what a worker and ``SimpleByzerLLM`` share.

Given a request, :class:`Execution` runs it by kind (chat, embeddings, rerank, meta)
within its deadline, passes streamed text to a callback as it comes, and
returns the final reply: ``END`` with the answer and its metadata, or
``ERROR`` with the error as wire data. Where the final reply goes (a Redis
reply stream, or a queue in the calling process) is the caller's business;
cancellation propagates to the caller untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from byzerllm.broker.errors import BackendError, ByzerLLMError, RequestTimeoutError
from byzerllm.broker.messages import (
    ChatPayload,
    EmbedPayload,
    ReplyType,
    Request,
    RequestKind,
    RerankPayload,
)
from byzerllm.workers.backend import Backend, ChatTally, content_text, wants_prefix

log = logging.getLogger(__name__)

# (text, reasoning, audio, tool-call fragments or None) of a streamed piece; a receiver
# that needs the generation to pause until the piece has left (the reply writer, for a
# request's first piece) returns an awaitable, else None
OnDelta = Callable[[str, str, bytes, list[dict[str, Any]] | None], Awaitable[None] | None]
Final = tuple[ReplyType, dict[str, Any]]


class Execution:
    def __init__(self, backend: Backend, worker_id: str | None = None) -> None:
        self.backend = backend
        self._extra: dict[str, Any] = {"worker_id": worker_id} if worker_id else {}

    async def run(self, request: Request, on_delta: OnDelta | None = None) -> Final:
        """The request's final reply; a request past its deadline is not run."""
        if request.deadline is not None and time.time() >= request.deadline:
            err = RequestTimeoutError(
                f"request {request.id} for {request.alias!r} passed its deadline before it ran"
            )
            return ReplyType.ERROR, err.to_wire()
        remaining = None if request.deadline is None else request.deadline - time.time()
        try:
            async with asyncio.timeout(remaining) as deadline:
                data = await self._run_kind(request, on_delta)
        except ByzerLLMError as exc:
            return ReplyType.ERROR, exc.to_wire()
        except TimeoutError as exc:
            if not deadline.expired():  # the backend's own timeout, not ours
                return ReplyType.ERROR, self._backend_failure(request, exc)
            err = RequestTimeoutError(
                f"request {request.id} for {request.alias!r} passed its deadline"
            )
            return ReplyType.ERROR, err.to_wire()
        except Exception as exc:
            return ReplyType.ERROR, self._backend_failure(request, exc)
        return ReplyType.END, data

    def _backend_failure(self, request: Request, exc: BaseException) -> dict[str, Any]:
        log.error("backend %s failed on request %s", self.backend.name, request.id, exc_info=exc)
        return BackendError(f"{type(exc).__name__}: {exc}").to_wire()

    async def _run_kind(self, request: Request, on_delta: OnDelta | None) -> dict[str, Any]:
        if request.kind is RequestKind.CHAT:
            return await self._chat(request, on_delta)
        if request.kind is RequestKind.EMBED:
            return await self._embed(request)
        if request.kind is RequestKind.RERANK:
            return await self._rerank(request)
        return {"output": self.backend.meta()}

    async def _chat(self, request: Request, on_delta: OnDelta | None) -> dict[str, Any]:
        payload = ChatPayload.model_validate(request.payload)
        tally = ChatTally()
        notes: dict[str, Any] = {}
        if payload.continue_from:
            if self.backend.continues_answers:
                # the text the caller holds comes first, so its stream reads on from it
                payload = continuing(payload)
                notes["continued_from"] = len(payload.continue_from)
                if payload.stream and on_delta is not None:
                    sent = on_delta(payload.continue_from, "", b"", None)
                    if sent is not None:
                        await sent
            else:
                notes["restarted"] = True
        async for chunk in self.backend.run_chat(payload):
            if tally.add(chunk) and payload.stream and on_delta is not None:
                sent = on_delta(chunk.text, chunk.reasoning, chunk.audio, chunk.tool_call_fragments)
                if sent is not None:
                    await sent
        return tally.end_data(request.id, payload.stream, **self._extra, **notes)

    async def _embed(self, request: Request) -> dict[str, Any]:
        payload = EmbedPayload.model_validate(request.payload)
        start = time.perf_counter()
        vectors = await self.backend.embed(payload.texts, payload.llm_config)
        return {
            "output": vectors,
            "meta": {
                "request_id": request.id,
                "time_cost": time.perf_counter() - start,
                "input_tokens_count": sum(len(t.split()) for t in payload.texts),
                "generated_tokens_count": 0,
                **self._extra,
            },
        }

    async def _rerank(self, request: Request) -> dict[str, Any]:
        payload = RerankPayload.model_validate(request.payload)
        start = time.perf_counter()
        scores = await self.backend.rerank(payload.query, payload.documents, payload.llm_config)
        if len(scores) != len(payload.documents):  # the client pairs scores with documents
            raise BackendError(
                f"{self.backend.name} returned {len(scores)} scores for "
                f"{len(payload.documents)} documents"
            )
        words = len(payload.query.split())
        return {
            "output": [float(score) for score in scores],
            "meta": {
                "request_id": request.id,
                "time_cost": time.perf_counter() - start,
                "input_tokens_count": sum(words + len(d.split()) for d in payload.documents),
                "generated_tokens_count": 0,
                **self._extra,
            },
        }


def continuing(payload: ChatPayload) -> ChatPayload:
    """The request that continues ``payload.continue_from`` by prefix completion:
    the text becomes (or extends) the last assistant message, and
    ``gen.response_prefix`` asks the backend to go on from it."""
    conversations = list(payload.conversations)
    said = payload.continue_from
    if wants_prefix(payload):
        last = conversations[-1]
        conversations[-1] = {**last, "content": content_text(last.get("content")) + said}
    else:
        conversations.append({"role": "assistant", "content": said})
    llm_config = {**payload.llm_config, "gen.response_prefix": True}
    return payload.model_copy(update={"conversations": conversations, "llm_config": llm_config})

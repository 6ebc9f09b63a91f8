"""The one interface every model backend implements.

A backend owns one loaded model (or one SaaS client) inside one worker
process. The worker runtime handles everything else: Redis, slots,
deadlines, cancellation, retries. A backend author writes ``chat`` (an async
generator of :class:`Chunk`) and, where the model can, ``embed``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from byzerllm.broker.errors import BackendError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec


@dataclass(slots=True)
class Chunk:
    """A piece of generated output; usage fields are set when the backend knows them."""

    text: str = ""
    reasoning: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    finish_reason: str | None = None
    # a native tool choice: [{"id", "name", "arguments"}], arguments parsed where they are JSON
    tool_calls: list[dict[str, Any]] | None = None


class BackendOptions(BaseModel):
    """Base for a backend's typed options, parsed from the spec's infer_params."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)


class Backend:
    """Base class of backends; subclasses set ``Options`` and override what they support."""

    Options: ClassVar[type[BackendOptions]] = BackendOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})
    # worker_concurrency when the deploy does not say: 1 suits a model that
    # generates one answer at a time; an engine that batches wants more.
    default_concurrency: ClassVar[int] = 1

    def __init__(self, spec: DeploySpec) -> None:
        self.spec = spec
        self.options = self.parse_options(spec)

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> Any:
        try:
            return cls.Options.model_validate(spec.infer_params)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigurationError(
                f"bad infer_params for {spec.pretrained_model_type} ({spec.alias}): {problems}"
            ) from None

    @property
    def name(self) -> str:
        return self.spec.pretrained_model_type

    async def start(self) -> None:
        """Load the model or open the client; errors become BackendLoadError."""

    async def aclose(self) -> None:
        """Release what start() acquired."""

    @property
    def native_tools(self) -> bool:
        """Whether ``chat`` passes ``request.tools`` to the model itself."""
        return "tools" in self.capabilities

    def run_chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        """``chat``, with tools described in the prompt when the model has no
        tool calling of its own; what the worker and the in-process client call."""
        if request.tools and not self.native_tools:
            request = request.with_tools_in_prompt()
        return self.chat(request)

    def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        raise BackendError(f"{self.name} does not support chat")

    async def embed(self, texts: list[str], llm_config: dict[str, Any]) -> list[list[float]]:
        raise BackendError(f"{self.name} does not support embeddings")

    def meta(self) -> dict[str, Any]:
        return {
            "model_deploy_type": "saas" if self.name.startswith("saas/") else "proprietary",
            "backend": self.name,
            "support_stream": "chat" in self.capabilities,
            "support_chat_template": True,
            "message_format": True,
            "embedding_mode": "embed" in self.capabilities,
            "model_name": self.spec.alias,
        }


def content_text(content: Any) -> str:
    """Message content as text: the text of OpenAI-style parts, other media dropped."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def last_user_text(request: ChatPayload) -> str:
    """The text of the last message, whatever its content shape."""
    if not request.conversations:
        return ""
    return content_text(request.conversations[-1].get("content", ""))


@dataclass(slots=True)
class ChatTally:
    """What a chat has produced so far, and the end-of-answer metadata the client
    reads (the original's keys); shared by workers and the in-process client."""

    start: float = field(default_factory=time.perf_counter)
    first_token: float = 0.0
    texts: list[str] = field(default_factory=list)
    reasonings: list[str] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    finish_reason: str = "stop"
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def add(self, chunk: Chunk) -> bool:
        """Count the chunk; True when it carries text to pass on."""
        if chunk.tool_calls:
            self.tool_calls.extend(chunk.tool_calls)
        if chunk.input_tokens is not None:
            self.input_tokens = chunk.input_tokens
        if chunk.output_tokens is not None:
            self.output_tokens = chunk.output_tokens
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if not (chunk.text or chunk.reasoning):
            return False
        self.first_token = self.first_token or time.perf_counter() - self.start
        self.texts.append(chunk.text)
        self.reasonings.append(chunk.reasoning)
        return True

    def end_data(self, request_id: str, stream: bool, **extra: Any) -> dict[str, Any]:
        """The END reply's data: metadata, plus the whole text unless it was streamed."""
        elapsed = time.perf_counter() - self.start
        meta = {
            "request_id": request_id,
            "input_tokens_count": self.input_tokens,
            "generated_tokens_count": self.output_tokens,
            "time_cost": elapsed,
            "first_token_time": self.first_token,
            "speed": self.output_tokens / elapsed if elapsed > 0 else 0.0,
            "finish_reason": self.finish_reason,
            "reasoning_content": "".join(self.reasonings),
            **extra,
        }
        data: dict[str, Any] = {"meta": meta}
        if not stream:
            data["output"] = "".join(self.texts)
        if self.tool_calls:  # structured, beside the text: the client reads them as they are
            data["tool_calls"] = [
                {
                    "id": call.get("id") or f"call_{i}",
                    "name": str(call.get("name", "")),
                    "arguments": call.get("arguments") or {},
                }
                for i, call in enumerate(self.tool_calls, 1)
            ]
        return data

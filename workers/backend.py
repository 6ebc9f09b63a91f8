"""The one interface every model backend implements.

A backend owns one loaded model (or one SaaS client) inside one worker
process. The worker runtime handles everything else: Redis, slots,
deadlines, cancellation, retries. A backend author writes ``chat`` (an async
generator of :class:`Chunk`) and, where the model can, ``embed`` or ``rerank``.
"""

from __future__ import annotations

import base64
import difflib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import AliasChoices, AliasPath, BaseModel, ConfigDict, ValidationError

from byzerllm.broker.errors import BackendError, ConfigurationError, InvalidInferParamsError
from byzerllm.broker.messages import ChatPayload, fold_tool_call_fragments
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
    # a native tool choice as it streams: fragments {"index", "id"?, "name"?, "arguments"?}
    # (arguments: a piece of the JSON text), passed on as they come and joined at the end
    tool_call_fragments: list[dict[str, Any]] | None = None
    # speech (text-to-speech) as the vendor sends it: streamed as audio deltas, or,
    # unstreamed, the whole audio as base64 text (what the guide decodes)
    audio: bytes = b""


class BackendOptions(BaseModel):
    """Base for a backend's typed options, parsed from the spec's infer_params.

    Every infer_params key must be one a field reads (its alias, an alias
    choice, or its name where the model populates by name): a typo that was
    silently dropped deployed a model with a default the user never chose.
    A backend that hands a family of keys on to its library unread (vLLM's
    ``backend.*``) lets them through in :meth:`passes_through` and checks them
    against that library itself.
    """

    # unknown keys are refused by Backend.parse_options, with suggestions,
    # before pydantic sees them; what passes_through lets by is then ignored here
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    @classmethod
    def documented_keys(cls) -> list[str]:
        """The keys the fields read as documented: aliases (``saas.model``), else names."""
        keys: list[str] = []
        for name, info in cls.model_fields.items():
            spellings = _alias_spellings(info.validation_alias) or (
                [info.alias] if info.alias else [name]
            )
            keys.extend(k for k in spellings if k not in keys)
        return keys

    @classmethod
    def known_keys(cls) -> list[str]:
        """Every key a field reads: the documented ones, plus the field names
        where the model populates by name (``model`` for ``saas.model``)."""
        keys = cls.documented_keys()
        if cls.model_config.get("populate_by_name"):
            keys.extend(name for name in cls.model_fields if name not in keys)
        return keys

    @classmethod
    def passes_through(cls, key: str) -> bool:
        """Whether ``key`` goes to the backend's library unread (checked there)."""
        return False

    @classmethod
    def suggestions(cls, key: str) -> list[str]:
        """Known keys close to an unknown ``key``, best first; documented spellings win."""
        return _close(key, cls.documented_keys()) or _close(key, cls.known_keys())

    @classmethod
    def known_keys_text(cls) -> str:
        """The known keys as an error message lists them."""
        return ", ".join(cls.documented_keys()) or "none"

    @classmethod
    def unknown_keys(cls, params: dict[str, Any]) -> list[str]:
        known = set(cls.known_keys())
        return [k for k in params if k not in known and not cls.passes_through(k)]


def _close(key: str, keys: list[str]) -> list[str]:
    """difflib's close matches, but only those nearly as close as the best: keys
    sharing a ``saas.`` prefix all look alike to difflib, and one good guess
    reads better than three."""
    scored = sorted(
        ((difflib.SequenceMatcher(None, key, k).ratio(), k) for k in keys), reverse=True
    )
    if not scored:
        return []
    best = scored[0][0]
    return [k for ratio, k in scored[:3] if ratio >= 0.6 and ratio >= best - 0.1]


def _alias_spellings(alias: Any) -> list[str]:
    """The top-level keys a pydantic validation alias accepts."""
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasPath):
        return [str(alias.path[0])]
    if isinstance(alias, AliasChoices):
        return [k for choice in alias.choices for k in _alias_spellings(choice)]
    return []


def _unknown_keys_message(
    options: type[BackendOptions], spec: DeploySpec, unknown: list[str]
) -> str:
    backend = spec.pretrained_model_type + (
        f" ({spec.infer_backend})" if spec.infer_backend else ""
    )
    problems = []
    for key in unknown:
        close = options.suggestions(key)
        problems.append(f"{key!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    return (
        f"{spec.alias}: unknown infer_params key{'s' if len(unknown) > 1 else ''} for {backend}: "
        f"{', '.join(problems)}; known keys: {options.known_keys_text()}. Fix the key or drop it "
        "(--infer_params key=value)"
    )


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
        """The spec's infer_params as ``Options``; a key no option reads is refused
        (:class:`InvalidInferParamsError`, with the close names), so a typo stops
        the worker, and with it ``deploy``, instead of being ignored."""
        unknown = cls.Options.unknown_keys(spec.infer_params)
        if unknown:
            raise InvalidInferParamsError(_unknown_keys_message(cls.Options, spec, unknown))
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
    def continues_answers(self) -> bool:
        """Whether ``chat`` continues a last assistant message under
        ``gen.response_prefix`` (prefix completion) rather than answering anew:
        what lets a retry after a worker failure go on from the text the
        caller already has, instead of starting over."""
        return "prefix" in self.capabilities

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

    async def rerank(
        self, query: str, documents: list[str], llm_config: dict[str, Any]
    ) -> list[float]:
        """How relevant each document is to ``query``: one score per document, in
        their order, higher is more relevant (a cross-encoder's logit, or its
        sigmoid where the deployment normalises)."""
        raise BackendError(
            f"{self.name} ({self.spec.alias}) does not support rerank; deploy a cross-encoder "
            "such as bge-reranker with --pretrained_model_type custom/bge_rerank"
        )

    def meta(self) -> dict[str, Any]:
        return {
            "model_deploy_type": "saas" if self.name.startswith("saas/") else "proprietary",
            "backend": self.name,
            "support_stream": "chat" in self.capabilities,
            "support_chat_template": True,
            "message_format": True,
            "embedding_mode": "embed" in self.capabilities,
            "rerank_mode": "rerank" in self.capabilities,
            "support_assistant_prefix": self.continues_answers,
            "model_name": self.spec.alias,
        }


def content_text(content: Any) -> str:
    """Message content as text: the text of OpenAI-style parts, other media dropped."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def wants_prefix(request: ChatPayload) -> bool:
    """``gen.response_prefix`` asked for, and the conversation ends with the assistant."""
    flag = request.llm_config.get("gen.response_prefix")
    if isinstance(flag, str):
        flag = flag.strip().lower() in ("true", "1", "yes")
    conversations = request.conversations
    return bool(flag and conversations and conversations[-1].get("role") == "assistant")


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
    streamed_calls: list[dict[str, Any]] = field(default_factory=list)
    audio: list[bytes] = field(default_factory=list)

    def add(self, chunk: Chunk) -> bool:
        """Count the chunk; True when it carries text (audio, tool-call fragments) to pass on."""
        if chunk.tool_calls:
            self.tool_calls.extend(chunk.tool_calls)
        if chunk.tool_call_fragments:
            fold_tool_call_fragments(self.streamed_calls, chunk.tool_call_fragments)
            self.first_token = self.first_token or time.perf_counter() - self.start
        if chunk.input_tokens is not None:
            self.input_tokens = chunk.input_tokens
        if chunk.output_tokens is not None:
            self.output_tokens = chunk.output_tokens
        if chunk.finish_reason:
            self.finish_reason = chunk.finish_reason
        if not (chunk.text or chunk.reasoning or chunk.audio):
            return bool(chunk.tool_call_fragments)
        self.first_token = self.first_token or time.perf_counter() - self.start
        self.texts.append(chunk.text)
        self.reasonings.append(chunk.reasoning)
        if chunk.audio:
            self.audio.append(chunk.audio)
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
            if self.audio:  # a chat answer is text: the speech as base64, as the original
                data["output"] += base64.b64encode(b"".join(self.audio)).decode("ascii")
        calls = self.tool_calls + [_joined_call(call) for call in self.streamed_calls]
        if calls:  # structured, beside the text: the client reads them as they are
            data["tool_calls"] = [
                {
                    "id": call.get("id") or f"call_{i}",
                    "name": str(call.get("name", "")),
                    "arguments": call.get("arguments") or {},
                }
                for i, call in enumerate(calls, 1)
            ]
        return data


def _joined_call(call: dict[str, Any]) -> dict[str, Any]:
    """A streamed call, its fragments joined: arguments parsed where they are JSON
    (else kept as text, which the client reports with the text)."""
    arguments: Any = call["arguments"] or "{}"
    try:
        arguments = json.loads(arguments)
    except ValueError:
        pass
    return {"id": call["id"], "name": call["name"], "arguments": arguments}

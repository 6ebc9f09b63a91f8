"""Result types with the shapes the guide's code reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict


@dataclass
class LLMResponse:
    """One answer: ``output`` is text (or vectors for embeddings).

    A dataclass, as in the original: its README turns answers into dicts with
    ``dataclasses.asdict(response)``."""

    output: Any
    input: Any = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SingleOutputMeta:
    """Per-chunk metadata yielded by ``stream_chat_oai`` next to the text."""

    input_tokens_count: int = 0
    generated_tokens_count: int = 0
    reasoning_content: str = ""
    finish_reason: str | None = None
    first_token_time: float = 0.0
    extra_info: dict[str, Any] = field(default_factory=dict)
    # A native tool choice as it streams (stream_chat_oai with tools): in delta
    # mode the fragments this item adds, {"index", "id"?, "name"?, "arguments"?}
    # with arguments a piece of JSON text; otherwise the calls so far,
    # {"index", "id", "name", "arguments"}.
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


META_KEYS = (
    "request_id",
    "input_tokens_count",
    "generated_tokens_count",
    "time_cost",
    "first_token_time",
    "speed",
    "finish_reason",
    "reasoning_content",
)


class LLMFunctionCallResponse(BaseModel):
    """A chat_oai answer with tools executed: ``values`` holds each called tool's result."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    response: LLMResponse
    values: list[Any] = []
    metadata: dict[str, Any] = {}


class LLMClassResponse(BaseModel):
    """A chat_oai answer read as a pydantic object; ``value`` is None when it did not parse."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    response: LLMResponse
    value: Any = None
    metadata: dict[str, Any] = {}


# Small wrappers for prompt functions whose answer is one value, e.g.
# ``f.with_return_type(Bool).run(...)`` reading ``{"value": true}``.


class Bool(BaseModel):
    value: bool


class Int(BaseModel):
    value: int


class Float(BaseModel):
    value: float


class Str(BaseModel):
    value: str


class ListStr(BaseModel):
    value: list[str]


class ListInt(BaseModel):
    value: list[int]


# -- request-side types of the original's ``byzerllm.utils.client`` ---------------------


@dataclass(slots=True)
class LLMRequest:
    """One request item as the original built it; ``ByzerLLM.emb`` accepts one.

    Only ``instruction`` is read here (the texts to embed); the sampling fields
    travel in ``llm_config`` in this implementation and are kept for code that
    builds the object.
    """

    instruction: str | list[str]
    embedding: bool = False
    max_length: int = 4096
    top_p: float = 0.95
    temperature: float = 0.1


class Role:
    """Message roles as string constants."""

    User = "user"
    Assistant = "assistant"
    System = "system"


class InferBackend:
    """Values of ``--infer_backend`` (``deploy(..., infer_backend=...)``).

    The original named vLLM ``"ray/vllm"``; here the backend is ``"vllm"``,
    the name the guide's deploy lines use. DeepSpeed has no backend here.
    """

    Transformers = "transformers"
    VLLM = "vllm"
    LLAMA_CPP = "llama_cpp"

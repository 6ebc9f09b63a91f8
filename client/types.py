"""Result types with the shapes the guide's code reads."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict


class LLMResponse(BaseModel):
    """One answer: ``output`` is text (or vectors for embeddings)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    output: Any
    input: Any = ""
    metadata: dict[str, Any] = {}


@dataclass(slots=True)
class SingleOutputMeta:
    """Per-chunk metadata yielded by ``stream_chat_oai`` next to the text."""

    input_tokens_count: int = 0
    generated_tokens_count: int = 0
    reasoning_content: str = ""
    finish_reason: str | None = None
    first_token_time: float = 0.0
    extra_info: dict[str, Any] = field(default_factory=dict)


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

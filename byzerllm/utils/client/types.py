"""``byzerllm.utils.client.types``: the original's import path for the client's types."""

from byzerllm.client.templates import Template, Templates
from byzerllm.client.types import (
    InferBackend,
    LLMClassResponse,
    LLMFunctionCallResponse,
    LLMRequest,
    LLMResponse,
    Role,
    SingleOutputMeta,
)

__all__ = [
    "InferBackend",
    "LLMClassResponse",
    "LLMFunctionCallResponse",
    "LLMRequest",
    "LLMResponse",
    "Role",
    "SingleOutputMeta",
    "Template",
    "Templates",
]

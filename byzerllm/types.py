"""``byzerllm.types``: the original's import path for result and argument types."""

from byzerllm.client.multimodal import AudioPath, ImagePath
from byzerllm.client.types import (
    Bool,
    Float,
    Int,
    ListInt,
    ListStr,
    LLMClassResponse,
    LLMFunctionCallResponse,
    LLMResponse,
    SingleOutputMeta,
    Str,
)

__all__ = [
    "AudioPath",
    "Bool",
    "Float",
    "ImagePath",
    "Int",
    "LLMClassResponse",
    "LLMFunctionCallResponse",
    "LLMResponse",
    "ListInt",
    "ListStr",
    "SingleOutputMeta",
    "Str",
]

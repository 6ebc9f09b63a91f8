"""``byzerllm.utils.client``: the original README's main import path.

``from byzerllm.utils.client import ByzerLLM, SimpleByzerLLM, LLMRequest,
LLMResponse, Templates, InferBackend`` works as it did. SimpleByzerLLM is
imported only when asked for: it pulls in the worker side.
"""

from byzerllm.client.sync import ByzerLLM
from byzerllm.utils.client.types import (
    InferBackend,
    LLMClassResponse,
    LLMFunctionCallResponse,
    LLMRequest,
    LLMResponse,
    Role,
    SingleOutputMeta,
    Template,
    Templates,
)


def __getattr__(name: str) -> object:
    if name == "SimpleByzerLLM":
        from byzerllm.simple import SimpleByzerLLM

        return SimpleByzerLLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ByzerLLM",
    "InferBackend",
    "LLMClassResponse",
    "LLMFunctionCallResponse",
    "LLMRequest",
    "LLMResponse",
    "Role",
    "SimpleByzerLLM",
    "SingleOutputMeta",
    "Template",
    "Templates",
]

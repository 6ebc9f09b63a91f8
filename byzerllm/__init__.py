"""byzerllm: deploy LLMs under an alias and program against them, on Redis Streams."""

from byzerllm.broker.errors import (
    BackendError,
    BrokerUnavailableError,
    ByzerLLMError,
    ConfigurationError,
    ModelNotFoundError,
    NoLiveWorkerError,
    OverloadedError,
    RequestCancelledError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from byzerllm.client import AsyncByzerLLM, ByzerLLM, LLMResponse, SingleOutputMeta
from byzerllm.client.impl import ImplError
from byzerllm.client.multimodal import Image
from byzerllm.client.prompt import MetaHolder, PromptFunction, prompt
from byzerllm.client.prompt_template import PromptDefinitionError, PromptTemplateError
from byzerllm.client.structured import StructuredOutputError

__version__ = "0.2.0"


def __getattr__(name: str) -> object:
    # SimpleByzerLLM pulls in the worker side; import it only when asked for.
    if name == "SimpleByzerLLM":
        from byzerllm.simple import SimpleByzerLLM

        return SimpleByzerLLM
    raise AttributeError(f"module 'byzerllm' has no attribute {name!r}")


__all__ = [
    "AsyncByzerLLM",
    "BackendError",
    "BrokerUnavailableError",
    "ByzerLLM",
    "ByzerLLMError",
    "ConfigurationError",
    "Image",
    "ImplError",
    "LLMResponse",
    "MetaHolder",
    "ModelNotFoundError",
    "NoLiveWorkerError",
    "OverloadedError",
    "PromptDefinitionError",
    "PromptFunction",
    "PromptTemplateError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "SimpleByzerLLM",
    "SingleOutputMeta",
    "StructuredOutputError",
    "__version__",
    "prompt",
]

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

__version__ = "0.2.0"

__all__ = [
    "AsyncByzerLLM",
    "BackendError",
    "BrokerUnavailableError",
    "ByzerLLM",
    "ByzerLLMError",
    "ConfigurationError",
    "LLMResponse",
    "ModelNotFoundError",
    "NoLiveWorkerError",
    "OverloadedError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "SingleOutputMeta",
    "__version__",
]

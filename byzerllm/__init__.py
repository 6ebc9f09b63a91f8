"""byzerllm: deploy LLMs under an alias and program against them, on Redis Streams."""

from byzerllm.broker.errors import (
    AlreadyDeployedError,
    BackendError,
    BackendLoadError,
    BackendNotFoundError,
    BrokerUnavailableError,
    ByzerLLMError,
    ConfigurationError,
    DeployError,
    EngineArgsError,
    ImplError,
    InvalidInferParamsError,
    ModelNotFoundError,
    NodeAgentError,
    NoLiveWorkerError,
    OverloadedError,
    PromptDefinitionError,
    PromptTemplateError,
    ProtocolError,
    RequestCancelledError,
    RequestTimeoutError,
    RequestTooLargeError,
    StructuredOutputError,
)
from byzerllm.client import AsyncByzerLLM, ByzerLLM, LLMResponse, SingleOutputMeta
from byzerllm.client.cluster import connect_cluster
from byzerllm.client.multimodal import Image
from byzerllm.client.prompt import MetaHolder, PromptFunction, prompt
from byzerllm.utils.llms import get_llm_names, get_single_llm

__version__ = "0.2.0"


def __getattr__(name: str) -> object:
    # SimpleByzerLLM pulls in the worker side; import it only when asked for.
    if name == "SimpleByzerLLM":
        from byzerllm.simple import SimpleByzerLLM

        return SimpleByzerLLM
    raise AttributeError(f"module 'byzerllm' has no attribute {name!r}")


__all__ = [
    "AlreadyDeployedError",
    "AsyncByzerLLM",
    "BackendError",
    "BackendLoadError",
    "BackendNotFoundError",
    "BrokerUnavailableError",
    "ByzerLLM",
    "ByzerLLMError",
    "ConfigurationError",
    "DeployError",
    "EngineArgsError",
    "Image",
    "ImplError",
    "InvalidInferParamsError",
    "LLMResponse",
    "MetaHolder",
    "ModelNotFoundError",
    "NoLiveWorkerError",
    "NodeAgentError",
    "OverloadedError",
    "PromptDefinitionError",
    "PromptFunction",
    "PromptTemplateError",
    "ProtocolError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "SimpleByzerLLM",
    "SingleOutputMeta",
    "StructuredOutputError",
    "__version__",
    "connect_cluster",
    "get_llm_names",
    "get_single_llm",
    "prompt",
]

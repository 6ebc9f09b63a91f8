"""The broker: Redis key schema, message types, codec, settings and state.

It imports neither the client nor the workers; both build on it.
"""

from byzerllm.broker.errors import (
    BackendError,
    BackendLoadError,
    BackendNotFoundError,
    BrokerUnavailableError,
    ByzerLLMError,
    ConfigurationError,
    InvalidInferParamsError,
    ModelNotFoundError,
    NoLiveWorkerError,
    OverloadedError,
    ProtocolError,
    RequestCancelledError,
    RequestTimeoutError,
    RequestTooLargeError,
)
from byzerllm.broker.keys import GROUP, AliasKeys, Keys
from byzerllm.broker.settings import DEFAULT_REDIS_URL, BrokerSettings, mask_url

__all__ = [
    "DEFAULT_REDIS_URL",
    "GROUP",
    "AliasKeys",
    "BackendError",
    "BackendLoadError",
    "BackendNotFoundError",
    "BrokerSettings",
    "BrokerUnavailableError",
    "ByzerLLMError",
    "ConfigurationError",
    "InvalidInferParamsError",
    "Keys",
    "ModelNotFoundError",
    "NoLiveWorkerError",
    "OverloadedError",
    "ProtocolError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "mask_url",
]

"""The one exception hierarchy of byzerllm.

Users catch :class:`ByzerLLMError` (or one of its branches); nothing from
redis-py, msgpack or a vendor SDK leaks through the public API::

    ByzerLLMError
    ├── ConfigurationError            bad input from the user: URL, params, spec
    │   ├── InvalidInferParamsError
    │   ├── AlreadyDeployedError      deploy without --force over a live deployment
    │   ├── PromptTemplateError       a prompt function's template is invalid
    │   └── PromptDefinitionError     a prompt function itself is unusable
    ├── BrokerUnavailableError        Redis refused, timed out, or rejected AUTH
    ├── ProtocolError                 a malformed message on a stream
    ├── ModelNotFoundError            no deployment under that alias
    ├── NoLiveWorkerError             the alias exists, but no worker heartbeats
    ├── OverloadedError               too many requests waiting for the alias
    ├── RequestTooLargeError          request above the configured byte limit
    ├── RequestTimeoutError           the deadline passed (also a TimeoutError)
    ├── RequestCancelledError         the request was cancelled
    ├── DeployError                   a deployment did not come up; says why
    │   └── NodeAgentError            a node agent could not start a worker
    ├── StructuredOutputError         an answer is not the requested type
    ├── ImplError                     code a model wrote for llm.impl() is unusable
    └── BackendError                  the model backend failed; vendor message kept
        ├── BackendNotFoundError      no backend for a pretrained_model_type
        └── BackendLoadError          the backend could not start
            └── EngineArgsError       (also a ConfigurationError) bad backend.* param

Errors cross the wire as data (type name, message, retryable), never as
pickles; :func:`error_from_wire` rebuilds the matching class on the client.
"""

from __future__ import annotations

from typing import Any


class ByzerLLMError(Exception):
    """Root of every error byzerllm raises on purpose."""

    retryable: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "message": str(self), "retryable": self.retryable}


class ConfigurationError(ByzerLLMError, ValueError):
    """A setting, URL or parameter given by the user is not usable."""


class InvalidInferParamsError(ConfigurationError):
    """An ``--infer_params`` token or value could not be understood."""


class BrokerUnavailableError(ByzerLLMError, ConnectionError):
    """Redis could not be reached or refused us."""


class ProtocolError(ByzerLLMError):
    """A stream entry that is not a valid byzerllm message."""


class ModelNotFoundError(ByzerLLMError, LookupError):
    """No deployment exists under the alias."""

    def __init__(self, alias: str, message: str | None = None) -> None:
        self.alias = alias
        super().__init__(
            message
            or f"no model is deployed under the alias {alias!r}; deploy it first "
            f"(byzerllm deploy ... --model {alias}) or check the name with `byzerllm stat`"
        )


class NoLiveWorkerError(ByzerLLMError):
    """The alias is known but no worker for it is alive."""

    retryable = True

    def __init__(self, alias: str, state: str = "", last_error: str = "") -> None:
        self.alias = alias
        self.state = state
        self.last_error = last_error
        why = f" (the deployment is {state}" if state and state != "ready" else ""
        if why and last_error:
            why += f"; last error: {last_error[-1000:]}"
        why += ")" if why else ""
        super().__init__(
            f"no live worker serves the alias {alias!r}{why}: start one "
            f"(byzerllm worker --model {alias} ...) or see `byzerllm stat --model {alias}`"
        )


class OverloadedError(ByzerLLMError):
    """More requests wait for the alias than its limit allows."""

    retryable = True


class RequestTooLargeError(ByzerLLMError, ValueError):
    """The encoded request is larger than the configured limit."""


class RequestTimeoutError(ByzerLLMError, TimeoutError):
    """The request's deadline passed before its answer was complete."""


class RequestCancelledError(ByzerLLMError):
    """The request was cancelled before it finished."""


class BackendError(ByzerLLMError):
    """The backend failed; the message is the backend's (or vendor's) own."""


class BackendNotFoundError(BackendError, ConfigurationError):
    """No backend is registered for the requested pretrained_model_type."""


class BackendLoadError(BackendError):
    """The backend could not be started (bad model path, missing extra...)."""


class AlreadyDeployedError(ConfigurationError):
    """The alias is already deployed; deploy again with ``--force`` to replace it."""


class PromptTemplateError(ConfigurationError):
    """The docstring template is invalid or uses a variable that has no value."""


class PromptDefinitionError(ConfigurationError, TypeError):
    """The prompt function itself is not usable (bad body return value, annotation...)."""


class DeployError(ByzerLLMError):
    """The deployment did not come up; the message says why."""


class NodeAgentError(DeployError):
    """A node agent could not start a worker (no spec, no room); recorded for ``deploy``."""


class StructuredOutputError(ByzerLLMError, ValueError):
    """The answer could not be read as the requested type; ``raw_text`` is the answer."""

    def __init__(self, message: str, raw_text: str) -> None:
        self.raw_text = raw_text
        shown = raw_text if len(raw_text) <= 2000 else raw_text[:2000] + " ..."
        super().__init__(f"{message}\n--- raw answer ---\n{shown}")


class ImplError(ByzerLLMError):
    """The model's code could not be used; ``code`` holds what it wrote."""

    def __init__(self, message: str, code: str) -> None:
        self.code = code
        super().__init__(f"{message}\n--- generated code ---\n{code}")


class EngineArgsError(ConfigurationError, BackendLoadError):
    """A ``backend.*`` param the installed engine (vLLM) does not take.

    It can only be found once the engine is imported, in ``start``: so it is
    both the user's mistake (catch it as ConfigurationError) and a failed
    start (the worker reports it as a BackendLoadError)."""


_WIRE_TYPES: dict[str, type[ByzerLLMError]] = {
    cls.__name__: cls
    for cls in (
        ByzerLLMError,
        ConfigurationError,
        InvalidInferParamsError,
        BrokerUnavailableError,
        ProtocolError,
        OverloadedError,
        RequestTooLargeError,
        RequestTimeoutError,
        RequestCancelledError,
        BackendError,
        BackendNotFoundError,
        BackendLoadError,
        EngineArgsError,
        DeployError,
        NodeAgentError,
        AlreadyDeployedError,
        PromptTemplateError,
        PromptDefinitionError,
    )
}


def error_from_wire(data: dict[str, Any]) -> ByzerLLMError:
    """Rebuild an error sent by a worker; unknown types become BackendError."""
    message = str(data.get("message", "unknown error"))
    if data.get("type") == "ModelNotFoundError":
        err: ByzerLLMError = ModelNotFoundError("", message)
    else:
        err = _WIRE_TYPES.get(str(data.get("type")), BackendError)(message)
    err.retryable = bool(data.get("retryable", False))
    return err

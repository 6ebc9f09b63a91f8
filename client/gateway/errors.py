"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure the gateway answers has a status code a client can act on and
a message that says what to change. byzerllm's own errors (broker/errors.py)
map onto statuses here, in one table.
"""

from __future__ import annotations

import json
from typing import Any

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
    StructuredOutputError,
)

# seconds a client is asked to wait after a 429 or 503 before trying again
RETRY_AFTER = 1


class _ApiError(Exception):
    """An HTTP error the gateway answers; private, as it never leaves the gateway."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def encoded(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode()


def bad_request(message: str, param: str | None, code: str | None = None) -> _ApiError:
    return _ApiError(400, message, param=param, code=code)


def unsupported(param: str, message: str) -> _ApiError:
    return _ApiError(400, message, param=param, code="unsupported_parameter")


def unauthorized(message: str) -> _ApiError:
    return _ApiError(401, message, code="invalid_api_key")


# (error class, status, type, code); the first class the error is an instance of wins
_TABLE: tuple[tuple[type[ByzerLLMError], int, str, str | None], ...] = (
    (ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (OverloadedError, 429, "rate_limit_error", "overloaded"),
    (NoLiveWorkerError, 503, "service_unavailable", "no_live_worker"),
    (RequestTimeoutError, 504, "timeout", "deadline_exceeded"),
    (RequestTooLargeError, 413, "invalid_request_error", "request_too_large"),
    (BrokerUnavailableError, 503, "service_unavailable", "broker_unavailable"),
    (RequestCancelledError, 499, "cancelled", "request_cancelled"),
    (StructuredOutputError, 502, "api_error", "structured_output_error"),
    (BackendError, 502, "api_error", "backend_error"),
    (ConfigurationError, 400, "invalid_request_error", None),
)


def from_byzerllm(exc: ByzerLLMError) -> _ApiError:
    """The HTTP error for one of byzerllm's errors: its message, the right status."""
    status, type_, code = next(
        ((s, t, c) for cls, s, t, c in _TABLE if isinstance(exc, cls)),
        (500, "api_error", type(exc).__name__),
    )
    param = "model" if isinstance(exc, ModelNotFoundError) else None
    message = str(exc)
    if isinstance(exc, ModelNotFoundError):
        message += " (GET /v1/models lists the aliases served here)"
    headers = {"Retry-After": str(RETRY_AFTER)} if status in (429, 503) else {}
    return _ApiError(status, message, type_=type_, param=param, code=code, headers=headers)


def internal_error() -> _ApiError:
    """What an unexpected failure answers: no details (they may hold a prompt)."""
    return _ApiError(
        500,
        "the gateway failed unexpectedly; the error is in the gateway's log",
        type_="api_error",
        code="internal_error",
    )

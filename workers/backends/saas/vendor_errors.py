"""Vendor failures as :class:`BackendError`: the vendor's words, our type, no secrets.

The openai and anthropic SDKs are generated from one template and share
their exception names (``APIStatusError``, ``APITimeoutError``...), so one
mapper serves both; the plain-HTTP backends use :func:`backend_error` and
:func:`status_error` directly. Every message passes through :func:`redact`
because some vendors quote the rejected key back in full.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from byzerllm.broker.errors import BackendError


def redact(message: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "***")
    return message


def backend_error(
    message: str, secrets: Iterable[str] = (), retryable: bool = False
) -> BackendError:
    err = BackendError(redact(message, secrets))
    err.retryable = retryable
    return err


def is_retryable_status(status: int) -> bool:
    """Rate limits and server faults pass; a 4xx is the request's own fault and would repeat."""
    return status in (408, 409, 429) or status >= 500


def status_error(
    status: int,
    vendor_message: str,
    where: str,
    *,
    code: str | None = None,
    secrets: Iterable[str] = (),
    max_retries: int | None = None,
    key_hint: str = "",
) -> BackendError:
    """The one wording of an HTTP failure, shared by SDK and plain-HTTP backends."""
    detail = f"{vendor_message} (HTTP {status} from {where}"
    detail += f", code {code})" if code else ")"
    if status in (401, 403):
        return backend_error(f"authentication failed: {detail}{key_hint}", secrets)
    retryable = is_retryable_status(status)
    if retryable and max_retries is not None:
        detail += f"; retried up to {max_retries} times (saas.max_retries)"
    return backend_error(detail, secrets, retryable)


@dataclass(slots=True)
class SdkErrors:
    """Maps one Stainless-generated SDK's exceptions (openai, anthropic)."""

    sdk: ModuleType
    base_error: type[Exception]  # OpenAIError, AnthropicError
    where: str
    secret: str
    timeout: float
    max_retries: int

    def translate(self, exc: Exception) -> Exception:
        sdk, secrets = self.sdk, (self.secret,)
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, sdk.APIStatusError):
            hint = "" if self.secret else "; saas.api_key is not set"
            return status_error(
                exc.status_code,
                vendor_message(exc),
                self.where,
                code=_code(exc),
                secrets=secrets,
                max_retries=self.max_retries,
                key_hint=hint,
            )
        timed_out = isinstance(exc, sdk.APITimeoutError) or is_transport_timeout(exc)
        if timed_out and not failed_to_connect(exc):
            return backend_error(
                f"cannot reach {self.where}: no answer within {self.timeout:g}s (saas.timeout)",
                secrets,
                retryable=True,
            )
        if isinstance(exc, sdk.APIConnectionError) or is_transport_error(exc):
            return backend_error(
                f"cannot reach {self.where}: {cause_text(exc)}", secrets, retryable=True
            )
        if isinstance(exc, self.base_error):
            return backend_error(f"{self.where}: {type(exc).__name__}: {exc}", secrets)
        return exc


def _code(exc: Any) -> str | None:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    if isinstance(error, dict) and error.get("type"):  # Anthropic: authentication_error...
        return str(error["type"])
    return None


def vendor_message(exc: Any) -> str:
    body = exc.body
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        body = body["error"]
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    if isinstance(body, str) and body.strip():
        return body.strip()[:500]
    return str(exc.message)


def _class_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__ if cls.__module__.startswith("httpx")}


def is_transport_timeout(exc: BaseException) -> bool:
    """httpx errors raised while reading a stream are not wrapped by the SDKs."""
    return "TimeoutException" in _class_names(exc)


def is_transport_error(exc: BaseException) -> bool:
    return "TransportError" in _class_names(exc)


def _connector_error(exc: BaseException) -> BaseException | None:
    """The aiohttp connection failure (refused, no such host, a TLS error) behind
    ``exc``, if any. The SDKs' aiohttp transport raises every such failure as
    httpx's ConnectTimeout, with the aiohttp error in its chain."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if "ClientConnectorError" in {cls.__name__ for cls in type(link).__mro__}:
            return link
        link = link.__cause__ or link.__context__
    return None


def failed_to_connect(exc: BaseException) -> bool:
    return _connector_error(exc) is not None


def cause_text(exc: BaseException) -> str:
    """The SDK's own text is a bare "Connection error."; the cause says which."""
    cause = _connector_error(exc) or exc.__cause__ or exc
    return f"{cause} ({type(cause).__name__})" if str(cause) else type(cause).__name__

"""What every SaaS backend shares: a started-client check and one error boundary."""

from __future__ import annotations

from typing import Any, NoReturn

from byzerllm.broker.errors import BackendError
from byzerllm.workers.backend import Backend


class SaasBackend(Backend):
    """Holds the vendor client in ``_client``; subclasses map vendor errors in
    :meth:`_translate`, and every call site raises through :meth:`_reraise`."""

    _client: Any = None

    def _ready(self) -> Any:
        if self._client is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        return self._client

    def _reraise(self, exc: Exception) -> NoReturn:
        err = self._translate(exc)
        if err is exc:
            raise exc
        raise err from exc

    def _translate(self, exc: Exception) -> Exception:
        return exc

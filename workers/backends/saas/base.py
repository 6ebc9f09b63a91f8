"""What every SaaS backend shares: a started-client check and one error boundary."""

from __future__ import annotations

from typing import Any, NoReturn

from pydantic import ConfigDict, Field

from byzerllm.broker.errors import BackendError
from byzerllm.workers.backend import Backend, BackendOptions


class SaasOptions(BackendOptions):
    """The ``saas.*`` params every vendor reads; ``--infer_params`` keys keep
    their dots, hence the aliases."""

    model_config = ConfigDict(populate_by_name=True)

    model: str = Field(default="", alias="saas.model")
    timeout: float = Field(default=600.0, gt=0, alias="saas.timeout")
    max_retries: int = Field(default=3, ge=0, alias="saas.max_retries")
    max_output_tokens: int | None = Field(default=None, gt=0, alias="saas.max_output_tokens")
    temperature: float | None = Field(default=None, alias="saas.temperature")
    top_p: float | None = Field(default=None, alias="saas.top_p")
    # Compatible servers without tool support (some gateways, older Ollama)
    # can turn native tool calling off; tools are then described in the prompt.
    native_tools: bool = Field(default=True, alias="saas.native_tools")


class SaasBackend(Backend):
    """Holds the vendor client in ``_client``; subclasses map vendor errors in
    :meth:`_translate`, and every call site raises through :meth:`_reraise`."""

    _client: Any = None

    @property
    def native_tools(self) -> bool:
        return "tools" in self.capabilities and bool(getattr(self.options, "native_tools", True))

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

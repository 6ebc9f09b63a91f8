"""``saas/azure_openai``: OpenAI models deployed on Azure, through the SDK's AsyncAzureOpenAI.

Azure speaks the OpenAI wire format under a different address
(``{endpoint}/openai/deployments/{deployment}/...?api-version=...``) and
authenticates with an ``api-key`` header; the SDK's Azure client does both,
so everything else (chat, streaming, multimodal, embeddings, retries, error
mapping) is inherited from :class:`OpenAIBackend` unchanged.

The deployment, not ``saas.model``, picks the model on Azure, so the three
Azure keys are required at deploy time and ``saas.model`` is optional (it
names the model in meta and selects whisper/tts/dall-e handling).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import mask_url
from byzerllm.workers.backends.saas.connection import http_client
from byzerllm.workers.backends.saas.openai import OpenAIBackend, OpenAIOptions, _key

if TYPE_CHECKING:
    from openai import AsyncOpenAI

_REQUIRED = {
    "azure_endpoint": 'saas.azure_endpoint="https://<resource>.openai.azure.com/"',
    "api_version": 'saas.api_version="2024-02-15-preview"',
    "azure_deployment": 'saas.azure_deployment="<your deployment name>"',
    "api_key": 'saas.api_key="<key of the Azure OpenAI resource>"',
}


class AzureOpenAIOptions(OpenAIOptions):
    # the guide's deploy line sets saas.api_type="azure"; this backend speaks
    # Azure whatever it says, so the key is accepted and not read
    api_type: str = Field(default="azure", alias="saas.api_type")
    azure_endpoint: str = Field(default="", alias="saas.azure_endpoint")
    api_version: str = Field(default="", alias="saas.api_version")
    azure_deployment: str = Field(default="", alias="saas.azure_deployment")

    @field_validator("azure_endpoint", "api_version", "azure_deployment", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value


class AzureOpenAIBackend(OpenAIBackend):
    Options = AzureOpenAIOptions
    options: AzureOpenAIOptions

    @classmethod
    def check_options(cls, options: Any, where: str) -> None:
        for name, example in _REQUIRED.items():
            value = _key(options) if name == "api_key" else getattr(options, name)
            if not value:
                raise ConfigurationError(
                    f"{where} needs saas.{name}, e.g. --infer_params {example}"
                )
        endpoint = urlsplit(options.azure_endpoint)
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise ConfigurationError(
                f"{where}: saas.azure_endpoint must be a URL such as "
                f"https://<resource>.openai.azure.com/, not {mask_url(options.azure_endpoint)!r}"
            )
        if not options.model.strip():
            options.model = options.azure_deployment

    def _make_client(self, sdk: ModuleType) -> AsyncOpenAI:
        opts = self.options
        client: AsyncOpenAI = sdk.AsyncAzureOpenAI(
            api_key=_key(opts),
            azure_endpoint=opts.azure_endpoint,
            api_version=opts.api_version,
            azure_deployment=opts.azure_deployment,
            timeout=opts.timeout,
            max_retries=opts.max_retries,
            http_client=http_client(sdk, opts, self.spec.worker_concurrency),
        )
        return client

    def _where(self) -> str:
        return mask_url(
            f"{self.options.azure_endpoint.rstrip('/')} ({self.options.azure_deployment})"
        )

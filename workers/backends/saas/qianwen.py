"""``saas/qianwen`` and ``saas/qianwen_vl``: Alibaba Cloud's Qwen models on DashScope.

Decision: DashScope's OpenAI-compatible mode
(``https://dashscope.aliyuncs.com/compatible-mode/v1``) through the openai
SDK, not the ``dashscope`` SDK. The compatible mode serves what the guide
deploys (qwen chat models, streaming with usage, ``text-embedding-v1/v2/v3``,
and qwen-vl with ``image_url`` parts) with OpenAI's wire format and errors,
so this backend is :class:`OpenAIBackend` with DashScope's address and
limits. The ``dashscope`` SDK (2.x) would pull in aiohttp, fastapi and
uvicorn, and takes its base URL from a process-wide module variable rather
than per client, which a worker serving several deployments cannot share.

DashScope differences kept here: its embeddings endpoint takes at most 10
texts per call (``saas.embedding_batch_size``), so longer lists are split
and re-joined in order.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from byzerllm.broker.errors import ConfigurationError
from byzerllm.workers.backends.saas.openai import OpenAIBackend, OpenAIOptions, _key

DASHSCOPE_BASE_URL = "https://dashscope.aliyuncs.com/compatible-mode/v1"


class QianwenOptions(OpenAIOptions):
    base_url: str = Field(default=DASHSCOPE_BASE_URL, alias="saas.base_url")
    embedding_batch_size: int = Field(default=10, gt=0, alias="saas.embedding_batch_size")

    @field_validator("base_url", mode="before")
    @classmethod
    def _base_url(cls, value: Any) -> Any:
        if value in (None, ""):
            return DASHSCOPE_BASE_URL
        return value.strip().rstrip("/") if isinstance(value, str) else value


class QianwenBackend(OpenAIBackend):
    Options = QianwenOptions
    options: QianwenOptions

    @classmethod
    def check_options(cls, options: Any, where: str) -> None:
        super().check_options(options, where)
        host = urlsplit(options.base_url).hostname or ""
        if not _key(options) and host.endswith("aliyuncs.com"):
            raise ConfigurationError(
                f"{where} needs saas.api_key, the DashScope API key, "
                "e.g. --infer_params saas.api_key=sk-..."
            )

    async def embed(self, texts: list[str], llm_config: dict[str, Any]) -> list[list[float]]:
        size = self.options.embedding_batch_size
        vectors: list[list[float]] = []
        for start in range(0, len(texts), size):
            vectors.extend(await super().embed(texts[start : start + size], llm_config))
        return vectors

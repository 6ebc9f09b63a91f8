"""``custom/bge``: sentence embeddings from a BGE or any sentence-transformers folder.

transformers' ``AutoModel`` runs the encoder; pooling and normalisation
follow the folder's own sentence-transformers files (see :mod:`.pooling`),
so all-MiniLM gets mean pooling and BGE the CLS vector, each as its authors
trained it. The requests a worker serves at once are embedded together
(see :mod:`.batcher`), which is most of the throughput on a CPU.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from byzerllm.broker.errors import BackendError
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backends.transformers.batcher import MicroBatcher
from byzerllm.workers.backends.transformers.common import (
    TransformersBackend,
    TransformersOptions,
    batch_wait,
    model_token_limit,
)
from byzerllm.workers.backends.transformers.pooling import PoolingMode, PoolingPlan, pool, read_plan

_WHAT = "sentence-embedding model"


class EmbeddingOptions(TransformersOptions):
    # texts in one forward pass; a request with more is split
    batch_size: int = Field(default=32, gt=0)
    # how long an idle model waits for the rest of a burst of requests
    batch_wait_ms: float = Field(default=2.0, ge=0)
    # overrides of what the folder says (see pooling.py)
    pooling: PoolingMode | None = None
    normalize: bool | None = None
    max_length: int | None = Field(default=None, gt=0)


class TransformersEmbeddingBackend(TransformersBackend):
    what: ClassVar[str] = _WHAT
    Options = EmbeddingOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"embed"})
    options: EmbeddingOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._tokenizer: Any = None
        self._torch: Any = None
        self._max_length = 512
        self.plan: PoolingPlan | None = None
        self.batcher: MicroBatcher[str, list[float]] = MicroBatcher(
            self._encode, self.options.batch_size, batch_wait(spec, self.options.batch_wait_ms)
        )

    async def start(self) -> None:
        torch, transformers, folder = self._prepare()
        self._torch = torch
        plan = read_plan(folder)
        if self.options.pooling is not None:
            plan = replace(plan, mode=self.options.pooling)
        if self.options.normalize is not None:
            plan = replace(plan, normalize=self.options.normalize)
        self.plan = plan
        await asyncio.to_thread(self._load, torch, transformers, self.plan.transformer_dir)

    def _load(self, torch: Any, transformers: Any, folder: Path) -> None:
        self._tokenizer, self._model = self._load_pretrained(
            torch, transformers, transformers.AutoModel, folder
        )
        self._max_length = self._token_limit()

    def _token_limit(self) -> int:
        """Longest input in tokens: the option, else the folder's, else the model's positions."""
        assert self.plan is not None
        if self.options.max_length:
            return self.options.max_length
        if self.plan.max_seq_length:
            return int(self.plan.max_seq_length)
        return model_token_limit(self._tokenizer, self._model)

    async def aclose(self) -> None:
        await self.batcher.aclose()
        self._model = self._tokenizer = None

    @property
    def dimension(self) -> int:
        return int(self._model.config.hidden_size) if self._model is not None else 0

    def meta(self) -> dict[str, Any]:
        plan = self.plan
        return {
            **super().meta(),
            "device": self._device,
            "dimension": self.dimension,
            "pooling": plan.mode if plan else None,
            "normalize": plan.normalize if plan else None,
            "max_length": self._max_length,
        }

    async def embed(self, texts: list[str], llm_config: dict[str, Any]) -> list[list[float]]:
        if self._model is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        return await self.batcher.submit(texts)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        """Runs in a thread: embed ``texts`` in batches of similar length, in their order."""
        assert self.plan is not None
        torch, plan = self._torch, self.plan
        if plan.lower_case:
            texts = [t.lower() for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # less padding
        vectors: list[list[float]] = [[] for _ in texts]
        size = self.options.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                batch = self._tokenizer(
                    [texts[i] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                ).to(self._device)
                hidden = self._model(**batch).last_hidden_state
                pooled = pool(torch, hidden, batch["attention_mask"], plan.mode)
                if plan.normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for i, vector in zip(chunk, pooled.float().cpu().tolist(), strict=True):
                    vectors[i] = vector
        return vectors

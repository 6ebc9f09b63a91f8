"""``custom/bge_rerank``: relevance scores from a cross-encoder such as bge-reranker.

A reranker reads a query and a document together and gives one number for
how well the document answers the query: transformers'
``AutoModelForSequenceClassification`` with a single label (bge-reranker,
the ms-marco cross-encoders). Scores are the raw logits, as the original's
FlagReranker returned them; ``normalize`` maps them through a sigmoid to
0..1, which thresholds read more easily. Pairs of the requests a worker
serves at once share forward passes through the same micro-batcher as the
``custom/bge`` embeddings (see :mod:`.batcher`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from byzerllm.broker.errors import BackendError, BackendLoadError
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backends.transformers.batcher import MicroBatcher
from byzerllm.workers.backends.transformers.common import (
    TransformersBackend,
    TransformersOptions,
    batch_wait,
    model_token_limit,
)

_WHAT = "cross-encoder (reranker) model, e.g. bge-reranker-base"
# what FlagReranker cut pairs to: longer ones lose their tail, as there
DEFAULT_MAX_LENGTH = 512

Pair = tuple[str, str]


class RerankOptions(TransformersOptions):
    # (query, document) pairs in one forward pass; a request with more is split
    batch_size: int = Field(default=32, gt=0)
    # how long an idle model waits for the rest of a burst of requests
    batch_wait_ms: float = Field(default=2.0, ge=0)
    # tokens of query + document together; default: 512, or less where the model has less
    max_length: int | None = Field(default=None, gt=0)
    # sigmoid of the logit (0..1) instead of the logit itself
    normalize: bool = False


class TransformersRerankBackend(TransformersBackend):
    what: ClassVar[str] = _WHAT
    Options = RerankOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"rerank"})
    options: RerankOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._tokenizer: Any = None
        self._torch: Any = None
        self._max_length = DEFAULT_MAX_LENGTH
        self.batcher: MicroBatcher[Pair, float] = MicroBatcher(
            self._score, self.options.batch_size, batch_wait(spec, self.options.batch_wait_ms)
        )

    async def start(self) -> None:
        torch, transformers, folder = self._prepare()
        self._torch = torch
        await asyncio.to_thread(self._load, torch, transformers, folder)

    def _load(self, torch: Any, transformers: Any, folder: Path) -> None:
        self._tokenizer, self._model = self._load_pretrained(
            torch, transformers, transformers.AutoModelForSequenceClassification, folder
        )
        labels = int(getattr(self._model.config, "num_labels", 1))
        if labels != 1:
            raise BackendLoadError(
                f"{self.spec.alias}: {str(folder)!r} classifies into {labels} labels; a reranker "
                "gives one relevance score per pair (num_labels=1, as bge-reranker does)"
            )
        self._max_length = self._token_limit()

    def _token_limit(self) -> int:
        """Tokens per pair: the option, within what the model takes (a longer
        one would fail every request at its position embeddings, so it stops
        the deployment instead)."""
        limit = model_token_limit(self._tokenizer, self._model)
        wanted = self.options.max_length
        if wanted is None:
            return min(DEFAULT_MAX_LENGTH, limit)
        if wanted > limit:
            raise BackendLoadError(
                f"{self.spec.alias}: infer_params max_length={wanted} is more than the "
                f"{limit} tokens this model takes; use max_length={limit} or less"
            )
        return wanted

    async def aclose(self) -> None:
        await self.batcher.aclose()
        self._model = self._tokenizer = None

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "device": self._device,
            "normalize": self.options.normalize,
            "max_length": self._max_length,
            "batch_size": self.options.batch_size,
        }

    async def rerank(
        self, query: str, documents: list[str], llm_config: dict[str, Any]
    ) -> list[float]:
        if self._model is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        return await self.batcher.submit([(query, document) for document in documents])

    def _score(self, pairs: list[Pair]) -> list[float]:
        """Runs in a thread: score ``pairs`` in batches of similar length, in their order."""
        torch = self._torch
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        scores = [0.0] * len(pairs)
        size = self.options.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), size):
                chunk = order[start : start + size]
                batch = self._tokenizer(
                    [pairs[i][0] for i in chunk],
                    [pairs[i][1] for i in chunk],
                    padding=True,
                    truncation=True,
                    max_length=self._max_length,
                    return_tensors="pt",
                ).to(self._device)
                logits = self._model(**batch, return_dict=True).logits.view(-1).float()
                if self.options.normalize:
                    logits = torch.sigmoid(logits)
                for i, score in zip(chunk, logits.cpu().tolist(), strict=True):
                    scores[i] = score
        return scores

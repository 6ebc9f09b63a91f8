"""``emb_rerank`` as the original had it: sentence pairs in, ranked pairs out.

The original took one ``[query, passage]`` pair or a list of them and
answered with one ``LLMResponse`` whose output was ``(pair, score)`` for a
single pair, else every ``(pair, score)``, best first. On the wire a rerank
request is one query with its documents
(:class:`~byzerllm.broker.messages.RerankPayload`), the shape rerank APIs
and batching workers want; pairs of several queries become one request per
query, sent together. These helpers turn the one shape into the other and
back; :meth:`AsyncByzerLLM.emb_rerank` sends the requests.
"""

from __future__ import annotations

from typing import Any

from byzerllm.broker.errors import ConfigurationError, ProtocolError
from byzerllm.broker.messages import RerankPayload

Pair = tuple[str, str]

_SHAPE = "a [query, passage] pair or a list of such pairs"


def _as_pair(value: Any) -> Pair | None:
    if isinstance(value, list | tuple) and len(value) == 2:
        query, passage = value
        if isinstance(query, str) and isinstance(passage, str):
            return query, passage
    return None


def parse_pairs(sentence_pairs: Any) -> tuple[bool, list[Pair]]:
    """``(single, pairs)``: whether one pair was given (its answer is one tuple,
    not a list), and the pairs as ``(query, passage)`` strings."""
    if not sentence_pairs:
        raise ConfigurationError(f"sentence_pairs is required: {_SHAPE}")
    single = _as_pair(sentence_pairs)
    if single is not None:
        return True, [single]
    if isinstance(sentence_pairs, str) or not isinstance(sentence_pairs, list | tuple):
        raise ConfigurationError(
            f"sentence_pairs must be {_SHAPE}, not {type(sentence_pairs).__name__} "
            f"{str(sentence_pairs)[:100]!r}"
        )
    pairs: list[Pair] = []
    for i, value in enumerate(sentence_pairs):
        pair = _as_pair(value)
        if pair is None:
            raise ConfigurationError(
                f"sentence_pairs[{i}] is not a [query, passage] pair of strings: "
                f"{str(value)[:100]!r}"
            )
        pairs.append(pair)
    return False, pairs


def by_query(pairs: list[Pair]) -> dict[str, list[int]]:
    """The positions of the pairs of each query, queries in the order they first come."""
    groups: dict[str, list[int]] = {}
    for i, (query, _) in enumerate(pairs):
        groups.setdefault(query, []).append(i)
    return groups


def ranked(sentence_pairs: Any, single: bool, scores: list[float]) -> Any:
    """The original's output: ``(pair, score)`` for a single pair, else the pairs
    with their scores, best first (pairs of equal score keep their order). Each
    pair is the caller's own object."""
    if single:
        return (sentence_pairs, scores[0])
    return sorted(zip(sentence_pairs, scores, strict=True), key=lambda item: item[1], reverse=True)


def payload(query: str, documents: list[str], llm_config: dict[str, Any]) -> dict[str, Any]:
    """The request payload, in the one shape the worker reads."""
    return RerankPayload(query=query, documents=documents, llm_config=llm_config).model_dump()


def scores_of(output: Any, documents: list[str], alias: str) -> list[float]:
    """The END reply's scores, one per document; anything else is a broken reply
    (pairing scores with the wrong documents would be worse than failing)."""
    if not isinstance(output, list) or len(output) != len(documents):
        raise ProtocolError(
            f"the rerank answer of {alias!r} holds {len(output) if isinstance(output, list) else 0}"
            f" scores for {len(documents)} documents"
        )
    return [float(score) for score in output]

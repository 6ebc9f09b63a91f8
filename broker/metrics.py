"""Per-alias metrics in Redis: what workers record, and what anyone reads back.

Workers count requests by outcome, latency and time-to-first-token histograms
(fixed buckets), tokens and retries in the alias' hash ``P:{A}:metrics``. The
counters are cumulative totals, so every reader (each gateway replica, the
dashboard, Grafana on Redis directly) sees the same figures, and rates are
differences between two reads. A worker never pays a Redis call per request:
it adds to a :class:`MetricsRecorder` in memory, and the reply writer stages
the pending increments (:func:`stage_metrics`) into the pipeline it already
sends with the worker's state. Queue depth, in-flight requests, dead letters
and live workers are read from the streams and sets themselves.

The hash's fields (docs/redis-keys.md#metrics)::

    req:ok req:error req:cancelled req:timeout   requests finished, by outcome
    lat:<bound> ... lat:inf, lat:sum             latency histogram (non-cumulative buckets)
    ttft:<bound> ... ttft:inf, ttft:sum          time-to-first-token histogram
    tok:in tok:out                               input / output tokens
    retries                                      requests claimed from a dead worker
    last_error last_error_at                     the last backend error and its epoch time
"""

from __future__ import annotations

import time
from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from byzerllm.broker.keys import GROUP, AliasKeys, Keys, decoded
from byzerllm.broker.messages import ReplyType, Request, RequestKind
from byzerllm.broker.state import list_aliases

if TYPE_CHECKING:
    import redis.asyncio as aioredis

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip
FIRST_TOKEN_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
OUTCOMES: tuple[str, ...] = ("ok", "error", "cancelled", "timeout")
LAST_ERROR_LIMIT = 500  # characters of the last error message kept
# error types (as they cross the wire) that are outcomes of their own
_ERROR_OUTCOMES = {"RequestTimeoutError": "timeout", "RequestCancelledError": "cancelled"}

REQUESTS = "req:"  # + outcome
LATENCY = "lat"
FIRST_TOKEN = "ttft"
INPUT_TOKENS = "tok:in"
OUTPUT_TOKENS = "tok:out"
RETRIES = "retries"
LAST_ERROR = "last_error"
LAST_ERROR_AT = "last_error_at"


def bound_name(bound: float) -> str:
    """A bucket's upper bound as it appears in a field name: ``0.005``, ``2.5``, ``300``."""
    return f"{bound:g}"


def bucket_fields(prefix: str, bounds: tuple[float, ...]) -> tuple[str, ...]:
    """The field of each bucket of a histogram, the ``+Inf`` one last."""
    return (*(f"{prefix}:{bound_name(b)}" for b in bounds), f"{prefix}:inf")


_LATENCY_FIELDS = bucket_fields(LATENCY, LATENCY_BUCKETS)
_FIRST_TOKEN_FIELDS = bucket_fields(FIRST_TOKEN, FIRST_TOKEN_BUCKETS)
_OUTCOME_FIELDS = {outcome: REQUESTS + outcome for outcome in OUTCOMES}


# -- what readers get ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Histogram:
    """Observations in fixed buckets, as Prometheus keeps them (but not cumulative)."""

    bounds: tuple[float, ...]  # upper bounds; +Inf implied after the last
    counts: tuple[int, ...]  # NON-cumulative count per bucket, len(bounds) + 1
    total: float  # sum of observed seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile (0..1), interpolated linearly inside its
        bucket as Prometheus' ``histogram_quantile`` does; None with no observation.
        A quantile in the ``+Inf`` bucket is reported as the highest finite bound."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile {q!r} is outside 0..1; pass e.g. 0.5 or 0.99")
        total = self.count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(self.bounds):
                    return self.bounds[-1]
                lower = self.bounds[i - 1] if i else 0.0
                return lower + (self.bounds[i] - lower) * max(rank - seen, 0.0) / n
            seen += n
        return self.bounds[-1]

    def as_dict(self) -> dict[str, Any]:
        return {
            "bounds": list(self.bounds),
            "counts": list(self.counts),
            "count": self.count,
            "total": self.total,
            "p50": self.quantile(0.5),
            "p90": self.quantile(0.9),
            "p99": self.quantile(0.99),
        }


@dataclass(frozen=True, slots=True)
class AliasMetrics:
    """One alias' figures: the workers' counters plus what the streams say now."""

    alias: str
    requests: dict[str, int]  # outcome -> count since the alias was first used
    latency: Histogram  # taken -> final reply, as the worker sees it
    first_token: Histogram  # taken -> first streamed chunk (streamed chat only)
    input_tokens: int
    output_tokens: int
    retries: int  # requests claimed from a dead worker and run again
    dead_letters: int  # entries of P:{A}:dead
    queue_depth: int  # waiting, not yet delivered to a worker
    in_flight: int  # delivered, not yet acked
    live_workers: int
    last_error: str | None
    last_error_time: float | None  # epoch seconds

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "alias": self.alias,
            "requests": dict(self.requests),
            "latency": self.latency.as_dict(),
            "first_token": self.first_token.as_dict(),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "retries": self.retries,
            "dead_letters": self.dead_letters,
            "queue_depth": self.queue_depth,
            "in_flight": self.in_flight,
            "live_workers": self.live_workers,
            "last_error": self.last_error,
            "last_error_time": self.last_error_time,
        }


def _int(raw: dict[str, str], name: str) -> int:
    try:
        return int(float(raw.get(name, 0)))
    except ValueError:  # a hand-edited field: better a zero than no metrics at all
        return 0


def _float(raw: dict[str, str], name: str) -> float:
    try:
        return float(raw.get(name, 0.0))
    except ValueError:
        return 0.0


def _histogram(raw: dict[str, str], prefix: str, bounds: tuple[float, ...]) -> Histogram:
    fields = bucket_fields(prefix, bounds)
    return Histogram(bounds, tuple(_int(raw, f) for f in fields), _float(raw, f"{prefix}:sum"))


def parse_metrics(
    alias: str,
    raw: dict[str, str],
    *,
    dead_letters: int = 0,
    queue_depth: int = 0,
    in_flight: int = 0,
    live_workers: int = 0,
) -> AliasMetrics:
    """An alias' figures from its decoded metrics hash and the live counts."""
    at = raw.get(LAST_ERROR_AT)
    return AliasMetrics(
        alias=alias,
        requests={outcome: _int(raw, field) for outcome, field in _OUTCOME_FIELDS.items()},
        latency=_histogram(raw, LATENCY, LATENCY_BUCKETS),
        first_token=_histogram(raw, FIRST_TOKEN, FIRST_TOKEN_BUCKETS),
        input_tokens=_int(raw, INPUT_TOKENS),
        output_tokens=_int(raw, OUTPUT_TOKENS),
        retries=_int(raw, RETRIES),
        dead_letters=dead_letters,
        queue_depth=queue_depth,
        in_flight=in_flight,
        live_workers=live_workers,
        last_error=raw.get(LAST_ERROR) or None,
        last_error_time=_float(raw, LAST_ERROR_AT) if at else None,
    )


def _count(result: Any) -> int:
    """A count from a pipeline result; an error (no such stream or group) is none."""
    if isinstance(result, Exception) or result is None:
        return 0
    if isinstance(result, dict):  # XPENDING's summary
        return int(result.get("pending", 0) or 0)
    return int(result)


async def read_metrics(
    redis: aioredis.Redis, keys: Keys, aliases: list[str] | None = None
) -> list[AliasMetrics]:
    """The figures of ``aliases`` (every deployed alias when None), sorted by alias.

    One pipeline for all of them (plus one SMEMBERS without ``aliases``), so a
    scrape costs two round trips whatever the number of aliases.
    """
    if aliases is None:
        aliases = await list_aliases(redis, keys)
    else:
        aliases = sorted(set(aliases))
    if not aliases:
        return []
    now = time.time()
    pipe = redis.pipeline(transaction=False)
    for alias in aliases:
        ak = keys.alias(alias)
        pipe.hgetall(ak.metrics)
        pipe.xlen(ak.requests)
        pipe.xpending(ak.requests, GROUP)
        pipe.xlen(ak.dead_letter)
        pipe.zcount(ak.alive, now, "+inf")
    results = await pipe.execute(raise_on_error=False)
    found: list[AliasMetrics] = []
    for i, alias in enumerate(aliases):
        raw_hash, length, pending, dead, live = results[i * 5 : i * 5 + 5]
        if isinstance(raw_hash, Exception):
            raise raw_hash  # the key is not a hash: someone else's data, say so
        raw = {decoded(k): decoded(v) for k, v in (raw_hash or {}).items()}
        in_flight = _count(pending)
        found.append(
            parse_metrics(
                alias,
                raw,
                dead_letters=_count(dead),
                # acked entries are deleted, so the stream holds waiting + in-flight ones
                queue_depth=max(_count(length) - in_flight, 0),
                in_flight=in_flight,
                live_workers=_count(live),
            )
        )
    return found


# -- what a worker records ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricsDelta:
    """Increments recorded since the last flush, taken out of a recorder as one batch."""

    counts: dict[str, int]
    sums: dict[str, float]
    last_error: tuple[str, float] | None  # (message, epoch seconds)


class MetricsRecorder:
    """A worker's metrics since the last flush, in memory.

    Recording costs a few dict updates; :meth:`take` hands the increments to
    the reply writer, which stages them with :func:`stage_metrics` into its next
    pipeline, and :meth:`put_back` keeps them when that pipeline failed.
    """

    __slots__ = ("_counts", "_sums", "_last_error")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._sums: dict[str, float] = {}
        self._last_error: tuple[str, float] | None = None

    @property
    def pending(self) -> bool:
        return bool(self._counts or self._sums or self._last_error)

    def _add(self, field: str, n: int = 1) -> None:
        self._counts[field] = self._counts.get(field, 0) + n

    def _observe(
        self, prefix: str, fields: tuple[str, ...], bounds: tuple[float, ...], seconds: float
    ) -> None:
        self._add(fields[bisect_left(bounds, seconds)])
        key = prefix + ":sum"
        self._sums[key] = self._sums.get(key, 0.0) + seconds

    def record(
        self,
        outcome: str,
        latency: float,
        *,
        first_token: float | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        error: str | None = None,
    ) -> None:
        """One finished request: its outcome (one of :data:`OUTCOMES`), seconds from
        taken to final reply, seconds to its first streamed chunk, its tokens, and the
        error message the client was sent (already free of secrets and prompts)."""
        self._add(_OUTCOME_FIELDS[outcome])
        self._observe(LATENCY, _LATENCY_FIELDS, LATENCY_BUCKETS, latency)
        if first_token is not None:
            self._observe(FIRST_TOKEN, _FIRST_TOKEN_FIELDS, FIRST_TOKEN_BUCKETS, first_token)
        if input_tokens:
            self._add(INPUT_TOKENS, int(input_tokens))
        if output_tokens:
            self._add(OUTPUT_TOKENS, int(output_tokens))
        if error:
            self._last_error = (error[:LAST_ERROR_LIMIT], time.time())

    def record_reply(
        self, request: Request, type_: ReplyType | None, data: dict[str, Any], latency: float
    ) -> None:
        """One request by its final reply: END is ok (tokens and time to first token
        from its metadata), ERROR an error or timeout (its message, as the client got
        it, becomes ``last_error``), none at all a cancel."""
        if type_ is None:
            self.record("cancelled", latency)
        elif type_ is ReplyType.ERROR:
            outcome = _ERROR_OUTCOMES.get(str(data.get("type", "")), "error")
            message = str(data.get("message", "")) if outcome == "error" else None
            self.record(outcome, latency, error=message)
        else:
            meta = data.get("meta")
            meta = meta if isinstance(meta, dict) else {}
            first_token = None
            if request.kind is RequestKind.CHAT and request.payload.get("stream"):
                first_token = _number(meta.get("first_token_time")) or None
            self.record(
                "ok",
                latency,
                first_token=first_token,
                input_tokens=int(_number(meta.get("input_tokens_count"))),
                output_tokens=int(_number(meta.get("generated_tokens_count"))),
            )

    def retried(self) -> None:
        """A request claimed from a dead worker, to be run again here."""
        self._add(RETRIES)

    def take(self) -> MetricsDelta | None:
        """The pending increments (None when there are none); the recorder starts afresh."""
        if not self.pending:
            return None
        delta = MetricsDelta(self._counts, self._sums, self._last_error)
        self._counts, self._sums, self._last_error = {}, {}, None
        return delta

    def put_back(self, delta: MetricsDelta | None) -> None:
        """Increments whose write failed, to be sent with the next flush."""
        if delta is None:
            return
        for field, n in delta.counts.items():
            self._add(field, n)
        for field, s in delta.sums.items():
            self._sums[field] = self._sums.get(field, 0.0) + s
        if self._last_error is None:
            self._last_error = delta.last_error


def _number(value: Any) -> float:
    """A figure from a backend's metadata; anything else (None, text) is zero."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def stage_metrics(pipe: Any, ak: AliasKeys, delta: MetricsDelta | None) -> None:
    """Queue a recorder's increments on a pipeline the caller executes."""
    if delta is None:
        return
    for field, n in delta.counts.items():
        pipe.hincrby(ak.metrics, field, n)
    for field, seconds in delta.sums.items():
        pipe.hincrbyfloat(ak.metrics, field, seconds)
    if delta.last_error is not None:
        message, at = delta.last_error
        pipe.hset(ak.metrics, mapping={LAST_ERROR: message, LAST_ERROR_AT: repr(at)})

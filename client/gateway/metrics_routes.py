"""``GET /metrics``: the aliases' metrics from Redis in Prometheus' format.

Every figure comes from Redis at the time of the scrape (the workers'
cumulative counters, the streams' lengths, the live workers), so every gateway
replica answers the same, and Prometheus computes the rates. The snapshot is
read first (async), then rendered by prometheus-client's own exposition code
through a collector over that snapshot, on a fresh registry per scrape.

Who may read it is the gateway's authenticator's business, as for the API:
without ``BYZERLLM_MASTER_KEY`` anyone who reaches the (loopback) address may;
with it, the scraper sends the key (Prometheus' ``authorization`` setting), and
a caller limited to some aliases sees only those.

``byzerllm metrics --port`` serves the same route without a gateway:
:func:`create_metrics_app`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from byzerllm.broker.connection import connect, redis_errors
from byzerllm.broker.keys import Keys
from byzerllm.broker.metrics import AliasMetrics, Histogram, read_metrics
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.gateway.auth import Authenticator
from byzerllm.client.gateway.errors import _ApiError
from byzerllm.client.gateway.http import error_response, guarded

if TYPE_CHECKING:
    from byzerllm.client.gateway.app import Gateway

ReadMetrics = Callable[[], Awaitable[list[AliasMetrics]]]


class SnapshotCollector(Collector):
    """The metric families of one snapshot of the aliases' figures."""

    def __init__(self, snapshot: list[AliasMetrics]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "byzerllm_requests_total",
            "Requests the workers finished, by outcome (ok, error, cancelled, timeout).",
            labels=["alias", "outcome"],
        )
        latency = HistogramMetricFamily(
            "byzerllm_request_latency_seconds",
            "Seconds from a worker taking a request to its final reply.",
            labels=["alias"],
        )
        first_token = HistogramMetricFamily(
            "byzerllm_first_token_seconds",
            "Seconds from a worker starting a streamed chat to its first chunk.",
            labels=["alias"],
        )
        tokens = CounterMetricFamily(
            "byzerllm_tokens_total",
            "Tokens of finished requests, as the backends counted them.",
            labels=["alias", "direction"],
        )
        retries = CounterMetricFamily(
            "byzerllm_retries_total",
            "Requests claimed from a dead worker and run again.",
            labels=["alias"],
        )
        dead = CounterMetricFamily(
            "byzerllm_dead_letters_total",
            "Malformed request entries kept in the alias' dead-letter stream.",
            labels=["alias"],
        )
        queue = GaugeMetricFamily(
            "byzerllm_queue_depth",
            "Requests waiting, not yet delivered to a worker.",
            labels=["alias"],
        )
        in_flight = GaugeMetricFamily(
            "byzerllm_in_flight",
            "Requests delivered to a worker and not yet answered.",
            labels=["alias"],
        )
        live = GaugeMetricFamily(
            "byzerllm_live_workers",
            "Workers whose heartbeat has not expired.",
            labels=["alias"],
        )
        for m in self._snapshot:
            for outcome, count in m.requests.items():
                requests.add_metric([m.alias, outcome], count)
            _add_histogram(latency, m.alias, m.latency)
            _add_histogram(first_token, m.alias, m.first_token)
            tokens.add_metric([m.alias, "input"], m.input_tokens)
            tokens.add_metric([m.alias, "output"], m.output_tokens)
            retries.add_metric([m.alias], m.retries)
            dead.add_metric([m.alias], m.dead_letters)
            queue.add_metric([m.alias], m.queue_depth)
            in_flight.add_metric([m.alias], m.in_flight)
            live.add_metric([m.alias], m.live_workers)
        yield from (requests, latency, first_token, tokens, retries, dead, queue, in_flight, live)


def _add_histogram(family: HistogramMetricFamily, alias: str, histogram: Histogram) -> None:
    """Our buckets are stored per bucket; Prometheus' are cumulative."""
    buckets: list[tuple[str, float]] = []
    seen = 0
    for bound, count in zip((*histogram.bounds, float("inf")), histogram.counts, strict=True):
        seen += count
        buckets.append((floatToGoString(bound), seen))
    family.add_metric([alias], buckets, histogram.total)


def exposition(snapshot: list[AliasMetrics]) -> bytes:
    """The snapshot in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


def metrics_route(auth: Authenticator, read: ReadMetrics) -> Route:
    """``GET /metrics`` over ``read``; the caller sees the aliases it may use."""

    async def metrics(request: Request) -> Response:
        caller = await auth(request)
        snapshot = [m for m in await read() if caller.may_use(m.alias)]
        return Response(exposition(snapshot), media_type=CONTENT_TYPE_LATEST)

    return Route("/metrics", guarded(metrics), methods=["GET"])


def routes(gw: Gateway) -> list[Route]:
    async def read() -> list[AliasMetrics]:
        with redis_errors(gw.settings):
            channel = gw.llm.channel
            await channel.start()
            return await read_metrics(channel.redis, channel.keys)

    return [metrics_route(gw.auth, read)]


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = f"no such endpoint: {request.method} {request.url.path}; this server has GET /metrics"
    return error_response(_ApiError(status, message, code="not_found" if status == 404 else None))


def create_metrics_app(settings: BrokerSettings, *, master_key: str | None = None) -> Starlette:
    """An app with ``GET /metrics`` only, over its own Redis connection: for
    setups without a gateway (``byzerllm metrics --port``)."""
    held: dict[str, Any] = {}
    opening = asyncio.Lock()  # concurrent first scrapes share one connection

    async def read() -> list[AliasMetrics]:
        with redis_errors(settings):
            async with opening:
                if "redis" not in held:
                    held["redis"] = await connect(settings)
            return await read_metrics(held["redis"], Keys(settings.prefix))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if "redis" in held:
                await held.pop("redis").aclose()

    return Starlette(
        routes=[metrics_route(Authenticator(master_key), read)],
        lifespan=lifespan,
        exception_handlers={HTTPException: _not_found},
    )

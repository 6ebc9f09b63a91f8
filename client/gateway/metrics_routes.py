"""``GET /metrics``: the aliases' metrics from Redis in Prometheus' format."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

if TYPE_CHECKING:
    from byzerllm.client.gateway.app import Gateway


def routes(gw: Gateway) -> list[Route]:
    return []

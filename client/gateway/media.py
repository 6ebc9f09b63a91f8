"""Audio, image and rerank endpoints of the gateway."""

from __future__ import annotations

from typing import TYPE_CHECKING

from starlette.routing import Route

if TYPE_CHECKING:
    from byzerllm.client.gateway.app import Gateway


def routes(gw: Gateway) -> list[Route]:
    return []

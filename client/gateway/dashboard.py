"""``/dashboard``: a live page of the aliases' state, workers and metrics.

The page and its script and style ship in the package (``static/``, read
with importlib.resources): no CDN, no external font, so it works offline and
its Content-Security-Policy allows nothing but this origin.

The page itself needs no key: it holds no data. Its script polls
``GET /dashboard/data``, which asks the gateway's authenticator exactly as
``/v1`` does; when that answers 401 the page asks for the key, keeps it in
the tab's ``sessionStorage`` (gone with the tab, never in a URL or a cookie)
and sends it as ``Authorization: Bearer``. A caller limited to some aliases
sees only those. The data is the figures of
:func:`byzerllm.broker.dashboard_view.read_dashboard`, with the server's
time, so the page computes rates and recent quantiles from the differences
between two polls.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from byzerllm.broker.connection import redis_errors
from byzerllm.broker.dashboard_view import read_dashboard
from byzerllm.client.gateway.http import JSONBytes, guarded
from byzerllm.client.gateway.wire import dumps

if TYPE_CHECKING:
    from byzerllm.client.gateway.app import Gateway

# the page's own files: name under static/ -> media type
ASSETS = {
    "dashboard.html": "text/html; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
}
# nothing but this origin: no CDN, no inline script, no framing, no form posts
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
ASSET_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def asset(name: str) -> bytes:
    """One of the page's files, as the package ships it."""
    return (resources.files("byzerllm.client.gateway") / "static" / name).read_bytes()


def _asset_route(path: str, name: str) -> Route:
    body, media_type = asset(name), ASSETS[name]

    async def serve(request: Request) -> Response:
        return Response(body, media_type=media_type, headers=ASSET_HEADERS)

    return Route(path, serve, methods=["GET", "HEAD"], name=name)


def routes(gw: Gateway) -> list[Route]:
    async def data(request: Request) -> Response:
        caller = await gw.auth(request)
        with redis_errors(gw.settings):
            channel = gw.llm.channel
            await channel.start()
            views = await read_dashboard(channel.redis, channel.keys)
        body = {
            "time": time.time(),
            "aliases": [v.as_dict() for v in views if caller.may_use(v.alias)],
        }
        return JSONBytes(dumps(body), headers={"cache-control": "no-store"})

    return [
        _asset_route("/dashboard", "dashboard.html"),
        _asset_route("/dashboard/dashboard.js", "dashboard.js"),
        _asset_route("/dashboard/dashboard.css", "dashboard.css"),
        Route("/dashboard/data", guarded(data), methods=["GET"]),
    ]

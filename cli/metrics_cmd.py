"""``byzerllm metrics``: the aliases' metrics for Prometheus, without a gateway."""

from __future__ import annotations

import click

from byzerllm.cli.common import console, redis_url_options
from byzerllm.cli.serve_cmd import http_setup


@click.command()
@redis_url_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=9464, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--log_level",
    default="warning",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def metrics(redis_url: str | None, host: str, port: int, log_level: str) -> None:
    """Serve GET /metrics (Prometheus' text format) over the aliases in Redis.

    The same figures as the gateway's /metrics, for setups without one. As for
    the gateway, a key in BYZERLLM_MASTER_KEY must then be sent by the scraper
    (Authorization: Bearer); without it there is no authentication, and only
    loopback addresses are served.
    """
    import uvicorn

    from byzerllm.client.gateway.metrics_routes import create_metrics_app

    settings, master_key, where = http_setup("metrics", redis_url, host)
    console.print(f"byzerllm metrics: http://{where}:{port}/metrics over Redis {settings.safe_url}")
    app = create_metrics_app(settings, master_key=master_key)
    uvicorn.run(
        app, host=host, port=port, log_level=log_level, access_log=False, server_header=False
    )

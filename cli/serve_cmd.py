"""``byzerllm serve``: the OpenAI-compatible HTTP gateway over the aliases."""

from __future__ import annotations

import click

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.cli.common import console, redis_url_options, settings_for


@click.command()
@redis_url_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Gateway processes sharing the port.",
)
@click.option(
    "--access_log/--no_access_log",
    default=True,
    show_default=True,
    help="Log one line per request (method, path, status; never bodies or keys).",
)
@click.option(
    "--request_timeout",
    default=None,
    type=click.FloatRange(0),
    help="Seconds before a request's deadline, 0 for none [default: BYZERLLM_REQUEST_TIMEOUT "
    "or 1800].",
)
@click.option(
    "--log_level",
    default="info",
    show_default=True,
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
)
def serve(
    redis_url: str | None,
    host: str,
    port: int,
    workers: int,
    access_log: bool,
    request_timeout: float | None,
    log_level: str,
) -> None:
    """Serve the deployed aliases over OpenAI's HTTP API (/v1/chat/completions, ...).

    The API key clients must send is read from BYZERLLM_MASTER_KEY (never a
    flag). Without it there is no authentication, and the gateway listens on
    loopback only.
    """
    from byzerllm.client.gateway.server import serve as run_gateway

    settings, master_key, where = http_setup("serve", redis_url, host)
    auth = (
        "clients must send the key in BYZERLLM_MASTER_KEY (or one of `byzerllm keys`) "
        "as their API key"
        if master_key
        else "no BYZERLLM_MASTER_KEY: listening on loopback only; a key is not required"
    )
    console.print(f"byzerllm gateway: http://{where}:{port}/v1 over Redis {settings.safe_url}")
    console.print(auth)
    run_gateway(
        host,
        port,
        settings,
        workers=workers,
        access_log=access_log,
        log_level=log_level,
        request_timeout=request_timeout,
    )


def http_setup(
    command: str, redis_url: str | None, host: str
) -> tuple[BrokerSettings, str | None, str]:
    """What `serve` and `metrics` check before they listen: the serve extra is
    installed, and the master key rule allows ``host``. Returns the settings,
    the master key (None: none set) and ``host`` as it goes into a URL."""
    try:
        import prometheus_client  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(
            f"byzerllm {command} needs the serve extra ({exc}): pip install 'byzerllm[serve]'"
        ) from None
    from byzerllm.client.gateway.server import check_bind, master_key_from_env

    settings = settings_for(redis_url)
    master_key = master_key_from_env()
    try:
        check_bind(host, master_key)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    return settings, master_key, f"[{host}]" if ":" in host else host

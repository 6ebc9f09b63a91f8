"""``byzerllm dashboard``: open the gateway's live dashboard in a browser.

The page is served by ``byzerllm serve`` at ``/dashboard``; this command only
says where, and asks the desktop's browser to show it. The URL holds no key:
a gateway with a master key makes the page ask for it.
"""

from __future__ import annotations

import webbrowser
from urllib.parse import urlsplit, urlunsplit

import click

from byzerllm.cli.common import console

DEFAULT_URL = "http://127.0.0.1:8000"


def dashboard_url(base: str) -> str:
    """The dashboard's address on the gateway at ``base`` (its ``/v1`` URL works too)."""
    parts = urlsplit(base.strip())
    if parts.username or parts.password:
        raise click.BadParameter(
            f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}...: leave credentials out of "
            "the URL; the page asks for the gateway's key",
            param_hint="'--url'",
        )
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"{base!r} is not a gateway address; pass the URL `byzerllm serve` listens on, "
            f"e.g. {DEFAULT_URL}",
            param_hint="'--url'",
        )
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):  # the base_url clients use
        path = path[: -len("/v1")]
    return urlunsplit((parts.scheme, parts.netloc, f"{path}/dashboard", "", ""))


@click.command()
@click.option(
    "--url",
    default=DEFAULT_URL,
    show_default=True,
    help="The gateway (byzerllm serve) to show.",
)
@click.option("--no_browser", is_flag=True, help="Only print the dashboard's URL.")
def dashboard(url: str, no_browser: bool) -> None:
    """Open the gateway's live dashboard (aliases, workers, latency, errors) in a browser."""
    page = dashboard_url(url)
    click.echo(page)
    if not no_browser and not webbrowser.open(page):
        console.print("no browser could be started here: open the URL above in one")

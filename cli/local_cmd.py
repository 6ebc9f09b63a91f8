"""``byzerllm local``: the embedded Redis and node agent started for you."""

from __future__ import annotations

import click

from byzerllm.cli import local
from byzerllm.cli.common import out


@click.group(name="local")
def local_group() -> None:
    """The embedded Redis and local node agent (started when none is configured)."""


@local_group.command()
def status() -> None:
    """Show whether they run, and where their data and logs are."""
    for name, state in local.status().items():
        out.print(f"{name}: {state}", markup=False, highlight=False)


@local_group.command()
def stop() -> None:
    """Stop the local node agent (draining its workers), then the embedded Redis."""
    stopped = local.stop()
    out.print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))

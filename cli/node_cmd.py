"""``byzerllm node``: the agent that starts workers on this host, and the node list."""

from __future__ import annotations

import click
from rich.table import Table

from byzerllm.broker.connection import connect
from byzerllm.broker.keys import Keys
from byzerllm.broker.nodes import list_nodes
from byzerllm.broker.settings import BrokerSettings
from byzerllm.cli.common import console, out, redis_url_options, run, settings_for
from byzerllm.workers.startup import configure_logging


@click.group()
def node() -> None:
    """Node agents: one per host, starting the workers deploy places there."""


@node.command()
@redis_url_options
@click.option("--cpus", type=float, default=None, help="CPUs to offer (default: all).")
@click.option("--gpus", type=int, default=None, help="GPUs to offer (default: nvidia-smi's).")
@click.option("--node_id", default=None, help="Name of this node (default: host-pid).")
@click.option("--log_level", default="INFO", show_default=True)
def start(
    redis_url: str | None, cpus: float | None, gpus: int | None, node_id: str | None, log_level: str
) -> None:
    """Run the node agent in the foreground until SIGTERM (then drain its workers)."""
    from byzerllm.workers.node_agent import NodeAgent

    configure_logging(log_level)
    settings = settings_for(redis_url)
    run(_reachable(settings))  # a wrong password or URL is a clean error, not a traceback
    agent = NodeAgent(settings, cpus=cpus, gpus=gpus, node_id=node_id)
    console.print(f"node agent {agent.node_id}: {agent.cpus:g} CPUs, {agent.gpus} GPUs")
    agent.arq_worker().run()


async def _reachable(settings: BrokerSettings) -> None:
    redis = await connect(settings)
    await redis.aclose()


async def _list(settings: BrokerSettings) -> None:
    redis = await connect(settings)
    try:
        nodes = await list_nodes(redis, Keys(settings.prefix), alive_only=False)
    finally:
        await redis.aclose()
    grid = Table("node", "host", "alive", "CPUs used/total", "GPUs used/total", "workers")
    for n in nodes:
        grid.add_row(
            n.node_id,
            n.host,
            "yes" if n.alive else "no",
            f"{n.used_cpus:g}/{n.cpus:g}",
            f"{n.used_gpus}/{n.gpus}",
            str(n.workers),
        )
    out.print(grid)


@node.command(name="list")
@redis_url_options
def list_(redis_url: str | None) -> None:
    """Show node agents and their load."""
    run(_list(settings_for(redis_url)))

"""``byzerllm`` and ``easy-byzerllm``: each command parses flags and calls the library."""

from __future__ import annotations

import click

from byzerllm.cli.common import out, redis_url_options, run
from byzerllm.cli.dashboard_cmd import dashboard
from byzerllm.cli.deploy_cmd import chat, deploy, query, undeploy
from byzerllm.cli.easy import easy_byzerllm_cli
from byzerllm.cli.keys_cmd import keys
from byzerllm.cli.local_cmd import local_group
from byzerllm.cli.metrics_cmd import metrics
from byzerllm.cli.node_cmd import node
from byzerllm.cli.serve_cmd import serve
from byzerllm.cli.stat_cmd import stat
from byzerllm.cli.storage_cmd import storage
from byzerllm.cli.worker_cmd import worker


@click.group()
@click.version_option(package_name="byzerllm")
def byzerllm_cli() -> None:
    """Deploy LLMs under an alias and talk to them, over Redis."""


@byzerllm_cli.command()
@redis_url_options
@click.option("--model", default="quickstart_chat", show_default=True, help="Alias to deploy.")
@click.option(
    "--echo", is_flag=True, help="Serve the model-free custom/echo test backend, not SmolLM2."
)
def quickstart(redis_url: str | None, model: str, echo: bool) -> None:
    """Start Redis if none runs, serve SmolLM2 under an alias, and talk to it."""
    from byzerllm.cli.quickstart import run_quickstart

    run(run_quickstart(redis_url, model, out, echo=echo))


for command in (worker, deploy, undeploy, query, chat, stat, node, local_group, storage, serve):
    byzerllm_cli.add_command(command)
byzerllm_cli.add_command(metrics)
byzerllm_cli.add_command(dashboard)
byzerllm_cli.add_command(keys)

__all__ = ["byzerllm_cli", "easy_byzerllm_cli"]

if __name__ == "__main__":  # pragma: no cover
    byzerllm_cli()

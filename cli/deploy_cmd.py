"""``deploy``, ``undeploy``, ``query`` and ``chat``: the guide's lifecycle commands."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from byzerllm.broker.spec import DeploySpec, mask_params
from byzerllm.cli.common import console, out, redis_url_options, run, settings_for
from byzerllm.cli.config_file import DeployFile
from byzerllm.cli.local import ensure_cluster
from byzerllm.cli.options import deploy_options
from byzerllm.cli.worker_cmd import spec_from_flags
from byzerllm.client import deploy as deploying
from byzerllm.client.llm import AsyncByzerLLM


async def deploy_spec(redis_url: str | None, spec: DeploySpec, force: bool, timeout: float) -> None:
    """Deploy with a progress bar; shared by ``byzerllm`` and ``easy-byzerllm``."""
    settings = await ensure_cluster(redis_url)
    params = " ".join(f"{k}={v}" for k, v in mask_params(spec.infer_params).items())
    console.print(
        f"deploying {spec.alias} ({spec.pretrained_model_type}) on {settings.safe_url} {params}",
        markup=False,
        highlight=False,
    )
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ready"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(f"starting {spec.num_workers} worker(s)", total=spec.num_workers)
        result = await deploying.deploy(
            settings,
            spec,
            force=force,
            timeout=timeout,
            on_progress=lambda p: bar.update(task, completed=p.ready),
        )
    if result.unchanged:
        out.print(
            f"{spec.alias}: already deployed with this spec; "
            f"{result.ready}/{result.total} worker(s) ready (--force replaces them)"
        )
        return
    out.print(f"{spec.alias}: {result.ready}/{result.total} worker(s) ready")


@click.command()
@redis_url_options
@deploy_options(model_required=False)
@click.option(
    "--force", is_flag=True, help="Replace an existing deployment (rolling) with another spec."
)
@click.option("--timeout", default=600.0, show_default=True, help="Seconds to wait for workers.")
@click.option("--dry_run", is_flag=True, help="Print the parsed spec (secrets masked) and stop.")
@click.option(
    "--file",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file of these options (model: ..., infer_params: {...}); values may read "
    "the environment (ENV {{VAR}}); options given here win.",
)
def deploy(
    redis_url: str | None,
    force: bool,
    timeout: float,
    dry_run: bool,
    config_file: str | None,
    **flags: object,
) -> None:
    """Deploy a model under an alias on the node agents.

    Deploying a ready alias again with the same spec changes nothing; another
    spec needs --force."""
    if config_file:
        ctx = click.get_current_context()
        flags, redis_url = DeployFile.read(config_file).apply(ctx, flags, redis_url)
        timeout = float(flags.pop("timeout", timeout))  # type: ignore[arg-type]
    if not flags.get("model"):
        raise click.UsageError("Missing option '--model' (the alias; or `model:` in --file).")
    spec = spec_from_flags(flags)
    if dry_run:
        shown = spec.model_dump()
        shown["infer_params"] = mask_params(spec.infer_params)
        out.print_json(json.dumps(shown))
        return
    run(deploy_spec(redis_url, spec, force, timeout))


@click.command()
@redis_url_options
@click.option("--model", required=True, help="The alias to remove.")
@click.option("--force", is_flag=True, hidden=True, help="Accepted for compatibility.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to let work drain.")
def undeploy(redis_url: str | None, model: str, force: bool, timeout: float) -> None:
    """Drain the workers of an alias and remove it."""
    settings = settings_for(redis_url)
    removed = run(deploying.undeploy(settings, model, timeout))
    out.print(f"{model}: undeployed" if removed else f"{model}: was not deployed")


async def stream_answer(redis_url: str | None, alias: str, query: str) -> None:
    llm = AsyncByzerLLM(settings=settings_for(redis_url), default_model_name=alias)
    try:
        async for text, _meta in llm.stream_chat_oai(query, delta_mode=True):
            out.print(text, end="", soft_wrap=True, highlight=False, markup=False)
        out.print()
    finally:
        await llm.aclose()


@click.command()
@redis_url_options
@click.argument("alias")
@click.argument("query")
def chat(redis_url: str | None, alias: str, query: str) -> None:
    """Ask ALIAS the QUERY and stream the answer."""
    run(stream_answer(redis_url, alias, query))


async def _query(redis_url: str | None, alias: str, query: str, output_file: str) -> None:
    llm = AsyncByzerLLM(settings=settings_for(redis_url), default_model_name=alias)
    try:
        [answer] = await llm.chat_oai(query)
    finally:
        await llm.aclose()
    if not output_file:
        out.print(answer.output, markup=False, highlight=False)
    elif output_file.endswith((".mp3", ".wav")):
        Path(output_file).write_bytes(base64.b64decode(answer.output))
    else:
        Path(output_file).write_text(str(answer.output))


@click.command()
@redis_url_options
@click.option("--model", required=True)
@click.option("--query", required=True)
@click.option("--template", default="auto", hidden=True, help="Accepted for compatibility.")
@click.option("--output_file", default="", help="Write the answer here (.mp3/.wav: decoded).")
def query(redis_url: str | None, model: str, query: str, template: str, output_file: str) -> None:
    """Ask --model the --query once and print (or save) the answer."""
    run(_query(redis_url, model, query, output_file))

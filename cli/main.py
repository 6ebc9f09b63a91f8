"""``byzerllm`` and ``easy-byzerllm``: each command parses flags and calls the library."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from byzerllm.broker.connection import connect
from byzerllm.broker.errors import ByzerLLMError
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.broker.state import list_aliases, read_alias_stat
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.cli.options import MultiValueOption
from byzerllm.client.llm import AsyncByzerLLM

F = TypeVar("F", bound=Callable[..., Any])
console = Console(stderr=True)
out = Console()


def redis_url_options(fn: F) -> F:
    """``--redis_url`` (and the original's ``--ray_address``, now meaning the same)."""

    @click.option(
        "--ray_address",
        default=None,
        hidden=True,
        help="Deprecated: the Redis URL, as --redis_url.",
    )
    @click.option(
        "--redis_url",
        envvar="BYZERLLM_REDIS_URL",
        default=None,
        help="Redis URL (default redis://127.0.0.1:6379/0, or BYZERLLM_REDIS_URL).",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, redis_url: str | None, ray_address: str | None, **kw: Any) -> Any:
        if ray_address and not redis_url:
            if ray_address != "auto":
                console.print(
                    "[yellow]--ray_address is now the Redis URL; prefer --redis_url[/yellow]"
                )
                redis_url = ray_address
        return fn(*args, redis_url=redis_url, **kw)

    return wrapper  # type: ignore[return-value]


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a command's coroutine; byzerllm errors become a clean CLI error."""
    try:
        import uvloop  # the "fast" extra: a quicker event loop for workers and clients
    except ImportError:
        runner: Callable[[Coroutine[Any, Any, Any]], Any] = asyncio.run
    else:
        runner = uvloop.run
    try:
        return runner(coro)
    except ByzerLLMError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="byzerllm")
def byzerllm_cli() -> None:
    """Deploy LLMs under an alias and talk to them, over Redis."""


@byzerllm_cli.command()
@redis_url_options
@click.option("--model", required=True, help="Alias the worker serves.")
@click.option("--pretrained_model_type", default="custom/auto", show_default=True)
@click.option("--infer_backend", default="", help="vllm | llama_cpp | transformers")
@click.option("--model_path", default="")
@click.option("--infer_params", cls=MultiValueOption, help="k=v ... backend parameters.")
@click.option("--worker_concurrency", default=1, show_default=True, type=click.IntRange(1))
@click.option("--cpus_per_worker", default=0.01, type=float, hidden=True)
@click.option("--gpus_per_worker", default=0.0, type=float, hidden=True)
@click.option("--num_workers", default=1, type=int, hidden=True)
@click.option("--heartbeat_interval", default=1.0, type=float, hidden=True)
@click.option("--heartbeat_ttl", default=5.0, type=float, hidden=True)
@click.option("--claim_idle", default=10.0, type=float, hidden=True)
@click.option("--log_level", default="INFO", show_default=True)
def worker(
    redis_url: str | None,
    model: str,
    pretrained_model_type: str,
    infer_backend: str,
    model_path: str,
    infer_params: tuple[str, ...],
    worker_concurrency: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    num_workers: int,
    heartbeat_interval: float,
    heartbeat_ttl: float,
    claim_idle: float,
    log_level: str,
) -> None:
    """Run one worker process serving MODEL until SIGTERM (then drain)."""
    from byzerllm.workers.runtime import WorkerTiming

    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for chatty in ("httpx", "httpx2", "httpcore", "openai"):  # a line per HTTP call
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.root.level))
    try:
        spec = DeploySpec(
            alias=model,
            pretrained_model_type=pretrained_model_type,
            infer_backend=infer_backend,
            model_path=model_path,
            infer_params=parse_infer_params(infer_params),
            worker_concurrency=worker_concurrency,
            num_workers=num_workers,
            cpus_per_worker=cpus_per_worker,
            gpus_per_worker=gpus_per_worker,
        )
        settings = BrokerSettings.from_env(redis_url)
    except (ByzerLLMError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    timing = WorkerTiming(
        heartbeat_interval=heartbeat_interval, heartbeat_ttl=heartbeat_ttl, claim_idle=claim_idle
    )
    console.print(
        f"worker for [bold]{model}[/bold] ({pretrained_model_type}) on {settings.safe_url}"
    )
    run(_serve_with_uvloop(spec, settings, timing))


async def _serve_with_uvloop(spec: DeploySpec, settings: BrokerSettings, timing: Any) -> None:
    from byzerllm.workers.runtime import serve

    await serve(spec, settings, timing)


@byzerllm_cli.command()
@redis_url_options
@click.option("--model", default=None, help="Alias to show; all aliases when omitted.")
def stat(redis_url: str | None, model: str | None) -> None:
    """Show the workers of an alias (JSON), or a table of all aliases."""
    settings = _settings(redis_url)
    run(_stat(settings, model))


async def _stat(settings: BrokerSettings, model: str | None) -> None:
    redis = await connect(settings)
    keys = Keys(settings.prefix)
    try:
        if model:
            stat = await read_alias_stat(redis, keys, model)
            if stat is None:
                raise click.ClickException(
                    f"no model is deployed under the alias {model!r}; "
                    f"known: {', '.join(await list_aliases(redis, keys)) or 'none'}"
                )
            view = stat.guide_view()
            view["waiting_requests"] = stat.waiting_requests
            view["workers"] = [
                {
                    "worker_id": w.worker_id,
                    "host": w.host,
                    "pid": w.pid,
                    "ready": w.ready,
                    "backend": w.backend,
                    "last_error": w.last_error,
                }
                for w in stat.workers
            ]
            out.print_json(json.dumps(view))
            return
        table = Table("alias", "workers", "busy", "idle", "waiting", "total requests")
        for alias in await list_aliases(redis, keys):
            s = await read_alias_stat(redis, keys, alias)
            if s is not None:
                table.add_row(
                    alias,
                    str(s.total_workers),
                    str(s.busy_workers),
                    str(s.idle_workers),
                    str(s.waiting_requests),
                    str(sum(s.total_requests)),
                )
        out.print(table)
    finally:
        await redis.aclose()


def _settings(redis_url: str | None) -> BrokerSettings:
    try:
        return BrokerSettings.from_env(redis_url)
    except ByzerLLMError as exc:
        raise click.ClickException(str(exc)) from None


async def _stream_answer(settings: BrokerSettings, alias: str, query: str) -> None:
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)
    try:
        async for text, _meta in llm.stream_chat_oai(query, delta_mode=True):
            out.print(text, end="", soft_wrap=True, highlight=False, markup=False)
        out.print()
    finally:
        await llm.aclose()


@byzerllm_cli.command()
@redis_url_options
@click.argument("alias")
@click.argument("query")
def chat(redis_url: str | None, alias: str, query: str) -> None:
    """Ask ALIAS the QUERY and stream the answer."""
    run(_stream_answer(_settings(redis_url), alias, query))


@byzerllm_cli.command()
@redis_url_options
@click.option("--model", default="quickstart_chat", show_default=True, help="Alias to deploy.")
def quickstart(redis_url: str | None, model: str) -> None:
    """Start Redis if none runs, serve a model under an alias, and talk to it."""
    from byzerllm.cli.quickstart import run_quickstart

    run(run_quickstart(redis_url, model, out))


@click.group()
def easy_byzerllm_cli() -> None:
    """Short commands for common tasks."""


@easy_byzerllm_cli.command(name="chat")
@redis_url_options
@click.argument("alias")
@click.argument("query")
def easy_chat(redis_url: str | None, alias: str, query: str) -> None:
    """Ask ALIAS the QUERY and stream the answer."""
    run(_stream_answer(_settings(redis_url), alias, query))


if __name__ == "__main__":  # pragma: no cover
    byzerllm_cli()

"""What every command shares: the Redis URL option, settings, running coroutines."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console

from byzerllm.broker.errors import ByzerLLMError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.workers.startup import run_loop

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
        help="Redis URL (default redis://127.0.0.1:6379/0, or BYZERLLM_REDIS_URL); "
        "redis+sentinel://host1:26379,host2:26379/master_name for Sentinel.",
    )
    @functools.wraps(fn)
    def wrapper(*args: Any, redis_url: str | None, ray_address: str | None, **kw: Any) -> Any:
        if ray_address and ray_address != "auto" and not redis_url:
            console.print("[yellow]--ray_address is now the Redis URL; prefer --redis_url[/yellow]")
            redis_url = ray_address
        return fn(*args, redis_url=redis_url, **kw)

    return wrapper  # type: ignore[return-value]


def settings_for(redis_url: str | None) -> BrokerSettings:
    try:
        return BrokerSettings.from_env(redis_url)
    except ByzerLLMError as exc:
        raise click.ClickException(str(exc)) from None


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a command's coroutine; byzerllm errors become a clean CLI error."""
    try:
        return run_loop(coro)
    except ByzerLLMError as exc:
        raise click.ClickException(str(exc)) from None

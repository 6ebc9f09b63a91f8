"""``byzerllm stat``: what the workers of an alias (or of all aliases) are doing."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

import click
from rich.live import Live
from rich.table import Table

from byzerllm.broker import deployments
from byzerllm.broker.connection import connect
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.state import list_aliases, read_alias_stat
from byzerllm.cli.common import out, redis_url_options, run, settings_for

if TYPE_CHECKING:  # redis is broker/'s business; here it only names types
    import redis.asyncio as aioredis


async def alias_view(redis: aioredis.Redis, keys: Keys, alias: str) -> dict[str, Any]:
    """The guide's JSON fields, then deployment state and per-worker details."""
    stat = await read_alias_stat(redis, keys, alias)
    if stat is None:
        known = ", ".join(await list_aliases(redis, keys)) or "none"
        raise click.ClickException(
            f"no model is deployed under the alias {alias!r}; known: {known}"
        )
    view = stat.guide_view()
    info = await deployments.info(redis, keys, alias) or {}
    view["deploy_state"] = info.get("state", "unmanaged")
    view["last_error"] = info.get("last_error", "")
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
    return view


async def table(redis: aioredis.Redis, keys: Keys) -> Table:
    grid = Table("alias", "state", "workers", "busy", "idle", "waiting", "total requests")
    for alias in await list_aliases(redis, keys):
        s = await read_alias_stat(redis, keys, alias)
        info = await deployments.info(redis, keys, alias) or {}
        if s is not None:
            grid.add_row(
                alias,
                info.get("state", "unmanaged"),
                str(s.total_workers),
                str(s.busy_workers),
                str(s.idle_workers),
                str(s.waiting_requests),
                str(sum(s.total_requests)),
            )
    return grid


async def _stat(settings: BrokerSettings, model: str | None, interval: float) -> None:
    redis = await connect(settings)
    keys = Keys(settings.prefix)
    try:
        if not interval:
            if model:
                out.print_json(json.dumps(await alias_view(redis, keys, model)))
            else:
                out.print(await table(redis, keys))
            return
        with Live(console=out, auto_refresh=False) as live:
            while True:
                if model:
                    view = json.dumps(await alias_view(redis, keys, model), indent=2)
                    live.update(view, refresh=True)
                else:
                    live.update(await table(redis, keys), refresh=True)
                await asyncio.sleep(interval)
    finally:
        await redis.aclose()


@click.command()
@redis_url_options
@click.option("--model", default=None, help="Alias to show; all aliases when omitted.")
@click.option("--interval", default=0.0, help="Refresh every N seconds (0: once).")
@click.option("--watch", is_flag=True, help="Refresh every second until Ctrl-C.")
def stat(redis_url: str | None, model: str | None, interval: float, watch: bool) -> None:
    """Show the workers of an alias (JSON), or a table of all aliases."""
    try:
        run(_stat(settings_for(redis_url), model, interval or (1.0 if watch else 0.0)))
    except KeyboardInterrupt:
        pass

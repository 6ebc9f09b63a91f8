"""``byzerllm keys``: the gateway's API keys (create, list, revoke, delete, usage).

A key is printed once, by ``create``, on stdout alone (so ``KEY=$(byzerllm keys
create --name x)`` works); Redis keeps only its digest, so nothing can show it
again. Everything else prints names and a short hint of the key, never the key.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from rich.table import Table

from byzerllm.broker.api_keys import ApiKeyRecord, ApiKeys
from byzerllm.broker.connection import connect, redis_errors
from byzerllm.broker.keys import Keys
from byzerllm.cli.common import console, out, redis_url_options, run, settings_for

T = TypeVar("T")


def _with_keys(redis_url: str | None, work: Callable[[ApiKeys], Awaitable[T]]) -> T:
    settings = settings_for(redis_url)

    async def go() -> T:
        redis = await connect(settings)
        try:
            with redis_errors(settings):
                return await work(ApiKeys(redis, Keys(settings.prefix)))
        finally:
            await redis.aclose()

    result: T = run(go())
    return result


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(epoch))


def _limit(value: int) -> str:
    return str(value) if value else "none"


def _aliases(text: str) -> list[str]:
    return [a.strip() for a in text.split(",") if a.strip()]


@click.group()
def keys() -> None:
    """API keys of the gateway (byzerllm serve): hashed in Redis, with limits and usage."""


@keys.command()
@redis_url_options
@click.option("--name", required=True, help="A name for the key: who or what uses it.")
@click.option(
    "--aliases",
    default="",
    help="Comma-separated aliases the key may use, e.g. chat,emb [default: every alias].",
)
@click.option("--rpm", default=0, type=int, help="Requests per minute [default: 0, no limit].")
@click.option(
    "--tpm",
    default=0,
    type=int,
    help="Prompt + completion tokens per minute [default: 0, no limit].",
)
def create(redis_url: str | None, name: str, aliases: str, rpm: int, tpm: int) -> None:
    """Make a key and print it, once: Redis keeps only its hash."""
    key, record = _with_keys(
        redis_url, lambda store: store.create(name, _aliases(aliases), rpm=rpm, tpm=tpm)
    )
    click.echo(key)
    allowed = ", ".join(record.aliases) or "every alias"
    console.print(
        f"API key {record.name!r} created (aliases: {allowed}; rpm: {_limit(record.rpm)}; "
        f"tpm: {_limit(record.tpm)}).\n"
        "It is shown this once and cannot be shown again: store it now. Clients send it "
        "as their API key (Authorization: Bearer <key>)."
    )


def _state(record: ApiKeyRecord) -> str:
    return "active" if record.active else f"revoked {_when(record.revoked)}"


@keys.command(name="list")
@redis_url_options
def list_keys(redis_url: str | None) -> None:
    """The keys: name, a hint of the key, aliases, limits, state (never the key)."""
    records = _with_keys(redis_url, lambda store: store.records())
    if not records:
        console.print("no API keys yet; make one with: byzerllm keys create --name NAME")
        return
    grid = Table("name", "key", "aliases", "rpm", "tpm", "created", "state")
    for r in records:
        grid.add_row(
            r.name,
            f"{r.hint}…",
            ", ".join(r.aliases) or "all",
            _limit(r.rpm),
            _limit(r.tpm),
            _when(r.created),
            _state(r),
        )
    out.print(grid)


@keys.command()
@redis_url_options
@click.argument("name")
def revoke(redis_url: str | None, name: str) -> None:
    """Revoke the key NAME: every gateway refuses it from its next request."""
    record, was_active = _with_keys(redis_url, lambda store: store.revoke(name))
    if was_active:
        console.print(f"API key {record.name!r} revoked")
    else:
        console.print(f"API key {record.name!r} was already revoked ({_when(record.revoked)})")


@keys.command()
@redis_url_options
@click.argument("name")
def delete(redis_url: str | None, name: str) -> None:
    """Delete the revoked key NAME with its usage; the name can then be used again."""
    record = _with_keys(redis_url, lambda store: store.delete(name))
    console.print(f"API key {record.name!r} deleted, with its usage")


@keys.command()
@redis_url_options
@click.option("--name", default=None, help="The key to show [default: every key].")
@click.option(
    "--days", default=7, show_default=True, type=int, help="Days back, today (UTC) included."
)
def usage(redis_url: str | None, name: str | None, days: int) -> None:
    """Requests, tokens and errors per key per day (UTC)."""
    rows = _with_keys(redis_url, lambda store: store.usage(name, days))
    if not rows:
        console.print(f"no requests in the last {days} day(s)")
        return
    grid = Table(
        "name", "day", "requests", "input tokens", "output tokens", "errors", "rate limited"
    )
    for row in rows:
        grid.add_row(
            row.name,
            row.day,
            str(row.requests),
            str(row.input_tokens),
            str(row.output_tokens),
            str(row.errors),
            str(row.rate_limited),
        )
    out.print(grid)

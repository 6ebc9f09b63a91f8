"""``byzerllm worker``: one worker process for an alias."""

from __future__ import annotations

from typing import cast

import click

from byzerllm.broker.errors import ByzerLLMError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.common import console, redis_url_options, run, settings_for
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.cli.options import MultiValueOption, deploy_options
from byzerllm.workers.registry import backend_class


@click.command()
@redis_url_options
@deploy_options(model_required=True)
@click.option(
    "--from_redis",
    is_flag=True,
    hidden=True,
    help="Load the deployed spec (and its sealed secrets) from Redis.",
)
@click.option("--heartbeat_interval", default=1.0, type=float, hidden=True)
@click.option("--heartbeat_ttl", default=5.0, type=float, hidden=True)
@click.option("--claim_idle", default=10.0, type=float, hidden=True)
@click.option("--log_level", default="INFO", show_default=True)
def worker(
    redis_url: str | None,
    from_redis: bool,
    heartbeat_interval: float,
    heartbeat_ttl: float,
    claim_idle: float,
    log_level: str,
    **flags: object,
) -> None:
    """Run one worker process serving --model until SIGTERM (then drain)."""
    from byzerllm.workers.runtime import WorkerTiming, serve
    from byzerllm.workers.startup import configure_logging

    configure_logging(log_level)
    settings = settings_for(redis_url)
    alias = str(flags["model"])
    spec = None if from_redis else spec_from_flags(flags)
    timing = WorkerTiming(
        heartbeat_interval=heartbeat_interval, heartbeat_ttl=heartbeat_ttl, claim_idle=claim_idle
    )
    console.print(f"worker for [bold]{alias}[/bold] on {settings.safe_url}")
    run(serve(spec, settings, timing, alias=alias))


def _concurrency(flags: dict[str, object]) -> int:
    """The flag, else the backend's own default: a batching engine (vLLM) wants
    many requests in flight, where a one-at-a-time model wants one."""
    given = flags.get("worker_concurrency")
    if given is not None:
        return int(given)  # type: ignore[call-overload]
    try:
        cls = backend_class(
            str(flags["pretrained_model_type"]), str(flags.get("infer_backend") or "")
        )
    except ByzerLLMError:
        return 1  # the deploy reports the unknown type itself, with the known ones
    return cls.default_concurrency


def spec_from_flags(flags: dict[str, object]) -> DeploySpec:
    """The guide's deploy flags as a spec; bad values become a clean CLI error.
    ``infer_params`` is the option's ``k=v`` tokens, or a mapping already parsed
    (a deploy file's, merged with the command line's)."""
    raw = flags.get("infer_params") or ()
    try:
        return DeploySpec(
            alias=str(flags["model"]),
            pretrained_model_type=str(flags["pretrained_model_type"]),
            infer_backend=str(flags.get("infer_backend") or ""),
            model_path=str(flags.get("model_path") or ""),
            infer_params=dict(raw)
            if isinstance(raw, dict)
            else parse_infer_params(cast(tuple[str, ...], raw)),
            worker_concurrency=_concurrency(flags),
            num_workers=int(flags["num_workers"]),  # type: ignore[call-overload]
            cpus_per_worker=float(flags["cpus_per_worker"]),  # type: ignore[arg-type]
            gpus_per_worker=float(flags["gpus_per_worker"]),  # type: ignore[arg-type]
        )
    except (ByzerLLMError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


__all__ = ["MultiValueOption", "spec_from_flags", "worker"]

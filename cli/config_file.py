"""``byzerllm deploy --file config.yaml``: the deploy options from a YAML file.

The file's keys are the command's options without their dashes: ``model``,
``pretrained_model_type``, ``infer_backend``, ``model_path``,
``infer_params`` (a mapping, or ``k=v ...`` text as on the command line),
``num_workers``, ``worker_concurrency``, ``cpus_per_worker``,
``gpus_per_worker``, ``timeout``, and ``redis_url`` (or the original's
``ray_address``). An option given on the command line wins over the file;
``--infer_params`` wins key by key, so a file can hold a deployment and the
command line change one parameter of it. ``redis_url`` in the file wins over
``BYZERLLM_REDIS_URL``: the file names its cluster, the environment is a default.

A string value written ``ENV <template>`` is rendered with the environment,
the original byzerllm's syntax: ``saas.api_key: ENV {{DEEPSEEK_API_KEY}}``,
``saas.base_url: ENV https://{{HOST}}/v1``. The template is Jinja2 (sandboxed)
over the environment variables; one that is not set is an error naming it,
where the original rendered it as empty text. Values read from the
environment are typed as the command line types them (``n_ctx: ENV
{{N_CTX}}`` is a number). Errors name the file, the key and the variable,
never a value: the file may hold secrets, and so may the environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from byzerllm.broker.errors import ByzerLLMError
from byzerllm.cli.infer_params import param_value, parse_infer_params

SPEC_KEYS = (
    "model",
    "pretrained_model_type",
    "infer_backend",
    "model_path",
    "infer_params",
    "num_workers",
    "worker_concurrency",
    "cpus_per_worker",
    "gpus_per_worker",
)
OTHER_KEYS = ("timeout", "redis_url", "ray_address")
_IGNORED = ("file",)  # the original skipped a file's own "file" key too
_ENV_VALUE = re.compile(r"ENV(?:\s+(.*))?", re.DOTALL)
_UNDEFINED = re.compile(r"'([^']+)' is undefined")


class DeployFile:
    """A deploy file, read and expanded: ``values`` by key, ``infer_params`` apart."""

    def __init__(self, path: str, values: dict[str, Any], infer_params: dict[str, Any]) -> None:
        self.path = path
        self.values = values
        self.infer_params = infer_params

    @classmethod
    def read(cls, path: str) -> DeployFile:
        import yaml  # only this option needs it

        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise click.ClickException(f"cannot read --file {path}: {reason}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise click.ClickException(f"{path} is not valid YAML: {_yaml_problem(exc)}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise click.ClickException(
                f"{path} must be a mapping of option: value (e.g. `model: deepseek_chat`), "
                f"not a {type(data).__name__}"
            )
        known = (*SPEC_KEYS, *OTHER_KEYS)
        unknown = [str(k) for k in data if k not in known and k not in _IGNORED]
        if unknown:
            raise click.ClickException(
                f"{path}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                f"a deploy file takes {', '.join(known)}"
            )
        values = {
            key: _expand(value, path, key)
            for key, value in data.items()
            if key not in _IGNORED and key != "infer_params"
        }
        return cls(path, values, _infer_params(data.get("infer_params"), path))

    def apply(
        self, ctx: click.Context, flags: dict[str, Any], redis_url: str | None
    ) -> tuple[dict[str, Any], str | None]:
        """The command's flags and Redis URL with the file's values where the command
        line gave none; ``flags["infer_params"]`` becomes the merged mapping."""
        merged = dict(flags)
        params = {p.name: p for p in ctx.command.params}
        for key, value in self.values.items():
            if key in ("redis_url", "ray_address"):
                continue
            if ctx.get_parameter_source(key) is ParameterSource.COMMANDLINE:
                continue
            try:
                merged[key] = params[key].type_cast_value(ctx, value)
            except click.BadParameter as exc:
                raise click.ClickException(f"{self.path}: {key}: {exc.message}") from None
        try:
            given = parse_infer_params(tuple(flags.get("infer_params") or ()))
        except ByzerLLMError as exc:
            raise click.ClickException(str(exc)) from None
        merged["infer_params"] = {**self.infer_params, **given}
        on_command_line = any(
            ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
            for name in ("redis_url", "ray_address")
        )
        from_file = self.values.get("redis_url") or self.values.get("ray_address")
        if from_file and not on_command_line:
            redis_url = str(from_file)
        return merged, redis_url


def _infer_params(raw: Any, path: str) -> dict[str, Any]:
    """A mapping as it is (ENV values expanded and typed); text or a list as
    ``--infer_params`` tokens."""
    where = "infer_params"
    if raw is None:
        return {}
    if isinstance(raw, dict):
        params: dict[str, Any] = {}
        for key, value in raw.items():
            name = str(key)
            template = _env_template(value)
            if template is not None:
                params[name] = param_value(name, _render(template, path, f"{where}.{name}"))
            else:
                params[name] = _expand(value, path, f"{where}.{name}")
        return params
    tokens = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(t, str) for t in tokens):
        raise click.ClickException(
            f"{path}: {where} must be a mapping (saas.model: deepseek-chat) or k=v text"
        )
    try:
        return parse_infer_params([_expand(t, path, where) for t in tokens])
    except ByzerLLMError as exc:
        raise click.ClickException(f"{path}: {exc}") from None


def _env_template(value: Any) -> str | None:
    """The template of an ``ENV ...`` value; None for any other value."""
    if not isinstance(value, str):
        return None
    match = _ENV_VALUE.fullmatch(value)
    return None if match is None else (match.group(1) or "").strip()


def _expand(value: Any, path: str, where: str) -> Any:
    """``value`` with every ``ENV ...`` string in it rendered."""
    template = _env_template(value)
    if template is not None:
        return _render(template, path, where)
    if isinstance(value, dict):
        return {k: _expand(v, path, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def _render(template: str, path: str, where: str) -> str:
    from jinja2 import StrictUndefined, TemplateError, UndefinedError
    from jinja2.sandbox import SandboxedEnvironment

    environment = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
    try:
        return environment.from_string(template).render(dict(os.environ))
    except UndefinedError as exc:
        found = _UNDEFINED.search(str(exc))
        name = found.group(1) if found else "a variable it names"
        raise click.ClickException(
            f"{path}: {where} reads environment variable {name}, which is not set "
            f"(ENV {{{{{name}}}}}); export it or change the value"
        ) from None
    except TemplateError as exc:
        raise click.ClickException(
            f"{path}: {where}: not a usable ENV template ({(exc.message or '').rstrip('.')}); "
            "write e.g. "
            "ENV {{DEEPSEEK_API_KEY}}"
        ) from None


def _yaml_problem(exc: Exception) -> str:
    """Where and what, without the snippet of the line PyYAML would quote (a secret's)."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return str(problem)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"

"""The original's chainable ``setup_*`` methods, shared by both clients.

Code written for the original configures a client per model before it
calls it (auto-coder does so for every model it uses):
``llm.setup_extra_generation_params("m", {...}).setup_max_output_length("m", 4096)``,
sub-clients by name, and the resources of the next ``llm.deploy(...)``.
:class:`ClientSetup` holds that state; ``AsyncByzerLLM`` owns one, and the
synchronous ``ByzerLLM`` shares its async core's, so a setting made on
either applies to calls made through both.

What each setting does here:

- extra generation params and the max output length are merged into every
  request's ``llm_config`` for that model (the request's own values win);
- role mappings and max input/model lengths are recorded and readable
  (``get_*``): every backend here takes messages and applies the model's own
  chat template, so a role mapping changes no request;
- ``setup_gpus_per_worker`` and the like shape the spec of ``deploy``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.spec import check_alias

# the original's names for backends that are called otherwise here
_BACKEND_NAMES = {"ray/vllm": "vllm", "ray/llama_cpp": "llama_cpp", "ray/transformers": ""}


@dataclass
class ModelSettings:
    """Per-model request settings and the next deployment's resources."""

    extra_generation_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_output_length: dict[str, int] = field(default_factory=dict)
    max_input_length: dict[str, int] = field(default_factory=dict)
    max_model_length: dict[str, int] = field(default_factory=dict)
    role_mapping: dict[str, dict[str, Any]] = field(default_factory=dict)
    deploy: dict[str, Any] = field(default_factory=dict)  # num_workers, gpus_per_worker, ...
    sub_clients: dict[str, Any] = field(default_factory=dict)

    def llm_config(self, model: str, llm_config: dict[str, Any]) -> dict[str, Any]:
        """``llm_config`` over the model's defaults (itself when there are none)."""
        extra = self.extra_generation_params.get(model)
        limit = self.max_output_length.get(model)
        if extra is None and limit is None:
            return llm_config
        merged = dict(extra or {})
        if limit is not None:
            merged["max_length"] = limit
        merged.update(llm_config)
        return merged


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive whole number, not {value!r}")
    return value


class ClientSetup:
    """Mixin: the ``setup_*`` / ``get_*`` methods over ``self.model_settings``."""

    @property
    def model_settings(self) -> ModelSettings:
        raise NotImplementedError

    # -- per-model request settings ----------------------------------------------------

    def setup_extra_generation_params(self, model: str, params: dict[str, Any]) -> Self:
        """Generation settings sent with every request to ``model`` (merged with earlier ones)."""
        if not isinstance(params, dict):
            raise ConfigurationError(
                f"extra generation params for {model!r} must be a dict such as "
                f"{{'temperature': 0.2}}, not {type(params).__name__}"
            )
        table = self.model_settings.extra_generation_params
        table[check_alias(model)] = {**table.get(model, {}), **params}
        return self

    def setup_max_output_length(self, model: str, max_output_length: int) -> Self:
        """``max_length`` of every request to ``model`` unless the request sets its own."""
        length = _positive("max_output_length", max_output_length)
        self.model_settings.max_output_length[check_alias(model)] = length
        return self

    def setup_max_input_length(self, model: str, max_input_length: int) -> Self:
        length = _positive("max_input_length", max_input_length)
        self.model_settings.max_input_length[check_alias(model)] = length
        return self

    def setup_max_model_length(self, model: str, max_model_length: int) -> Self:
        length = _positive("max_model_length", max_model_length)
        self.model_settings.max_model_length[check_alias(model)] = length
        return self

    def setup_role_mapping(self, model: str, role_mapping: dict[str, Any]) -> Self:
        """Recorded for the original's callers; backends here apply the model's own template."""
        self.model_settings.role_mapping[check_alias(model)] = dict(role_mapping)
        return self

    def get_max_output_length(self, model: str) -> int | None:
        return self.model_settings.max_output_length.get(model)

    def get_max_input_length(self, model: str) -> int | None:
        return self.model_settings.max_input_length.get(model)

    def get_max_model_length(self, model: str) -> int | None:
        return self.model_settings.max_model_length.get(model)

    def get_role_mapping(self, model: str) -> dict[str, Any] | None:
        return self.model_settings.role_mapping.get(model)

    # -- sub-clients ---------------------------------------------------------------------

    def setup_sub_client(self, client_name: str, client: Any = None) -> Self:
        """Keep another client under a name (auto-coder keeps one per task this way)."""
        self.model_settings.sub_clients[client_name] = client
        return self

    def get_sub_client(self, client_name: str) -> Any:
        return self.model_settings.sub_clients.get(client_name)

    def remove_sub_client(self, client_name: str) -> Self:
        self.model_settings.sub_clients.pop(client_name, None)
        return self

    # -- resources of the next deploy ----------------------------------------------------

    def _deploy_setting(self, name: str, value: Any) -> Self:
        self.model_settings.deploy[name] = value
        return self

    def setup_num_workers(self, num_workers: int) -> Self:
        return self._deploy_setting("num_workers", _positive("num_workers", num_workers))

    def setup_worker_concurrency(self, num: int) -> Self:
        return self._deploy_setting("worker_concurrency", _positive("worker_concurrency", num))

    def setup_gpus_per_worker(self, num_gpus: float) -> Self:
        return self._deploy_setting("gpus_per_worker", _non_negative("gpus_per_worker", num_gpus))

    def setup_cpus_per_worker(self, num_cpus: float) -> Self:
        return self._deploy_setting("cpus_per_worker", _non_negative("cpus_per_worker", num_cpus))

    def setup_infer_backend(self, backend: str) -> Self:
        """``transformers``, ``vllm``, ``llama_cpp`` (the original's ``ray/vllm`` too)."""
        return self._deploy_setting("infer_backend", _BACKEND_NAMES.get(backend, backend))

    def setup(self, name: str, value: Any) -> Self:
        """The original's generic setting; the deploy resources it had are mapped."""
        known: dict[str, Callable[[Any], Any]] = {
            "num_gpus": self.setup_gpus_per_worker,
            "num_cpus": self.setup_cpus_per_worker,
            "maxConcurrency": self.setup_num_workers,
            "workerMaxConcurrency": self.setup_worker_concurrency,
            "infer_backend": self.setup_infer_backend,
        }
        if name in known:
            known[name](value)
        return self

    def setup_reset(self) -> Self:
        """Forget the deploy resources set so far."""
        self.model_settings.deploy.clear()
        return self


def _non_negative(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigurationError(f"{name} must be a number of at least 0, not {value!r}")
    return float(value)

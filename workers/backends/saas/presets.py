"""The original byzerllm's SaaS vendors, as presets of ``saas/openai``.

The original had a backend per vendor, most built on the vendor's own SDK
(zhipuai, qianfan, google-generativeai, a websocket client for Spark, ...).
Each of these vendors now also serves OpenAI's ``/chat/completions`` with a
bearer key, so a vendor here is data, not code: a row of :data:`PRESETS`
names its default base URL and the quirks it needs as defaults of
:class:`OpenAIOptions`, and :class:`PresetOpenAIBackend` (``saas/openai``
with the row applied) serves every row. What a deployment says explicitly
wins over the row: ``saas.base_url`` pointing at a gateway, a proxy or a test
server, or any other ``saas.*`` key.

Adding a vendor takes a row here and an entry point of the same name in
pyproject.toml (``byzerllm.backends``), which is how workers find types;
tests check that the two agree and that docs/saas-backends.md lists the row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from byzerllm.broker.errors import BackendLoadError, ConfigurationError, InvalidInferParamsError
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backends.saas.connection import check_connection
from byzerllm.workers.backends.saas.openai import (
    DEFAULT_BASE_URL,
    OpenAIBackend,
    OpenAIOptions,
    _key,
)


@dataclass(frozen=True)
class Preset:
    """One vendor: where its OpenAI-compatible API is and what it needs."""

    vendor: str
    base_url: str
    # a model name for error messages; vendors rename models often, so
    # saas.model is still required rather than defaulted
    example_model: str
    # further saas.* defaults for this vendor (its quirks)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # keys of the original's SDK-based backend for this vendor, each with what
    # to give instead: refused with that advice rather than "unknown key"
    original_keys: Mapping[str, str] = field(default_factory=dict)

    def infer_params(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """``given`` over the preset's defaults; an empty value of a key the
        preset sets counts as not given (``saas.base_url=""`` is the vendor's)."""
        defaults: dict[str, Any] = {"saas.base_url": self.base_url, **self.defaults}
        spellings = {alias: {alias, _field_name(alias)} for alias in defaults}
        merged = {
            alias: value
            for alias, value in defaults.items()
            if all(given.get(key) in (None, "") for key in spellings[alias])
        }
        preset_keys = set().union(*spellings.values())
        merged.update(
            (k, v) for k, v in given.items() if not (v in (None, "") and k in preset_keys)
        )
        return merged


def _field_name(alias: str) -> str:
    """The option's field name for a ``saas.*`` alias: either spelling is accepted."""
    return next((n for n, f in OpenAIOptions.model_fields.items() if f.alias == alias), alias)


_QIANFAN_KEY = (
    "Qianfan's v2 API takes one bearer API key (bce-v3/ALTAK-...) as saas.api_key; "
    "the v1 access key / secret key pair and access tokens are not supported"
)
_SPARK_KEY = (
    "Spark's HTTP API takes the console's APIPassword as saas.api_key and the model "
    "(the websocket API's domain) as saas.model, e.g. generalv3.5; app id, API secret and "
    "websocket URL are not used"
)

PRESETS: dict[str, Preset] = {
    "saas/deepseek": Preset(
        "DeepSeek",
        "https://api.deepseek.com/v1",
        "deepseek-chat",
        # deepseek-reasoner reads max_tokens, not max_completion_tokens
        {"saas.prefix_style": "deepseek", "saas.max_tokens_field": "max_tokens"},
    ),
    "saas/siliconflow": Preset(
        "SiliconFlow",
        "https://api.siliconflow.cn/v1",
        "deepseek-ai/DeepSeek-V3",
        {"saas.prefix_style": "siliconflow", "saas.max_tokens_field": "max_tokens"},
    ),
    "saas/moonshot": Preset("Moonshot AI (Kimi)", "https://api.moonshot.cn/v1", "moonshot-v1-8k"),
    "saas/kimi": Preset("Moonshot AI (Kimi)", "https://api.moonshot.cn/v1", "moonshot-v1-8k"),
    "saas/zhipu": Preset("Zhipu AI (GLM)", "https://open.bigmodel.cn/api/paas/v4", "glm-4-flash"),
    "saas/baichuan": Preset(
        "Baichuan",
        "https://api.baichuan-ai.com/v1",
        "Baichuan4-Turbo",
        original_keys={
            "saas.baichuan_api_url": "give the API's base URL as saas.base_url "
            "(default https://api.baichuan-ai.com/v1), without /chat/completions",
        },
    ),
    "saas/minimax": Preset(
        "MiniMax",
        "https://api.minimaxi.com/v1",
        "MiniMax-Text-01",
        original_keys={
            "saas.group_id": "MiniMax's OpenAI-compatible API needs no group id: drop it",
            "saas.api_url": "give the API's base URL as saas.base_url (default "
            "https://api.minimaxi.com/v1; outside China https://api.minimax.io/v1)",
        },
    ),
    "saas/qianfan": Preset(
        "Baidu Qianfan",
        "https://qianfan.baidubce.com/v2",
        "ernie-4.0-turbo-8k",
        original_keys={"saas.secret_key": _QIANFAN_KEY, "saas.access_token": _QIANFAN_KEY},
    ),
    "saas/gemini": Preset(
        "Google Gemini",
        "https://generativelanguage.googleapis.com/v1beta/openai",
        "gemini-2.0-flash",
    ),
    "saas/sparkdesk": Preset(
        "iFlytek Spark",
        "https://spark-api-open.xf-yun.com/v1",
        "generalv3.5",
        original_keys={
            "saas.appid": _SPARK_KEY,
            "saas.api_secret": _SPARK_KEY,
            "saas.gpt_url": _SPARK_KEY,
            "saas.domain": _SPARK_KEY,
        },
    ),
    # the original's saas/reasoning_openai: OpenAI's API without sampling settings
    "saas/reasoning_openai": Preset(
        "OpenAI (reasoning models)", DEFAULT_BASE_URL, "o3-mini", {"saas.is_reasoning": True}
    ),
}


def preset_for(pretrained_model_type: str) -> Preset:
    preset = PRESETS.get(pretrained_model_type)
    if preset is None:
        raise BackendLoadError(
            f"{pretrained_model_type} is registered as an OpenAI-compatible preset but "
            f"byzerllm.workers.backends.saas.presets has no row for it; known: "
            f"{', '.join(sorted(PRESETS))}"
        )
    return preset


class PresetOpenAIBackend(OpenAIBackend):
    """``saas/openai`` with a vendor's row of :data:`PRESETS` applied; the spec's
    pretrained_model_type picks the row, so one class serves every vendor."""

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> OpenAIOptions:
        """The row's defaults under the spec's own params, then the checks of
        ``saas/openai`` worded for the vendor (its model names, its key)."""
        preset = preset_for(spec.pretrained_model_type)
        where = f"{spec.pretrained_model_type} ({spec.alias})"
        _refuse_original_keys(preset, spec)
        merged = spec.model_copy(update={"infer_params": preset.infer_params(spec.infer_params)})
        # the generic parse (unknown keys, values) without saas/openai's own
        # checks, which would name OpenAI's models and key
        options: OpenAIOptions = super(OpenAIBackend, cls).parse_options(merged)
        if not options.model.strip():
            raise ConfigurationError(
                f"{where} needs saas.model, the {preset.vendor} model name, "
                f"e.g. --infer_params saas.model={preset.example_model}"
            )
        vendor_host = urlsplit(preset.base_url).hostname
        if not _key(options) and urlsplit(options.base_url).hostname == vendor_host:
            raise ConfigurationError(
                f"{where} needs saas.api_key, the {preset.vendor} API key, "
                "e.g. --infer_params saas.api_key=..."
            )
        cls.check_options(options, where)
        check_connection(options, where)
        return options

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "vendor": preset_for(self.name).vendor}


def _refuse_original_keys(preset: Preset, spec: DeploySpec) -> None:
    """The original's SDK-era keys for this vendor, refused with what to use now."""
    problems = [
        f"{key!r} was the original byzerllm's {preset.vendor} SDK setting: {advice}"
        for key, advice in preset.original_keys.items()
        if key in spec.infer_params
    ]
    if problems:
        raise InvalidInferParamsError(
            f"{spec.alias}: {'; '.join(problems)} (this type speaks {preset.vendor}'s "
            "OpenAI-compatible API)"
        )

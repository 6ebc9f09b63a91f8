"""A deployment spec: what runs under an alias, as stored in Redis.

Secrets in ``infer_params`` (API keys and the like) never reach Redis in
plain text: :meth:`DeploySpec.public_hash` masks them, and only the processes
that were handed the spec directly hold the real values.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from byzerllm.broker.errors import ConfigurationError

_ALIAS = re.compile(r"^[A-Za-z0-9_.\-:/@]{1,128}$")
_SECRET_PARTS = ("api_key", "apikey", "secret", "token", "password", "access_key", "credential")
MASK = "******"


def is_secret_key(key: str) -> bool:
    # "token" names a secret (access_token, hf_token), "tokens" a count
    # (saas.max_output_tokens), which stat and deploy should show
    lowered = key.lower().replace("tokens", "")
    return any(part in lowered for part in _SECRET_PARTS)


def mask_params(params: dict[str, Any]) -> dict[str, Any]:
    """A copy with every secret-looking value replaced by a mask, and the
    password of any URL in a value (a proxy's: ``http://user:pw@host``) too."""
    return {
        k: (MASK if is_secret_key(k) and v not in (None, "") else _url_passwords_masked(v))
        for k, v in params.items()
    }


# scheme://user:password@ in plain text or JSON text (saas.proxies='{"https": "..."}')
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@\"']*:)[^\s/\"']*@")


def _url_passwords_masked(value: Any) -> Any:
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", value)
    if isinstance(value, dict):
        return {k: _url_passwords_masked(v) for k, v in value.items()}
    return value


def check_alias(alias: str) -> str:
    if not _ALIAS.match(alias or ""):
        raise ConfigurationError(
            f"bad model alias {alias!r}: use 1-128 letters, digits or _ . - : / @ "
            "(no spaces or braces), e.g. deepseek_chat"
        )
    return alias


class DeploySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alias: str
    pretrained_model_type: str = "custom/auto"
    infer_backend: str = ""
    model_path: str = ""
    infer_params: dict[str, Any] = Field(default_factory=dict)
    worker_concurrency: int = Field(default=1, gt=0)
    num_workers: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=0.01, ge=0)
    gpus_per_worker: float = Field(default=0, ge=0)

    @field_validator("alias")
    @classmethod
    def _alias(cls, value: str) -> str:
        return check_alias(value)

    def public_hash(self, max_waiting: int | None = None) -> dict[str, str]:
        """The spec as stored in the alias' spec hash, secrets masked."""
        data = {
            "alias": self.alias,
            "pretrained_model_type": self.pretrained_model_type,
            "infer_backend": self.infer_backend,
            "model_path": self.model_path,
            "infer_params": json.dumps(mask_params(self.infer_params), ensure_ascii=False),
            "worker_concurrency": str(self.worker_concurrency),
            "num_workers": str(self.num_workers),
            "cpus_per_worker": str(self.cpus_per_worker),
            "gpus_per_worker": str(self.gpus_per_worker),
        }
        if max_waiting is not None:
            data["max_waiting"] = str(max_waiting)
        return data


OpenAIMediaKind = Literal["transcribe", "speech", "image"]

_OPENAI_MEDIA_PREFIXES: tuple[tuple[str, OpenAIMediaKind], ...] = (
    ("whisper", "transcribe"),
    ("gpt-4o-transcribe", "transcribe"),
    ("gpt-4o-mini-transcribe", "transcribe"),
    ("tts", "speech"),
    ("gpt-4o-mini-tts", "speech"),
    ("dall-e", "image"),
    ("gpt-image", "image"),
)


def openai_media_kind(model: str) -> OpenAIMediaKind | None:
    """Which of OpenAI's non-chat models ``saas.model`` names, by its prefix (None: a
    chat model). The worker routes requests by it; the gateway refuses a media
    request to an alias of the wrong kind by it, before any worker sees it."""
    name = model.lower()
    return next((kind for prefix, kind in _OPENAI_MEDIA_PREFIXES if name.startswith(prefix)), None)

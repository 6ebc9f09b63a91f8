"""Parsing ``--infer_params k=v ...`` the way the guide writes them.

Each token is ``key=value``, split at the first ``=`` (values may hold more
``=`` and URLs). Keys keep their dots (``saas.base_url``) because backends
read them flat. ``true``/``false`` become booleans and plain numbers become
numbers, except for keys that name secrets, ids or models, which stay text.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from byzerllm.broker.errors import InvalidInferParamsError
from byzerllm.broker.spec import is_secret_key

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_TEXT_SUFFIXES = ("model", "_id", "version", "name", "path", "voice", "region", "endpoint")


def _keeps_text(key: str) -> bool:
    """Ids, versions and names that look like numbers are still names."""
    last = key.rsplit(".", 1)[-1].lower()
    return is_secret_key(key) or last.endswith(_TEXT_SUFFIXES)


def param_value(key: str, raw: str) -> Any:
    """The value of ``key=raw`` as the command line reads it (a deploy file's
    ``ENV`` values too): quoted text stays text, numbers and booleans are typed."""
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "\"'":
        return raw[1:-1]
    if _keeps_text(key):
        return raw
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if _INT.match(raw):
        return int(raw)
    if _FLOAT.match(raw):
        return float(raw)
    return raw


def _split_token(token: str) -> list[str]:
    """A quoted ``"a=1 b=2"`` holds several params; ``prefix=you said`` holds one."""
    if " " not in token.strip():
        return [token]
    try:
        parts = shlex.split(token)
    except ValueError:
        return [token]
    if all("=" in p and _KEY.match(p.split("=", 1)[0]) for p in parts):
        return parts
    return [token]


def parse_infer_params(tokens: list[str] | tuple[str, ...] | str) -> dict[str, Any]:
    """``["saas.api_key=x", "n_ctx=4096"]`` -> ``{"saas.api_key": "x", "n_ctx": 4096}``."""
    if isinstance(tokens, str):
        tokens = [tokens]
    params: dict[str, Any] = {}
    for token in tokens:
        for part in _split_token(token):
            if "=" not in part:
                raise InvalidInferParamsError(
                    f"bad --infer_params token {part!r}: expected key=value, "
                    "e.g. saas.model=deepseek-chat"
                )
            key, raw = part.split("=", 1)
            key = key.strip()
            if not _KEY.match(key):
                raise InvalidInferParamsError(
                    f"bad --infer_params key {key!r} in {part!r}: use letters, digits, _ . -, "
                    "e.g. saas.base_url=https://api.deepseek.com/v1"
                )
            params[key] = param_value(key, raw)
    return params

"""Reading a request's ``llm_config`` the same way in every backend, SaaS or local.

The original clients send numbers as text, stop lists as JSON text and the
same setting under several names (``max_length``/``max_tokens``); each
vendor backend needs the one reading, and a bad value is the caller's
:class:`ConfigurationError`, never a vendor round trip.
"""

from __future__ import annotations

import json
from typing import Any

from byzerllm.broker.errors import ConfigurationError


def first(config: dict[str, Any], *names: str, default: Any = None) -> Any:
    for name in names:
        if config.get(name) is not None:
            return config[name]
    return default


def number(name: str, value: Any, kind: type[int] | type[float]) -> Any:
    """A bad llm_config value is the caller's mistake, not a backend failure."""
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"llm_config {name}={value!r} is not a number; e.g. {name}={kind(1)}"
        ) from None


def stop_list(value: Any) -> list[str]:
    """``gen.stop`` arrives as a list, or as the JSON text of one from the CLI."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return [value]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v != ""]
    raise ConfigurationError(f"gen.stop must be a list of strings, not {type(value).__name__}")

"""How a sentence-embedding folder wants its token vectors pooled, read from its own files.

A sentence-transformers folder says it in ``modules.json`` (a Transformer,
then Pooling, then maybe Normalize), ``1_Pooling/config.json`` (cls, mean,
max...) and ``sentence_bert_config.json`` (max length, lower-casing). The
same weights pooled the wrong way give vectors that look fine and rank
badly, so the folder's choice is followed; a module we cannot run (a Dense
projection...) is an error, not a silent difference. A folder without
those files is taken as BGE-like (the guide's ``custom/bge``): the CLS
vector, L2-normalised, as the BGE authors prescribe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from byzerllm.broker.errors import BackendLoadError

PoolingMode = Literal["cls", "mean", "max", "mean_sqrt_len", "lasttoken"]

# pooling config key -> mode, in sentence-transformers' order of precedence
_MODE_KEYS: tuple[tuple[str, PoolingMode], ...] = (
    ("pooling_mode_cls_token", "cls"),
    ("pooling_mode_lasttoken", "lasttoken"),
    ("pooling_mode_mean_tokens", "mean"),
    ("pooling_mode_max_tokens", "max"),
    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
)
_SUPPORTED = ("Transformer", "Pooling", "Normalize")


@dataclass(frozen=True, slots=True)
class PoolingPlan:
    mode: PoolingMode
    normalize: bool
    transformer_dir: Path
    max_seq_length: int | None = None
    lower_case: bool = False
    source: str = "modules.json"


def read_plan(folder: Path) -> PoolingPlan:
    """The plan the folder's sentence-transformers files describe, or the BGE default."""
    modules_file = folder / "modules.json"
    if not modules_file.exists():
        return PoolingPlan(
            "cls", True, folder, source="default for folders without modules.json (CLS + L2)"
        )
    modules = _json(modules_file)
    if not isinstance(modules, list):
        raise BackendLoadError(f"{modules_file} is not a list of modules")
    transformer_dir, mode, normalize = folder, None, False
    for module in modules:
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        sub = folder / str(module.get("path", ""))
        if kind not in _SUPPORTED:
            raise BackendLoadError(
                f"{modules_file} uses a {kind} module, which this backend cannot run "
                f"(it runs {', '.join(_SUPPORTED)}); serve the model with a folder without it"
            )
        if kind == "Transformer":
            transformer_dir = sub
        elif kind == "Pooling":
            mode = _pooling_mode(sub / "config.json")
        else:
            normalize = True
    settings = _sentence_bert_config(transformer_dir, folder)
    return PoolingPlan(
        mode or "mean",
        normalize,
        transformer_dir,
        max_seq_length=settings.get("max_seq_length"),
        lower_case=bool(settings.get("do_lower_case", False)),
    )


def _pooling_mode(config_file: Path) -> PoolingMode:
    if not config_file.exists():
        return "mean"  # sentence-transformers' own default
    config = _json(config_file)
    for key, mode in _MODE_KEYS:
        if config.get(key):
            return mode
    mode_name = config.get("pooling_mode")
    if mode_name in ("cls", "mean", "max", "lasttoken"):
        return mode_name
    raise BackendLoadError(
        f"{config_file} selects no pooling mode this backend knows "
        "(cls, mean, max, mean_sqrt_len, lasttoken)"
    )


def _sentence_bert_config(*folders: Path) -> dict[str, Any]:
    for folder in folders:
        path = folder / "sentence_bert_config.json"
        if path.exists():
            data = _json(path)
            return data if isinstance(data, dict) else {}
    return {}


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise BackendLoadError(f"cannot read {path}: {exc}") from None


def pool(torch: Any, hidden: Any, mask: Any, mode: PoolingMode) -> Any:
    """One vector per text from the last hidden states ``[batch, tokens, dim]``."""
    if mode == "cls":
        return hidden[:, 0]
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "lasttoken":  # right padding: the last real token of each row
        last = mask.sum(dim=1) - 1
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if mode == "max":
        return hidden.masked_fill(weights == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
    summed = (hidden * weights).sum(dim=1)
    counts = weights.sum(dim=1).clamp(min=1e-9)
    return summed / (counts.sqrt() if mode == "mean_sqrt_len" else counts)

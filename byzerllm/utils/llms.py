"""``byzerllm.utils.llms``: the original's helpers that pick a client by model name.

``get_single_llm(names, product_mode)`` returns a client whose default model
is the first of the comma-separated ``names``:

- ``"pro"``: a :class:`ByzerLLM` talking to that alias through Redis (the
  settings of ``byzerllm.connect_cluster``, else ``BYZERLLM_REDIS_URL``), as
  the original returned a client of the Ray cluster.
- ``"lite"``: a :class:`SimpleByzerLLM` (backends in this process, no Redis)
  with that default model, nothing deployed yet: call its ``deploy(...)``.
  The original looked the name up in auto-coder's model registry
  (``~/.auto-coder/keys/models.json`` and its key files) and deployed it;
  that registry belongs to auto-coder, not to this package.

Both live here, at the top, because ``SimpleByzerLLM`` joins the client and
the workers.
"""

from __future__ import annotations

from typing import Any

from byzerllm.broker.errors import ConfigurationError
from byzerllm.client.sync import ByzerLLM

PRODUCT_MODES = ("pro", "lite")


def _first_name(model_names: str | list[str]) -> str:
    names = model_names.split(",") if isinstance(model_names, str) else list(model_names)
    for name in names:
        if str(name).strip():
            return str(name).strip()
    raise ConfigurationError(
        f"get_single_llm({model_names!r}): no model name given; "
        "e.g. get_single_llm('deepseek_chat', 'pro')"
    )


def get_single_llm(model_names: str | list[str], product_mode: str) -> ByzerLLM:
    """A client for the first of ``model_names`` (``"a,b"``: ``a``), as its default model."""
    name = _first_name(model_names)
    if product_mode == "pro":
        return ByzerLLM.from_default_model(name)
    if product_mode == "lite":
        from byzerllm.simple import SimpleByzerLLM

        return SimpleByzerLLM(default_model_name=name)
    raise ConfigurationError(
        f"get_single_llm: product_mode {product_mode!r} is neither 'pro' (a ByzerLLM on Redis) "
        "nor 'lite' (a SimpleByzerLLM in this process)"
    )


def get_llm_names(llm: Any, target_model_type: str | None = None) -> list[str]:
    """The default model names of a client (or a list of clients).

    With ``target_model_type``, a client that has sub clients
    (``get_sub_client``) answers for the one of that type: a client, a list
    of them, or a comma-separated string of names.
    """
    chosen = llm
    get_sub = getattr(llm, "get_sub_client", None)
    if target_model_type is not None and callable(get_sub):
        sub = get_sub(target_model_type)
        if isinstance(sub, str):
            return [n.strip() for n in sub.split(",") if n.strip()]
        if sub is not None:
            chosen = sub
    clients = chosen if isinstance(chosen, list) else [chosen]
    return [c.default_model_name for c in clients if c.default_model_name]


__all__ = ["PRODUCT_MODES", "get_llm_names", "get_single_llm"]

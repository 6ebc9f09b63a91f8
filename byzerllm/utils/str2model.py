"""``byzerllm.utils.str2model``: the original's import path for ``to_model``."""

from byzerllm.client.structured import to_model

__all__ = ["to_model"]

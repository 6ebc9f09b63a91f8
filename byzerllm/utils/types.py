"""``byzerllm.utils.types``: the original's import path for stream metadata."""

from byzerllm.client.types import SingleOutputMeta

__all__ = ["SingleOutputMeta"]

"""``byzerllm.apps.utils``: the original's import path."""

from byzerllm.client.utils import Tag, TagExtractor

__all__ = ["Tag", "TagExtractor"]

"""``byzerllm.utils.nontext``: the original's import path for image and audio helpers."""

from byzerllm.client.multimodal import Audio, Image
from byzerllm.client.utils import Tag, TagExtractor

__all__ = ["Audio", "Image", "Tag", "TagExtractor"]

"""``byzerllm.utils.client.code_utils``: the original's import path."""

from byzerllm.client.utils import CODE_BLOCK_PATTERN, UNKNOWN, extract_code

__all__ = ["CODE_BLOCK_PATTERN", "UNKNOWN", "extract_code"]

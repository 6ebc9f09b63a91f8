"""``byzerllm.utils.langutil``: the original's import path."""

from byzerllm.client.utils import asyncfy, asyncfy_with_semaphore

__all__ = ["asyncfy", "asyncfy_with_semaphore"]

"""The client: the asyncio core, its synchronous facade and the result types."""

from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.sync import ByzerLLM
from byzerllm.client.types import LLMResponse, SingleOutputMeta

__all__ = ["AsyncByzerLLM", "ByzerLLM", "LLMResponse", "SingleOutputMeta"]

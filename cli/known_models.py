"""Model names ``easy-byzerllm deploy`` knows, and how to deploy each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEEPSEEK = "https://api.deepseek.com/v1"
SILICONFLOW = "https://api.siliconflow.cn/v1"
MOONSHOT = "https://api.moonshot.cn/v1"
LINGYIWANWU = "https://api.lingyiwanwu.com/v1"


@dataclass(frozen=True)
class KnownModel:
    pretrained_model_type: str
    params: dict[str, Any] = field(default_factory=dict)


def _openai(base_url: str | None, *names: str) -> dict[str, KnownModel]:
    extra = {"saas.base_url": base_url} if base_url else {}
    return {n: KnownModel("saas/openai", {**extra, "saas.model": n}) for n in names}


KNOWN_MODELS: dict[str, KnownModel] = {
    **_openai(DEEPSEEK, "deepseek-chat", "deepseek-reasoner", "deepseek-coder"),
    **_openai(
        SILICONFLOW,
        "alibaba/Qwen1.5-110B-Chat",
        "alibaba/Qwen2-72B-Instruct",
        "deepseek-ai/deepseek-v2-chat",
        "deepseek-ai/DeepSeek-V2.5",
        "deepseek-ai/DeepSeek-V3",
        "deepseek-ai/DeepSeek-R1",
        "Qwen/Qwen2.5-72B-Instruct",
        "Qwen/Qwen2.5-Coder-32B-Instruct",
        "meta-llama/Meta-Llama-3.1-405B-Instruct",
        "BAAI/bge-m3",
    ),
    **_openai(
        None,
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4-turbo",
        "gpt-3.5-turbo",
        "gpt-3.5-turbo-0125",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "tts-1",
        "whisper-1",
        "dall-e-3",
    ),
    **_openai(LINGYIWANWU, "yi-vision"),
    # reasoning models take no temperature/top_p and a max_completion_tokens limit
    "o1-mini": KnownModel("saas/openai", {"saas.model": "o1-mini", "saas.is_reasoning": True}),
    # the original easy-byzerllm's short names
    "gpt4o": KnownModel("saas/openai", {"saas.model": "gpt-4o"}),
    "sonnet3.5": KnownModel("saas/claude", {"saas.model": "claude-3-5-sonnet-20240620"}),
    **{
        n: KnownModel("saas/official_openai", {"saas.base_url": MOONSHOT, "saas.model": n})
        for n in ("moonshot-v1-8k", "moonshot-v1-32k", "moonshot-v1-128k")
    },
    **{
        n: KnownModel("saas/claude", {"saas.model": n})
        for n in (
            "claude-3-5-sonnet-20240620",
            "claude-3-5-sonnet-20241022",
            "claude-3-opus-20240229",
            "claude-3-haiku-20240307",
        )
    },
    **{
        n: KnownModel("saas/qianwen", {"saas.model": n})
        for n in ("qwen-max", "qwen-plus", "qwen-turbo", "qwen1.5-32b-chat", "text-embedding-v2")
    },
    **{
        n: KnownModel("saas/qianwen_vl", {"saas.model": n})
        for n in ("qwen-vl-max", "qwen-vl-chat-v1")
    },
}

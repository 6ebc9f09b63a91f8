"""Chat templates of the original's ``Templates``, kept as data.

The original client flattened a conversation into one prompt string with a
model's role mapping when the model took no message lists. Here every
backend receives messages and applies the model's own chat template (or the
vendor's API does), so ``llm.setup_template(model, Templates.qwen())`` is
accepted and recorded but changes no request. The templates stay available
as plain data (role prefixes, format strings with ``{content}`` /
``{system_msg}``, generation defaults, stop markers) for code that reads
them or builds prompts itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

_CHATML = {
    "user_role": "<|im_start|>user\n",
    "assistant_role": "<|im_end|>\n<|im_start|>assistant\n",
    "system_msg": "<|im_start|>system\n{system_msg}<|im_end|>",
}


@dataclass(frozen=True)
class Template:
    """A role mapping plus the generation settings and stop markers that go with it.

    ``role_mapping`` keys: ``user_role`` / ``assistant_role`` (prefixes),
    ``system_msg`` (format string with ``{system_msg}``), and for formats
    that wrap each turn, ``user_format`` / ``assistant_format`` (format
    strings with ``{content}``).
    """

    role_mapping: dict[str, str]
    generation_config: dict[str, Any] = field(default_factory=dict)
    stop_markers: tuple[str, ...] = ()

    def clean(self, text: str) -> str:
        """``text`` cut at the first stop marker: what the original's ``clean_func`` did."""
        cut = min((i for i in (text.find(m) for m in self.stop_markers) if i >= 0), default=-1)
        return text if cut < 0 else text[:cut]

    @property
    def clean_func(self) -> Any:
        """The original's attribute name for :meth:`clean`."""
        return self.clean


class Templates:
    """The original's built-in templates, by model family."""

    @staticmethod
    def qwen() -> Template:
        return Template(
            dict(_CHATML),
            {"generation.repetition_penalty": 1.1, "generation.stop_token_ids": [151643, 151645]},
            ("<|im_end|>", "<|endoftext|>", "<|im_start|>"),
        )

    @staticmethod
    def yi() -> Template:
        return Template(dict(_CHATML), {"generation.stop_token_ids": [7]})

    @staticmethod
    def llama() -> Template:
        return Template(
            {
                "user_role": "",
                "assistant_role": "",
                "system_msg": "<s>[INST] <<SYS>>\n{system_msg}\n<</SYS>>\n[/INST]</s>",
                "user_format": "<s>[INST] {content} [/INST]",
                "assistant_format": " {content} </s>",
            }
        )

    @staticmethod
    def deepseek_code_chat() -> Template:
        return Template(
            {
                "user_role": "",
                "assistant_role": "### Response:\n",
                "system_msg": "{system_msg}",
                "user_format": "### Instruction:\n{content}",
                "assistant_format": "### Response:\n{content}\n<|EOT|>",
            },
            {"generation.stop_token_ids": [32021]},
        )

    @staticmethod
    def deepseek_code_insertion() -> Template:
        """Fill-in-the-middle: the system message carries the code with its hole."""
        return Template(
            {
                "user_role": "",
                "assistant_role": "",
                "system_msg": "<｜fim▁begin｜>{system_msg}<｜fim▁end｜>",
                "user_format": "",
                "assistant_format": "",
            }
        )

    @staticmethod
    def deepseek_code_completion() -> Template:
        return Template(
            {
                "user_role": "",
                "assistant_role": "",
                "system_msg": "{system_msg}",
                "user_format": "",
                "assistant_format": "",
            }
        )

    @staticmethod
    def default() -> Template:
        return Template(
            {
                "user_role": "User:",
                "assistant_role": "Assistant:",
                "system_msg": "You are a helpful assistant.",
            }
        )

    @staticmethod
    def empty() -> Template:
        return Template({"user_role": "", "assistant_role": "", "system_msg": ""})


__all__ = ["Template", "Templates"]

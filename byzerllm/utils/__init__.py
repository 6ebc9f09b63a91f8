"""Helpers at the import paths of the original byzerllm: ``byzerllm.utils.*``."""

from byzerllm.client.prompt_template import format_prompt, format_prompt_jinja2, format_str_jinja2

__all__ = ["format_prompt", "format_prompt_jinja2", "format_str_jinja2"]

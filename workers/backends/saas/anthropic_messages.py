"""The Anthropic Messages format, shared by ``saas/claude`` and ``saas/aws_bedrock``.

Bedrock's Claude models take the very body of Anthropic's ``/v1/messages``
(minus ``model``, plus ``anthropic_version``) and stream the very same
events, so the request building and the event reading live here once.
A ``tool_use`` block streams as tool-call fragments: its id and name when it
starts, its ``input_json_delta`` pieces as they come.

What differs from OpenAI's format: system messages go in a top-level
``system``, ``max_tokens`` is required, images are ``{"type": "image",
"source": ...}`` blocks, and the stream reports input tokens in
``message_start`` and output tokens in ``message_delta``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from byzerllm.broker.content import split_data_url, to_parts
from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.workers.backend import Chunk, content_text
from byzerllm.workers.backends.saas.base import SaasOptions
from byzerllm.workers.llm_config import first, number, stop_list

DEFAULT_MAX_TOKENS = 4096
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _block(part: dict[str, Any]) -> dict[str, Any] | None:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "image_url":
        spec = part.get("image_url")
        url = spec.get("url", "") if isinstance(spec, dict) else str(spec or "")
        inline = split_data_url(url)
        if inline is not None:
            media_type, data = inline
            return {
                "type": "image",
                "source": {"type": "base64", "media_type": media_type, "data": data},
            }
        return {"type": "image", "source": {"type": "url", "url": url}}
    if kind in ("image", "document", "tool_use", "tool_result", "thinking"):
        return part  # already Anthropic's own block
    return None


def _blocks(content: Any) -> str | list[dict[str, Any]]:
    parts = to_parts(content)
    if isinstance(parts, str):
        return parts
    if not isinstance(parts, list):
        return content_text(parts)
    return [b for b in (_block(p) for p in parts if isinstance(p, dict)) if b is not None]


def _as_list(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def convert_messages(
    conversations: list[dict[str, Any]],
) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, messages)``: system turns lifted out, same-role neighbours merged.

    Anthropic rejects a conversation that does not start with a user turn
    or that holds two turns of one role in a row, where OpenAI-style
    callers send both freely.
    """
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in conversations:
        role = message.get("role", "user")
        content = message.get("content")
        if role == "system":
            system.append(content_text(content))
            continue
        role = "assistant" if role == "assistant" else "user"
        blocks = _blocks(content)
        if messages and messages[-1]["role"] == role:
            previous = messages[-1]
            previous["content"] = _as_list(previous["content"]) + _as_list(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    if not messages:
        raise ConfigurationError("a chat request needs at least one user message")
    if messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": "(continue)"})
    return ("\n\n".join(s for s in system if s) or None), messages


def build_body(
    request: ChatPayload, options: SaasOptions, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The request body without ``model`` and ``stream``, which the transports add.

    The request's llm_config wins over the deployment's ``saas.*`` defaults.
    """
    conversations, llm_config = request.conversations, request.llm_config
    max_tokens, temperature, top_p = options.max_output_tokens, options.temperature, options.top_p
    tools, tool_choice = request.tools, request.tool_choice
    system, messages = convert_messages(conversations)
    limit = first(config := llm_config, "max_length", "max_tokens", default=max_tokens)
    limit = number("max_length", limit, int) if limit is not None else None
    body: dict[str, Any] = {
        "messages": messages,
        "max_tokens": limit if limit and limit > 0 else DEFAULT_MAX_TOKENS,
    }
    if system:
        body["system"] = system
    for name, default in (("temperature", temperature), ("top_p", top_p)):
        value = first(config, name, default=default)
        if value is not None:
            body[name] = number(name, value, float)
    stop = stop_list(config.get("gen.stop"))
    if stop:
        body["stop_sequences"] = stop
    if tools:
        body["tools"] = [
            {
                "name": spec["name"],
                "description": spec.get("description", ""),
                "input_schema": spec.get("parameters") or {"type": "object", "properties": {}},
            }
            for spec in tools
        ]
        if tool_choice:
            body["tool_choice"] = {"type": "tool", "name": tool_choice}
    body.update(extra or {})
    return body


def whole_chunk(message: dict[str, Any]) -> Chunk:
    """A non-streamed answer: text blocks are the answer, thinking blocks the
    reasoning, tool_use blocks the structured tool choice."""
    text, reasoning, calls = [], [], []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "thinking":
            reasoning.append(block.get("thinking", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "name": block.get("name", ""),
                    "arguments": block.get("input"),
                }
            )
    usage = message.get("usage") or {}
    return Chunk(
        tool_calls=calls or None,
        text="".join(text),
        reasoning="".join(reasoning),
        input_tokens=usage.get("input_tokens"),
        output_tokens=usage.get("output_tokens"),
        finish_reason=_FINISH.get(message.get("stop_reason") or "", "stop"),
    )


@dataclass(slots=True)
class StreamReader:
    """Turns stream events into chunks; :meth:`final` carries usage and the stop reason."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None
    # content block index -> tool-call index (0, 1, ... in the order the calls start)
    tool_blocks: dict[Any, int] = field(default_factory=dict)

    def feed(self, event: dict[str, Any]) -> Chunk | None:
        kind = event.get("type")
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and delta.get("text"):
                return Chunk(text=delta["text"])
            if delta.get("type") == "thinking_delta" and delta.get("thinking"):
                return Chunk(reasoning=delta["thinking"])
            call = self.tool_blocks.get(event.get("index"))
            piece = delta.get("partial_json") if delta.get("type") == "input_json_delta" else None
            if call is not None and piece:
                return Chunk(tool_call_fragments=[{"index": call, "arguments": str(piece)}])
        elif kind == "content_block_start":
            return self._tool_start(event)
        elif kind == "message_start":
            usage = (event.get("message") or {}).get("usage") or {}
            self.input_tokens = usage.get("input_tokens", self.input_tokens)
            self.output_tokens = usage.get("output_tokens", self.output_tokens)
        elif kind == "message_delta":
            self.stop_reason = (event.get("delta") or {}).get("stop_reason") or self.stop_reason
            usage = event.get("usage") or {}
            self.output_tokens = usage.get("output_tokens", self.output_tokens)
        return None

    def _tool_start(self, event: dict[str, Any]) -> Chunk | None:
        block = event.get("content_block") or {}
        if block.get("type") != "tool_use":
            return None
        call = self.tool_blocks[event.get("index")] = len(self.tool_blocks)
        fragment = {"index": call, "id": str(block.get("id") or ""), "name": block.get("name", "")}
        if block.get("input"):  # the input comes as input_json_delta pieces; rarely here
            fragment["arguments"] = json.dumps(block["input"], ensure_ascii=False)
        return Chunk(tool_call_fragments=[fragment])

    def final(self) -> Chunk:
        return Chunk(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            finish_reason=_FINISH.get(self.stop_reason or "", "stop"),
        )

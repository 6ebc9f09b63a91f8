"""Anthropic's Messages API (``POST /v1/messages``), as documented, for the real SDK to call.

The answer echoes the text of the last user turn; ``max_tokens`` cuts it by
words (``stop_reason: max_tokens``) and ``stop_sequences`` cut it by text.
Streams send the documented events in order: ``message_start``,
``content_block_start``, ``ping``, ``content_block_delta`` (one per word),
``content_block_stop``, ``message_delta`` with the output usage, and
``message_stop``; with a tool to use, a ``tool_use`` block follows the text,
its input streamed as ``input_json_delta`` pieces (``tool_use_events``) and
``stop_reason: tool_use``. Errors have Anthropic's envelope
``{"type": "error", "error": {"type", "message"}}``; a user turn holding
``TOO_LONG`` gets the context-length error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from tests.stubs.server import Received, Reply, StubServer, json_reply

MODELS = ("claude-3-5-sonnet-20240620", "claude-3-haiku-20240307")
_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
_FORCED_TEXT = {
    429: "Number of request tokens has exceeded your per-minute rate limit",
    500: "Internal server error",
    529: "Overloaded",
}


def error_reply(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    kind = _ERRORS.get(status, "api_error")
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return json_reply(status, body, {"request-id": "req_stub", **(headers or {})})


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if b.get("type") == "text")


def answer(body: dict[str, Any]) -> tuple[str, str, int]:
    """``(text, stop_reason, input_tokens)`` for a request body."""
    messages = body["messages"]
    text = text_of(next(m["content"] for m in reversed(messages) if m["role"] == "user"))
    stop_reason = "end_turn"
    for stop in body.get("stop_sequences") or ():
        if stop in text:
            text, stop_reason = text[: text.index(stop)], "stop_sequence"
    words = text.split()
    if len(words) > body["max_tokens"]:
        text, stop_reason = " ".join(words[: body["max_tokens"]]), "max_tokens"
    system = body.get("system") or ""
    prompt = len(str(system).split()) + sum(len(text_of(m["content"]).split()) for m in messages)
    return text, stop_reason, prompt


def tool_use_for(body: dict[str, Any]) -> dict[str, Any] | None:
    """The tool ``tool_choice`` forces, else the one the last user turn names,
    with the first JSON object of that turn as its input."""
    last = text_of(next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user"))
    forced = body.get("tool_choice") or {}
    names = [t["name"] for t in body["tools"]]
    name = forced.get("name") if forced.get("type") == "tool" else None
    name = name or next((n for n in names if n in last), None)
    if name is None:
        return None
    arguments = json.loads(last[last.index("{") : last.rindex("}") + 1]) if "{" in last else {}
    return {"type": "tool_use", "id": "toolu_stub1", "name": name, "input": arguments}


def tool_use_events(tool_use: dict[str, Any], index: int) -> list[dict[str, Any]]:
    """A ``tool_use`` block as Anthropic streams it: started with its id, name and
    an empty input, then the input's JSON in pieces (one per word), then stopped."""
    opening = {**tool_use, "input": {}}
    events: list[dict[str, Any]] = [
        {"type": "content_block_start", "index": index, "content_block": opening}
    ]
    words = json.dumps(tool_use["input"]).split(" ")
    for i, word in enumerate(words):
        piece = word if i == len(words) - 1 else word + " "
        delta = {"type": "input_json_delta", "partial_json": piece}
        events.append({"type": "content_block_delta", "index": index, "delta": delta})
    events.append({"type": "content_block_stop", "index": index})
    return events


class AnthropicStub(StubServer):
    def __init__(self, api_key: str, *, chunk_delay: float = 0.0) -> None:
        super().__init__()
        self.api_key = api_key
        self.chunk_delay = chunk_delay

    def forced_reply(self, status: int) -> Reply:
        text = _FORCED_TEXT.get(status, f"stub error {status}")
        return error_reply(status, text, {"retry-after-ms": "1"})

    def answer(self, request: Received) -> Reply:
        """Authentication comes before forced failures, as at the vendor.

        Older SDKs send the key as ``x-api-key``, newer ones as a bearer token;
        the API takes both.
        """
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.api_key not in (request.headers.get("x-api-key"), bearer):
            self.received.append(request)
            return error_reply(401, "invalid x-api-key")
        return super().answer(request)

    def reply(self, request: Received) -> Reply:
        if request.method != "POST" or request.path != "/v1/messages":
            return error_reply(404, f"Not found: {request.method} {request.path}")
        if not request.headers.get("anthropic-version"):
            return error_reply(400, "anthropic-version: header is required")
        body = request.json()
        if body.get("model") not in MODELS:
            return error_reply(404, f"model: {body.get('model')}")
        if not isinstance(body.get("max_tokens"), int):
            return error_reply(400, "max_tokens: Field required")
        for tool in body.get("tools") or ():
            if not isinstance(tool.get("input_schema"), dict) or not tool.get("name"):
                return error_reply(400, "tools: each tool needs a name and an input_schema")
        roles = [m["role"] for m in body["messages"]]
        if roles[0] != "user" or any(a == b for a, b in zip(roles, roles[1:], strict=False)):
            return error_reply(400, "messages: roles must alternate between user and assistant")
        if "TOO_LONG" in json.dumps(body["messages"]):
            return error_reply(400, "prompt is too long: 250000 tokens > 200000 maximum")
        text, stop_reason, prompt = answer(body)
        tool_use = tool_use_for(body) if body.get("tools") else None
        if tool_use is not None and not body.get("stream"):
            message = {
                "id": "msg_stub",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": [{"type": "text", "text": "I will use a tool."}, tool_use],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": 5},
            }
            return json_reply(200, message, {"request-id": "req_stub"})
        if body.get("stream"):
            if tool_use is not None:
                text, stop_reason = "I will use a tool.", "tool_use"
            return Reply(
                200,
                self._events(body["model"], text, stop_reason, prompt, tool_use),
                {"content-type": "text/event-stream", "request-id": "req_stub"},
                self.chunk_delay,
            )
        message = {
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": len(text.split())},
        }
        return json_reply(200, message, {"request-id": "req_stub"})

    def _events(
        self,
        model: str,
        text: str,
        stop_reason: str,
        prompt: int,
        tool_use: dict[str, Any] | None = None,
    ) -> Iterator[bytes]:
        start = {
            "id": "msg_stub",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }
        yield sse("message_start", {"type": "message_start", "message": start})
        block = {"type": "text", "text": ""}
        yield sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": block},
        )
        yield sse("ping", {"type": "ping"})
        words = text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            delta = {"type": "text_delta", "text": piece}
            yield sse(
                "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
            )
        yield sse("content_block_stop", {"type": "content_block_stop", "index": 0})
        for event in tool_use_events(tool_use, 1) if tool_use is not None else ():
            yield sse(event["type"], event)
        yield sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(text.split())},
            },
        )
        yield sse("message_stop", {"type": "message_stop"})

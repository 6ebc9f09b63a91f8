"""OpenAI's request fields to byzerllm calls, and byzerllm answers to OpenAI's JSON.

A request becomes a :class:`ChatPlan`: the messages, the ``llm_config`` the
backends read (``max_length``, ``temperature``, ``top_p``, ``gen.stop``,
``seed``, ...), vendor-only fields for OpenAI-compatible aliases
(``extra_request_params``), and how tools and ``response_format`` are
served. Answers become ``chat.completion`` bodies and
``chat.completion.chunk`` events; the fixed part of each event is encoded
once per stream, so a token costs one small ``json`` encode.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

from byzerllm.broker.errors import StructuredOutputError
from byzerllm.client.gateway.errors import bad_request, unsupported
from byzerllm.client.gateway.schemas import ChatCompletionRequest, CompletionRequest
from byzerllm.client.structured import load_json
from byzerllm.client.tools import parse_tool_calls, tool_calls_text
from byzerllm.client.types import LLMResponse

try:  # a faster encoder where installed; the output is the same JSON
    import orjson

    def dumps(value: Any) -> bytes:
        return orjson.dumps(value)

except ImportError:  # pragma: no cover - depends on the environment

    def dumps(value: Any) -> bytes:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


DONE = b"data: [DONE]\n\n"

# Aliases whose backend posts OpenAI's chat request itself: fields byzerllm
# does not model (seed, penalties, reasoning_effort, ...) reach the vendor as
# they came. Only OpenAI's own API (and Azure's) take response_format natively
# for sure; other aliases get it as an instruction in the prompt.
OPENAI_WIRE = frozenset(
    {
        "saas/openai",
        "saas/official_openai",
        "saas/azure_openai",
        "saas/reasoning_openai",
        "saas/deepseek",
        "saas/siliconflow",
        "saas/moonshot",
        "saas/kimi",
        "saas/zhipu",
        "saas/baichuan",
        "saas/minimax",
        "saas/qianfan",
        "saas/gemini",
        "saas/sparkdesk",
    }
)
NATIVE_RESPONSE_FORMAT = frozenset({"saas/openai", "saas/official_openai", "saas/azure_openai"})
# Aliases whose backend streams a native tool choice as it is made (tool-call
# fragments in its deltas); others answer tools whole, then it is streamed.
STREAMED_TOOL_CALLS = OPENAI_WIRE | {"saas/claude", "saas/aws_bedrock"}
# unknown request fields that local backends read from llm_config
LOCAL_SAMPLING = ("top_k", "min_p", "repetition_penalty", "repeat_penalty")
_VENDOR_FIELDS = ("seed", "presence_penalty", "frequency_penalty", "user")


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def stop_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if s]


def needs_backend_type(req: ChatCompletionRequest | CompletionRequest) -> bool:
    """Whether serving ``req`` depends on what kind of backend the alias has."""
    if req.model_extra or req.seed is not None or req.user is not None:
        return True
    if req.presence_penalty is not None or req.frequency_penalty is not None:
        return True
    if isinstance(req, ChatCompletionRequest):
        if req.stream and req.tools and req.tool_choice != "none":  # streamed as made, or whole
            return True
        fmt = req.response_format
        return fmt is not None and fmt.type != "text"
    return False


def sampling(
    req: ChatCompletionRequest | CompletionRequest, backend: str | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``llm_config`` and the ``extra_request_params`` for ``req``."""
    config: dict[str, Any] = {}
    limit = getattr(req, "max_completion_tokens", None) or req.max_tokens
    if limit is not None:
        config["max_length"] = limit
    if req.temperature is not None:
        config["temperature"] = req.temperature
    if req.top_p is not None:
        config["top_p"] = req.top_p
    stops = stop_list(req.stop)
    if stops:
        config["gen.stop"] = stops
    for name in ("seed", "presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value is not None:
            config[name] = value
    extra: dict[str, Any] = {}
    unknown = req.model_extra or {}
    if backend in OPENAI_WIRE:
        extra.update(unknown)
        for name in _VENDOR_FIELDS:
            value = getattr(req, name)
            if value is not None:
                extra[name] = value
    else:
        config.update({k: unknown[k] for k in LOCAL_SAMPLING if unknown.get(k) is not None})
    return config, extra


# -- chat ------------------------------------------------------------------------------


@dataclass(slots=True)
class ChatPlan:
    alias: str
    messages: list[dict[str, Any]]
    llm_config: dict[str, Any]
    extra: dict[str, Any]
    stream: bool = False
    include_usage: bool = False
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: str | None = None
    # the alias' backend streams its tool calls (STREAMED_TOOL_CALLS)
    streams_tool_calls: bool = False
    # "prompt": the answer's JSON is read out of its text (the instruction asked for it)
    json_mode: str | None = None
    id: str = field(default_factory=lambda: new_id("chatcmpl-"))
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def whole_first(self) -> bool:
        """Streamed from the complete answer: a tool choice written in text and JSON
        read out of text are known only at its end."""
        return (bool(self.tools) and not self.streams_tool_calls) or self.json_mode == "prompt"

    def tool_fields(self) -> dict[str, Any]:
        """The client's tool arguments (``tools``, ``tool_choice``), when there are tools."""
        return {"tools": self.tools, "tool_choice": self.tool_choice} if self.tools else {}


def check_chat(req: ChatCompletionRequest) -> None:
    """What OpenAI's API takes but the gateway cannot do: a 400 saying so."""
    if req.n not in (None, 1):
        raise unsupported(
            "n",
            f"n={req.n} is not supported: the gateway answers one choice per request; "
            "send n separate requests (or n=1)",
        )
    if req.logprobs or req.top_logprobs:
        raise unsupported(
            "logprobs", "logprobs are not supported by the gateway; leave logprobs unset"
        )
    fmt = req.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.json_schema is None:
        raise bad_request(
            "response_format type json_schema needs a json_schema object: "
            '{"type": "json_schema", "json_schema": {"name": "answer", "schema": {...}}}',
            param="response_format.json_schema",
        )


def _message(m: Any) -> dict[str, Any]:
    data: dict[str, Any] = m.model_dump(exclude_none=True)
    if data["role"] == "developer":  # OpenAI's newer name for the system turn
        data["role"] = "system"
    data.setdefault("content", None if data.get("tool_calls") else "")
    return data


def chat_plan(req: ChatCompletionRequest, backend: str | None) -> ChatPlan:
    messages = [_message(m) for m in req.messages]
    config, extra = sampling(req, backend)
    plan = ChatPlan(
        alias=req.model,
        messages=messages,
        llm_config=config,
        extra=extra,
        stream=req.stream,
        include_usage=bool(req.stream and req.stream_options and req.stream_options.include_usage),
    )
    if req.tools and req.tool_choice != "none":
        plan.tools = [t.model_dump(exclude_none=True) for t in req.tools]
        plan.tool_choice = _forced_tool(req)
        plan.streams_tool_calls = backend in STREAMED_TOOL_CALLS
        if backend in OPENAI_WIRE and req.parallel_tool_calls is not None:
            extra["parallel_tool_calls"] = req.parallel_tool_calls
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        if backend in NATIVE_RESPONSE_FORMAT:
            extra["response_format"] = fmt.model_dump(by_alias=True, exclude_none=True)
        else:
            plan.json_mode = "prompt"
            _ask_for_json(messages, fmt.json_schema.json_schema if fmt.json_schema else None)
    return plan


def _forced_tool(req: ChatCompletionRequest) -> str | None:
    choice = req.tool_choice
    names = [t.function.name for t in req.tools or []]
    if choice is None or choice == "auto":
        return None
    if choice == "required":
        return names[0] if len(names) == 1 else None
    assert not isinstance(choice, str)
    if choice.function.name not in names:
        raise bad_request(
            f"tool_choice names the function {choice.function.name!r}, which is not in tools "
            f"({', '.join(names)})",
            param="tool_choice",
        )
    return choice.function.name


def _ask_for_json(messages: list[dict[str, Any]], schema: dict[str, Any] | None) -> None:
    """The last user turn asks for JSON (of ``schema``, when given)."""
    if schema is None:
        text = "\n\nAnswer with one JSON object, in one ```json code block, without anything else."
    else:
        text = (
            "\n\nAnswer with JSON that conforms to the JSON Schema below, in one ```json code "
            "block, without anything else:\n```json\n"
            + json.dumps(schema, ensure_ascii=False, indent=2)
            + "\n```"
        )
    for message in reversed(messages):
        if message["role"] != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            message["content"] = [*content, {"type": "text", "text": text.lstrip()}]
        else:
            message["content"] = (content or "") + text
        return
    messages.append({"role": "user", "content": text.lstrip()})


def json_text(text: str) -> str:
    """The JSON in a model's answer, as compact JSON text; the answer itself when it is
    JSON already or holds none (the client then sees what the model said)."""
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        return json.dumps(load_json(text), ensure_ascii=False)
    except StructuredOutputError:
        return text


def _wire_call(call: dict[str, Any]) -> dict[str, Any]:
    arguments = call.get("arguments")
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments if arguments is not None else {}, ensure_ascii=False)
    return {
        "id": call.get("id") or new_id("call_"),
        "type": "function",
        "function": {"name": str(call.get("name", "")), "arguments": arguments},
    }


@dataclass(slots=True)
class Answer:
    """One complete chat answer, in OpenAI's terms."""

    content: str | None
    reasoning: str
    tool_calls: list[dict[str, Any]]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def answer_of(response: LLMResponse, plan: ChatPlan) -> Answer:
    meta = response.metadata
    output = response.output if isinstance(response.output, str) else str(response.output)
    content: str | None = output
    calls: list[dict[str, Any]] = []
    native = meta.get("tool_calls")
    if native:  # the client wrote them into the text too: take that back out
        suffix = tool_calls_text(native)
        if output.endswith(suffix):
            output = output[: -len(suffix)]
            output = output[:-1] if output.endswith("\n") else output
        calls = [_wire_call(c) for c in native]
        content = output or None
    elif plan.tools:  # tools described in the prompt: the answer is JSON naming them
        names = {t["function"]["name"] for t in plan.tools}
        try:
            chosen = [c for c in parse_tool_calls(output) if c["name"] in names]
        except StructuredOutputError:
            chosen = []
        if chosen:
            calls = [_wire_call(c) for c in chosen]
            content = None
    if plan.json_mode == "prompt" and content is not None:
        content = json_text(content)
    finish = "tool_calls" if calls else str(meta.get("finish_reason") or "stop")
    return Answer(
        content=content,
        reasoning=str(meta.get("reasoning_content") or ""),
        tool_calls=calls,
        finish_reason=finish,
        prompt_tokens=int(meta.get("input_tokens_count") or 0),
        completion_tokens=int(meta.get("generated_tokens_count") or 0),
    )


def chat_body(plan: ChatPlan, answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.reasoning:
        message["reasoning_content"] = answer.reasoning
    if answer.tool_calls:
        message["tool_calls"] = answer.tool_calls
    return {
        "id": plan.id,
        "object": "chat.completion",
        "created": plan.created,
        "model": plan.alias,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": answer.usage(),
    }


class ChunkEncoder:
    """``data: {...}\\n\\n`` events of one stream; only the varying part is encoded."""

    def __init__(self, obj: str, rid: str, created: int, model: str, usage: bool) -> None:
        head = {"id": rid, "object": obj, "created": created, "model": model}
        self._head = b"data: " + dumps(head)[:-1] + b',"choices":'
        self._tail = b',"usage":null}\n\n' if usage else b"}\n\n"

    def choice(self, choice: dict[str, Any]) -> bytes:
        return self._head + b"[" + dumps(choice) + b"]" + self._tail

    def usage(self, usage: dict[str, int]) -> bytes:
        return self._head + b'[],"usage":' + dumps(usage) + b"}\n\n"


class ChatChunks(ChunkEncoder):
    def __init__(self, plan: ChatPlan) -> None:
        super().__init__(
            "chat.completion.chunk", plan.id, plan.created, plan.alias, plan.include_usage
        )

    def delta(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        return self.choice({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish})

    def role(self) -> bytes:
        return self.delta({"role": "assistant", "content": ""})

    def whole(self, answer: Answer, include_usage: bool) -> bytes:
        """A complete answer as the events a stream of it would have had."""
        events = [self.role()]
        if answer.reasoning:
            events.append(self.delta({"reasoning_content": answer.reasoning}))
        if answer.content:
            events.append(self.delta({"content": answer.content}))
        for i, call in enumerate(answer.tool_calls):
            events.append(self.delta({"tool_calls": [{"index": i, **call}]}))
        events.append(self.delta({}, answer.finish_reason))
        if include_usage:
            events.append(self.usage(answer.usage()))
        return b"".join(events)


class ToolCallDeltas:
    """Streamed tool-call fragments as OpenAI's ``delta.tool_calls``: a call's
    first delta has its ``index``, ``id``, ``type`` and ``function.name`` (with
    ``arguments`` ``""``), later ones ``function.arguments`` pieces only."""

    def __init__(self) -> None:
        self.seen: set[int] = set()

    def __call__(self, fragments: list[dict[str, Any]]) -> list[dict[str, Any]]:
        deltas = []
        for fragment in fragments:
            index = int(fragment.get("index") or 0)
            delta: dict[str, Any] = {"index": index}
            function: dict[str, Any] = {}
            if index not in self.seen:  # a call's first delta: an id always
                self.seen.add(index)
                delta["id"] = str(fragment.get("id") or new_id("call_"))
                delta["type"] = "function"
                function = {"name": str(fragment.get("name") or ""), "arguments": ""}
            elif fragment.get("name"):
                function["name"] = str(fragment["name"])
            if fragment.get("arguments"):
                function["arguments"] = str(fragment["arguments"])
            if function:
                delta["function"] = function
            deltas.append(delta)
        return deltas


# -- legacy completions ----------------------------------------------------------------


def check_completion(req: CompletionRequest) -> list[str]:
    """The prompts of ``req`` (one per choice); a 400 for what the gateway cannot do."""
    prompts = [req.prompt] if isinstance(req.prompt, str) else list(req.prompt)
    if not prompts:
        raise bad_request("prompt is an empty list; send a string", param="prompt")
    if req.n not in (None, 1) or req.best_of not in (None, 1):
        name = "n" if req.n not in (None, 1) else "best_of"
        raise unsupported(
            name, f"{name} above 1 is not supported: send separate requests (or {name}=1)"
        )
    if req.logprobs is not None:
        raise unsupported("logprobs", "logprobs are not supported; leave logprobs unset")
    if req.suffix:
        raise unsupported("suffix", "suffix (insertion) is not supported; leave suffix unset")
    if req.stream and len(prompts) > 1:
        raise unsupported(
            "prompt", "a streamed completion takes one prompt; send a string, or stream=false"
        )
    return prompts


def completion_body(
    rid: str, created: int, alias: str, texts: list[tuple[str, str]], usage: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": alias,
        "choices": [
            {"text": text, "index": i, "logprobs": None, "finish_reason": finish}
            for i, (text, finish) in enumerate(texts)
        ],
        "usage": usage,
    }


def usage_of(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }

"""Function calling without native model support: tools described in the prompt.

Each Python callable becomes a JSON description (from its signature,
docstring and ``Annotated[T, "desc"]`` / ``Annotated[T, "desc", {"enum": [...]}]``
metadata). The model is asked to answer with a JSON ``tool_calls`` choice;
we parse it, validate the arguments against the signature with pydantic,
call the tools and put their results in ``values``. As in the original,
``chat_oai(..., execute_tool=True)`` never raises for a bad choice: the
reason is in ``metadata["reason"]`` and ``values`` is empty.
"""

from __future__ import annotations

import inspect
import json
import traceback
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import TypeAdapter, ValidationError, validate_call

from byzerllm.broker.errors import ConfigurationError
from byzerllm.client.structured import (
    StructuredOutputError,
    is_model_type,
    load_json,
    parse_as,
    schema_instruction,
)
from byzerllm.client.types import LLMClassResponse, LLMFunctionCallResponse, LLMResponse

Tool = Callable[..., Any] | str | dict[str, Any]


def _param_schema(annotation: Any) -> dict[str, Any]:
    description, extra = None, {}
    if get_origin(annotation) is Annotated:
        base, *metadata = get_args(annotation)
        for item in metadata:
            if isinstance(item, str):
                description = item
            elif isinstance(item, dict):
                extra.update(item)
        annotation = base
    schema: dict[str, Any] = {}
    if annotation is not inspect.Parameter.empty:
        try:
            schema = TypeAdapter(annotation).json_schema()
        except Exception:  # an exotic type: describe it by name
            schema = {"type": getattr(annotation, "__name__", str(annotation))}
    if description:
        schema["description"] = description
    schema.update(extra)
    return schema


def tool_spec(tool: Tool) -> dict[str, Any]:
    """The JSON description of a tool the model reads."""
    if isinstance(tool, str):
        tool = dict(json.loads(tool))
    if isinstance(tool, dict):  # OpenAI's {"type": "function", "function": {...}} too
        return dict(tool["function"]) if isinstance(tool.get("function"), dict) else tool
    try:
        hints = get_type_hints(tool, include_extras=True)
    except Exception:
        hints = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(tool).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = _param_schema(hints.get(name, param.annotation))
        if param.default is param.empty:
            required.append(name)
        else:
            schema["default"] = param.default
        properties[name] = schema
    return {
        "name": tool.__name__,
        "description": inspect.cleandoc(tool.__doc__ or "").strip(),
        "parameters": {"type": "object", "properties": properties, "required": required},
    }


_ANSWER_FORMAT = """{
  "tool_calls": [
    {"id": "call_1", "type": "function",
     "function": {"name": "<tool name>", "arguments": {"<parameter>": "<value>"}}}
  ]
}"""


def tools_prompt(question: str, specs: list[dict[str, Any]], tool_choice: Any = None) -> str:
    """The last user message rewritten to ask for a JSON tool choice."""
    listing = json.dumps(specs, ensure_ascii=False, indent=2)
    text = (
        "You can use the tools below (JSON descriptions with a JSON schema per parameter):\n"
        f"```json\n{listing}\n```\n\n"
        "Choose the tool(s) that answer the user's request and fill in their arguments. "
        "Answer only with JSON of this shape, in one ```json code block:\n"
        f"```json\n{_ANSWER_FORMAT}\n```\n"
    )
    if tool_choice:
        name = tool_choice if isinstance(tool_choice, str) else tool_spec(tool_choice)["name"]
        text += f"\nYou must use the tool {name}.\n"
    return f"{text}\nUser request:\n{question}"


def parse_tool_calls(text: str) -> list[dict[str, Any]]:
    """[{name, arguments}] from the model's JSON answer; StructuredOutputError when absent."""
    data = load_json(text)
    if isinstance(data, list):
        if data and all(isinstance(d, dict) and "tool_calls" not in d for d in data):
            data = {"tool_calls": data}
        elif data:
            data = data[-1]
    if not isinstance(data, dict):
        raise StructuredOutputError("the tool choice is not a JSON object", text)
    calls = data.get("tool_calls")
    if calls is None and ("name" in data or "function" in data):
        calls = [data]
    if not isinstance(calls, list):
        raise StructuredOutputError("the answer has no tool_calls list", text)
    return [_call(call, text) for call in calls]


def _call(call: Any, text: str) -> dict[str, Any]:
    """One choice as {name, arguments}: OpenAI's nested shape or our flat one."""
    function = call.get("function", call) if isinstance(call, dict) else {}
    arguments = function.get("arguments") or {}
    if isinstance(arguments, str):
        arguments = load_json(arguments) if arguments.strip() else {}
    return {"name": str(function.get("name", "")), "arguments": arguments}


def chosen_calls(response: LLMResponse) -> list[dict[str, Any]]:
    """The tool choice of an answer: the backend's native choice as it came
    (structured, in the metadata), else the JSON the model wrote in its text."""
    native = response.metadata.get("tool_calls")
    if native:
        return [_call(call, json.dumps(native, ensure_ascii=False)) for call in native]
    return parse_tool_calls(str(response.output))


def tool_calls_text(calls: list[dict[str, Any]]) -> str:
    """A native tool choice written in the shape the prompt asks models for, so
    a caller reads the same answer text whichever way the alias chose its tool."""
    body = {
        "tool_calls": [
            {
                "id": call.get("id") or f"call_{i}",
                "type": "function",
                "function": {"name": call["name"], "arguments": call.get("arguments") or {}},
            }
            for i, call in enumerate(calls, 1)
        ]
    }
    return "```json\n" + json.dumps(body, ensure_ascii=False) + "\n```"


def execute_calls(
    calls: list[dict[str, Any]], tools: list[Tool], func_params: dict[str, Any] | None
) -> tuple[list[Any], list[str]]:
    """Run each chosen tool that exists, arguments validated against its signature."""
    by_name = {t.__name__: t for t in tools if callable(t)}
    values, selected = [], []
    for call in calls:
        tool = by_name.get(call["name"])
        if tool is None:
            continue  # the original skips unknown names silently
        selected.append(call["name"])
        values.append(validate_call(tool)(**{**call["arguments"], **(func_params or {})}))
    return values, selected


def check_tools(tools: list[Tool]) -> list[Tool]:
    for tool in tools:
        if not (callable(tool) or isinstance(tool, str | dict)):
            raise ConfigurationError(
                f"tool {tool!r} is not usable: pass Python functions (or JSON descriptions)"
            )
    return list(tools)


Send = Callable[..., Awaitable[list[LLMResponse]]]
"""``send(messages, payload_fields=None)``: one chat request, its answers."""


def _tool_name(tool_choice: Any) -> str | None:
    if not tool_choice:
        return None
    if isinstance(tool_choice, str):
        return tool_choice
    return str(tool_spec(tool_choice)["name"])


def tools_request(
    messages: list[dict[str, Any]], tools: list[Tool], tool_choice: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and the chat payload fields that ask for a tool choice.

    The request carries the tools twice: as JSON descriptions for a backend
    that calls tools natively, and as the rewritten last message for one that
    does not. The worker uses one of them; both answer in the same JSON shape.
    """
    specs = [tool_spec(t) for t in check_tools(tools)]
    last = messages[-1] if messages else {"role": "user", "content": ""}
    name = _tool_name(tool_choice)
    payload = {
        "tools": specs,
        "tool_choice": name,
        "tools_prompt": tools_prompt(str(last.get("content", "")), specs, name),
    }
    return messages or [last], payload


async def chat_with_tools(
    send: Send,
    messages: list[dict[str, Any]],
    tools: list[Tool],
    tool_choice: Any,
    execute_tool: bool,
    func_params: dict[str, Any] | None,
) -> list[Any]:
    """Ask for a tool choice (see :func:`tools_request`), and with ``execute_tool`` run it."""
    responses = await send(*tools_request(messages, tools, tool_choice))
    if not execute_tool:
        return responses
    results = []
    for response in responses:
        metadata = dict(response.metadata)
        values: list[Any] = []
        try:
            values, metadata["selected_functions"] = execute_calls(
                chosen_calls(response), tools, func_params
            )
            metadata["reason"] = ""
        except StructuredOutputError:
            metadata["reason"] = "No json block found"
        except ValidationError as exc:
            metadata["reason"] = f"bad tool arguments: {exc}"
        except Exception as exc:
            metadata["reason"] = f"{exc}\n{traceback.format_exc()}"
        results.append(LLMFunctionCallResponse(response=response, values=values, metadata=metadata))
    return results


_CONVERT = "Write your answer above as JSON."


async def chat_as_class(
    send: Send, messages: list[dict[str, Any]], response_class: Any, after_chat: bool
) -> list[LLMClassResponse]:
    """The answer read as ``response_class``; ``value`` is None (with the reason
    in metadata) when it does not parse, as in the original.

    ``after_chat``: the model answers the question as it likes first, and a
    second request turns that answer into JSON; for models whose answers
    suffer when asked for JSON straight away.
    """
    if not is_model_type(response_class):
        raise ConfigurationError(
            f"response_class={response_class!r} is not a pydantic model class "
            "(or list[Model]); define one with pydantic.BaseModel"
        )
    last = messages[-1] if messages else {"role": "user", "content": ""}
    instruction = schema_instruction(response_class)
    if after_chat:
        [free] = await send(messages)
        followup = [
            *messages,
            {"role": "assistant", "content": str(free.output)},
            {"role": "user", "content": _CONVERT + instruction},
        ]
        answers = [(free, r) for r in await send(followup)]
    else:
        content = str(last.get("content", "")) + instruction
        answers = [(r, r) for r in await send([*messages[:-1], {**last, "content": content}])]
    results = []
    for response, formatted in answers:
        metadata = dict(formatted.metadata)
        value = None
        try:
            value = parse_as(str(formatted.output), response_class)
            metadata["reason"] = ""
        except StructuredOutputError as exc:
            metadata["reason"] = str(exc).split("\n--- raw answer ---")[0]
            metadata["raw_output"] = exc.raw_text
        results.append(LLMClassResponse(response=response, value=value, metadata=metadata))
    return results

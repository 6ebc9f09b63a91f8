"""The request bodies the gateway accepts: OpenAI's wire format, checked by pydantic.

Fields OpenAI defines and the gateway can honour are typed here; a bad type
or value becomes a 400 that names the field (see :func:`parse_body`). Fields
it cannot honour (``n`` above 1, ``logprobs``) are refused by the handlers
with the reason. Unknown fields are kept (``extra="allow"``): OpenAI-
compatible vendors behind an alias read their own (``top_k``,
``reasoning_effort``, ...), and clients send fields newer than this file.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from byzerllm.client.gateway.errors import _ApiError, bad_request

Model = TypeVar("Model", bound=BaseModel)

_NAME = r"^[A-Za-z0-9_-]{1,64}$"


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    # text, OpenAI content parts, or None (an assistant turn that only called tools)
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    include_usage: bool = False


class FunctionSpec(_Open):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolSpec(_Open):
    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(BaseModel):
    name: str


class ToolChoiceObject(BaseModel):
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(_Open):
    name: Annotated[str, Field(pattern=_NAME)]
    description: str | None = None
    # "schema" would shadow a BaseModel attribute
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


Stop = str | list[str] | None


class ChatCompletionRequest(_Open):
    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: int | None = None
    n: int | None = None
    stop: Stop = None
    tools: list[ToolSpec] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoiceObject | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    user: str | None = None


class CompletionRequest(_Open):
    model: str
    prompt: str | list[str]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    seed: int | None = None
    n: int | None = None
    best_of: int | None = None
    stop: Stop = None
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    user: str | None = None


class EmbeddingRequest(_Open):
    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: str | None = None


# what each field should look like, for the 400 that names it
_EXAMPLES = {
    "model": '"model": "<alias>" (GET /v1/models lists them)',
    "messages": '"messages": [{"role": "user", "content": "Hello"}]',
    "role": "one of system, developer, user, assistant, tool",
    "content": "a string, a list of content parts, or null",
    "prompt": '"prompt": "Once upon a time"',
    "input": '"input": "text" or ["text", ...]',
    "stop": '"stop": "\\n" or ["\\n", "END"]',
    "tools": '"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]',
    "tool_choice": '"auto", "none", "required" or {"type": "function", "function": {"name": "f"}}',
    "response_format": '{"type": "json_object"} or {"type": "json_schema", "json_schema": '
    '{"name": "answer", "schema": {...}}}',
    "stream_options": '"stream_options": {"include_usage": true}',
    "stream": "true or false",
    "temperature": "a number from 0 to 2, e.g. 0.7",
    "top_p": "a number from 0 to 1, e.g. 0.9",
    "presence_penalty": "a number from -2 to 2",
    "frequency_penalty": "a number from -2 to 2",
    "max_tokens": "a positive integer, e.g. 512",
    "max_completion_tokens": "a positive integer, e.g. 512",
    "seed": "an integer",
    "n": "1 (one choice per request)",
    "encoding_format": '"float" or "base64"',
    "dimensions": "a positive integer",
}


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "dict", "list", "bytes"})


def _is_field(part: str) -> bool:
    """Not a union branch pydantic names in a location (``str``, ``list[...]``, a class)."""
    return not (part in _TYPE_TAGS or "[" in part or "-" in part or part[:1].isupper() or not part)


def _where(loc: tuple[int | str, ...]) -> str:
    """``messages[0].content`` from pydantic's location tuple (union branch names dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _is_field(part):
            out += f".{part}" if out else part
    return out


def _problem(error: dict[str, Any]) -> _ApiError:
    loc = tuple(error.get("loc", ()))
    where = _where(loc) or "body"
    kind = error.get("type", "")
    if kind == "missing":
        message = f"the request body has no {where!r}; it is required"
    elif kind == "extra_forbidden":
        message = f"{where!r} is not a field of this request"
    else:
        message = f"{where!r}: {error.get('msg', 'invalid value')}"
    names = [p for p in loc if isinstance(p, str) and _is_field(p)]
    example = next((_EXAMPLES[n] for n in reversed(names) if n in _EXAMPLES), None)
    if example:
        message += f"; expected {example}"
    return bad_request(message, param=where)


def parse_body(cls: type[Model], body: bytes) -> Model:
    """The body read as ``cls``; a 400 naming the first bad field (or the JSON error)."""
    if not body.strip():
        raise bad_request(
            "the request body is empty; send a JSON object with the request's fields",
            param=None,
        )
    try:
        return cls.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first: dict[str, Any] = dict(errors[0]) if errors else {}
        if first.get("type") == "json_invalid":
            reason = str((first.get("ctx") or {}).get("error", "not JSON"))
            raise bad_request(
                f"the request body is not valid JSON ({reason}); send a JSON object with "
                "Content-Type: application/json",
                param=None,
            ) from None
        if first.get("type") == "model_type" and not first.get("loc"):
            raise bad_request(
                "the request body must be a JSON object with the request's fields",
                param=None,
            ) from None
        raise _problem(first) from None

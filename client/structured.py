"""Turning a model's free text into JSON and pydantic objects.

Models wrap JSON in ``` fences, add prose after it, leave trailing commas or
write Python literals. We look for the JSON where models put it, repair what
is almost valid, and when nothing parses raise :class:`StructuredOutputError`
carrying the raw text, so the caller can log it or ask again. (The original
returned ``None`` here; a silent ``None`` hid bad answers, hence the error.)
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError

from byzerllm.broker.errors import ByzerLLMError, StructuredOutputError

_FENCE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")


def _balanced(text: str, start: int) -> str:
    """From ``text[start]`` (``{`` or ``[``) to its matching bracket, closing what is left open."""
    stack: list[str] = []
    in_string = escaped = False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch in "{[":
            stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if stack and stack[-1] == ch:
                stack.pop()
            if not stack:
                return text[start : i + 1]
    # truncated answer: close the open string and brackets
    return text[start:] + ('"' if in_string else "") + "".join(reversed(stack))


def json_candidates(text: str) -> list[str]:
    """Places JSON may sit in an answer, most likely first."""
    fences = _FENCE.findall(text)
    candidates = [body for lang, body in fences if lang.lower() in ("json", "json5")]
    if fences:
        candidates.append(fences[-1][1])
    candidates.append(text)
    for source in (*candidates, text):
        match = re.search(r"[{\[]", source)
        if match:
            candidates.append(_balanced(source, match.start()))
    unique: list[str] = []
    for candidate in candidates:
        candidate = candidate.strip()
        if candidate and candidate not in unique:
            unique.append(candidate)
    return unique


def _strip_comments(text: str) -> str:
    """Remove ``// ...`` comments outside of strings (URLs inside strings survive)."""
    out: list[str] = []
    in_string = escaped = False
    i = 0
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == '"' and not escaped:
                in_string = False
            escaped = not escaped and ch == "\\"
        elif ch == '"':
            in_string = True
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _repair(text: str) -> Any:
    """Parse almost-JSON: trailing commas, // comments, Python literals, single quotes."""
    cleaned = _TRAILING_COMMA.sub(r"\1", _strip_comments(text))
    try:
        return json.loads(cleaned)
    except ValueError:
        pass
    try:
        value = ast.literal_eval(cleaned)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        pass
    else:
        if isinstance(value, dict | list):
            return value
    pythonish = re.sub(r"\btrue\b", "True", cleaned)
    pythonish = re.sub(r"\bfalse\b", "False", pythonish)
    pythonish = re.sub(r"\bnull\b", "None", pythonish)
    try:
        value = ast.literal_eval(pythonish)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not JSON") from None
    if not isinstance(value, dict | list):
        raise ValueError("not a JSON object or array")
    return value


def load_json(text: str) -> Any:
    """The first JSON object or array found in ``text``; StructuredOutputError if none."""
    for candidate in json_candidates(text):
        if candidate[0] not in "{[":
            continue
        try:
            return json.loads(candidate)
        except ValueError:
            pass
        try:
            return _repair(candidate)
        except ValueError:
            continue
    raise StructuredOutputError(
        "no JSON object or array found in the model's answer; ask for JSON in a ```json block",
        text,
    )


def _single_value_field(cls: type[BaseModel]) -> str | None:
    fields = list(cls.model_fields)
    return fields[0] if len(fields) == 1 else None


def _validate(cls: type[BaseModel], data: Any, raw: str) -> BaseModel:
    if not isinstance(data, dict):
        field = _single_value_field(cls)
        if field is None:
            raise StructuredOutputError(f"expected a JSON object for {cls.__name__}", raw)
        data = {field: data}
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()
        )
        raise StructuredOutputError(
            f"the model's JSON does not fit {cls.__name__}: {problems}", raw
        ) from None


def is_model_type(tp: Any) -> bool:
    """A pydantic class, or ``list[Model]``."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return True
    args = get_args(tp)
    return get_origin(tp) is list and len(args) == 1 and is_model_type(args[0])


def parse_as(text: str, cls: Any) -> Any:
    """Read ``text`` as ``cls`` (a pydantic class or ``list[Model]``).

    A JSON array read as a plain class gives a list of instances, as in the original.
    """
    item_cls = get_args(cls)[0] if get_origin(cls) is list else cls
    if not (isinstance(item_cls, type) and issubclass(item_cls, BaseModel)):
        raise ByzerLLMError(f"cannot parse answers as {cls!r}; use a pydantic model class")
    data = load_json(text)
    if isinstance(data, list):
        return [_validate(item_cls, item, text) for item in data]
    if get_origin(cls) is list:
        return [_validate(item_cls, data, text)]
    return _validate(item_cls, data, text)


def schema_instruction(cls: Any) -> str:
    """The text appended to a prompt so the model answers in ``cls``'s JSON shape."""
    item_cls = get_args(cls)[0] if get_origin(cls) is list else cls
    schema = item_cls.model_json_schema()
    if get_origin(cls) is list:
        schema = {"type": "array", "items": schema}
    return (
        "\n\nAnswer with JSON that conforms to the JSON Schema below, in one ```json code block, "
        "without anything else:\n```json\n"
        + json.dumps(schema, ensure_ascii=False, indent=2)
        + "\n```"
    )


def to_model(result: str, model_class: Any) -> Any:
    """The original's ``str2model.to_model``: a model's answer read as ``model_class``.

    JSON is looked for as :func:`parse_as` does (fences, prose around it,
    almost-JSON); an array gives a list of instances. Where nothing fits,
    StructuredOutputError (a ValueError) carries the raw text.
    """
    if not isinstance(result, str):
        raise StructuredOutputError(
            f"to_model reads a model's text answer, not {type(result).__name__}", repr(result)
        )
    return parse_as(result, model_class)

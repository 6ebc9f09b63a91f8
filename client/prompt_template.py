"""Rendering a prompt function's docstring: the jinja2 part of ``@byzerllm.prompt``.

Unlike the original (undefined variables rendered as empty strings), a
template that uses a name which is neither an argument nor a key of the
dict the body returns fails with :class:`PromptTemplateError` naming it: a
silently empty slot in a prompt is a bug that is very hard to see in answers.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jinja2

from byzerllm.broker.errors import PromptDefinitionError, PromptTemplateError

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
_UNDEFINED = re.compile(r"'([^']+)' is undefined")


def dedent_docstring(doc: str) -> str:
    """Strip the first non-empty line's indentation from every line, then the outer blank lines.

    This is the original's rule; lines indented less lose only what they have.
    """
    lines = doc.splitlines()
    first = next((line for line in lines if line.strip()), "")
    indent = len(first) - len(first.lstrip())
    out = []
    for line in lines:
        lead = len(line) - len(line.lstrip())
        out.append(line[min(indent, lead) :])
    return "\n".join(out).strip()


@lru_cache(maxsize=512)
def _compile(source: str) -> jinja2.Template:
    return _env.from_string(source)


def template_source(func: Callable[..., Any]) -> str:
    doc = func.__doc__
    if not doc or not doc.strip():
        raise PromptDefinitionError(
            f"prompt function {func.__qualname__} has no docstring; its docstring is the prompt"
        )
    return dedent_docstring(doc)


def prompt_variables(
    func: Callable[..., Any], instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Bound arguments (defaults applied, ``self`` dropped) updated with the body's dict."""
    call_args = (instance, *args) if instance is not None else args
    try:
        bound = inspect.signature(func).bind(*call_args, **kwargs)
    except TypeError as exc:
        raise PromptDefinitionError(f"{func.__qualname__}(): {exc}") from None
    bound.apply_defaults()
    variables = dict(bound.arguments)
    if instance is not None:
        variables.pop(next(iter(inspect.signature(func).parameters)), None)
    returned = func(*call_args, **kwargs)
    if isinstance(returned, dict):
        variables.update(returned)
    elif returned:
        raise PromptDefinitionError(
            f"Return value of {func.__qualname__} should be a dict, not "
            f"{type(returned).__name__}: the body of a prompt function may only return a dict "
            "of extra template variables (or nothing)"
        )
    return variables


def render(func: Callable[..., Any], variables: dict[str, Any]) -> str:
    source = template_source(func)
    try:
        return _compile(source).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        match = _UNDEFINED.search(str(exc))
        name = match.group(1) if match else None
        available = ", ".join(sorted(variables)) or "none"
        what = f"{{{{ {name} }}}}" if name else str(exc)
        raise PromptTemplateError(
            f"the prompt of {func.__qualname__} uses {what}, which has no value: it is neither "
            f"an argument nor a key of the dict the function returns (available: {available})"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise PromptTemplateError(
            f"the docstring of {func.__qualname__} is not a valid jinja2 template: "
            f"{exc.message} (line {exc.lineno})"
        ) from None

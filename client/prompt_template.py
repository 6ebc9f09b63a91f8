"""Rendering a prompt function's docstring: the jinja2 part of ``@byzerllm.prompt``.

As in the original, a variable without a value (neither an argument nor a
key of the dict the body returns) renders empty, so templates with optional
parts (``{% if notes %}``, ``{{ extra }}``) work as written. Where an absent
value cannot be rendered (``{{ user.name }}``, ``{{ n + 1 }}``) the error
names it. A slot left empty is also logged once per template, as a warning
naming it: a typo such as ``{{ nmae }}`` is otherwise very hard to see in
answers.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.meta

from byzerllm.broker.errors import PromptDefinitionError, PromptTemplateError

_env = jinja2.Environment(undefined=jinja2.Undefined, autoescape=False)
_UNDEFINED = re.compile(r"'([^']+)' is undefined")
log = logging.getLogger(__name__)


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


@lru_cache(maxsize=512)
def _used_names(source: str) -> frozenset[str]:
    names = jinja2.meta.find_undeclared_variables(_env.parse(source))
    return frozenset(names - _env.globals.keys())


@lru_cache(maxsize=512)
def _warn_empty(where: str, names: frozenset[str]) -> None:
    """Once per template and set of names (the cache remembers it was said)."""
    log.warning(
        "the prompt of %s renders %s empty: no argument or returned key has that name",
        where,
        ", ".join(f"{{{{ {n} }}}}" for n in sorted(names)),
    )


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
        text = _compile(source).render(**variables).strip()
    except jinja2.UndefinedError as exc:
        match = _UNDEFINED.search(str(exc))
        name = match.group(1) if match else None
        available = ", ".join(sorted(variables)) or "none"
        what = f"{{{{ {name} }}}}" if name else str(exc)
        raise PromptTemplateError(
            f"the prompt of {func.__qualname__} uses {what} where it cannot be left empty, "
            "and it has no value: it is neither an argument nor a key of the dict the "
            f"function returns (available: {available})"
        ) from None
    except jinja2.TemplateSyntaxError as exc:
        raise PromptTemplateError(
            f"the docstring of {func.__qualname__} is not a valid jinja2 template: "
            f"{exc.message} (line {exc.lineno})"
        ) from None
    empty = _used_names(source) - variables.keys()
    if empty:
        _warn_empty(func.__qualname__, frozenset(empty))
    return text


def format_prompt_jinja2(func: Callable[..., Any], **variables: Any) -> str:
    """``func``'s docstring rendered with ``variables``: a prompt function's template by hand.

    The original's helper; variables without a value render empty, as in
    ``@byzerllm.prompt``.
    """
    return render(func, variables)


def format_str_jinja2(template: str, **variables: Any) -> str:
    """A jinja2 template string rendered with ``variables`` (same rules as prompt functions)."""
    try:
        return _compile(template).render(**variables)
    except jinja2.UndefinedError as exc:
        raise PromptTemplateError(f"the template uses a variable with no value: {exc}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise PromptTemplateError(
            f"not a valid jinja2 template: {exc.message} (line {exc.lineno})"
        ) from None


def format_prompt(func: Callable[..., Any], **variables: Any) -> str:
    """The original's older helper: every docstring line stripped, then ``{name}`` filled in.

    Python ``str.format`` rules: ``{{`` and ``}}`` are literal braces.
    """
    return render_simple(func, variables)


def render_simple(func: Callable[..., Any], variables: dict[str, Any]) -> str:
    """``render="simple"`` of ``@byzerllm.prompt``: :func:`format_prompt`'s rules."""
    text = "\n".join(line.strip() for line in template_source(func).splitlines())
    try:
        return text.format(**variables)
    except KeyError as exc:
        raise PromptTemplateError(
            f"the prompt of {func.__qualname__} uses {{{exc.args[0]}}}, which has no value "
            f"(given: {', '.join(sorted(variables)) or 'none'})"
        ) from None
    except (IndexError, ValueError) as exc:
        raise PromptTemplateError(
            f"the docstring of {func.__qualname__} is not a str.format template: {exc}"
        ) from None

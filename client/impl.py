"""``llm.impl()``: the model writes a function's body from its signature and docstring.

The generated code is compiled once per (model, function, signature,
docstring) and cached on the client, so later calls cost nothing;
``llm.clear_impl_cache()`` forgets it. The code runs with a small globals
dict: builtins, ``pydantic``, ``typing`` names and the classes the
signature mentions. That keeps it from reading or patching the caller's
module, but it is NOT a sandbox: builtins include ``__import__``, so the
code can import and do anything the process can. Only use ``impl`` with a
model you would let write code on your machine (docs/prompt-functions.md).
"""

from __future__ import annotations

import builtins
import functools
import inspect
import time
import typing
from collections.abc import Callable
from typing import Any, NamedTuple, get_args, get_type_hints

import pydantic

from byzerllm.broker.errors import ImplError
from byzerllm.client.loop_thread import run_sync
from byzerllm.client.structured import is_model_type, parse_as
from byzerllm.client.utils import extract_code


class ImplKey(NamedTuple):
    """What a generated function is cached under: a change to any part asks again."""

    model: str
    instruction: str
    full_func_name: str  # module.qualname
    signature: str
    doc: str | None


def clear_impl_cache(
    cache: dict[Any, Any],
    model: str | None = None,
    full_func_name: str | None = None,
    instruction: str | None = None,
) -> None:
    """Forget generated functions: all of them, or those matching every part given
    (``full_func_name`` as ``module.qualname``, or just the function's name)."""
    for key in list(cache):
        if (
            (model is None or key.model == model)
            and (instruction is None or key.instruction == instruction)
            and (
                full_func_name is None
                or key.full_func_name == full_func_name
                or key.full_func_name.rsplit(".", 1)[-1] == full_func_name
            )
        ):
            del cache[key]


def _signature_text(func: Callable[..., Any]) -> str:
    return f"def {func.__name__}{inspect.signature(func)}:"


def impl_prompt(func: Callable[..., Any], instruction: str = "") -> str:
    doc = inspect.cleandoc(func.__doc__ or "")
    hints = _hints(func)
    models = {t for t in _mentioned_types(hints.values()) if is_model_type(t)}
    schemas = "".join(
        f"\n`{m.__name__}` is a pydantic model with this JSON schema:\n"
        f"```json\n{pydantic.TypeAdapter(m).json_schema()}\n```\n"
        for m in models
    )
    asked = f"{instruction.strip()}\n\n" if instruction and instruction.strip() else ""
    return asked + (
        "Implement this Python function. Keep its name and signature; put any imports it "
        "needs inside its body. The classes named in the signature are available.\n"
        f"```python\n{_signature_text(func)}\n    '''\n    {doc}\n    '''\n```\n{schemas}\n"
        "Answer with the complete function in one ```python code block."
    )


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return get_type_hints(func)
    except Exception:
        return {
            k: p.annotation
            for k, p in inspect.signature(func).parameters.items()
            if p.annotation is not p.empty
        }


def _mentioned_types(annotations: Any) -> set[Any]:
    found: set[Any] = set()
    for annotation in annotations:
        if isinstance(annotation, type):
            found.add(annotation)
        found |= _mentioned_types(get_args(annotation))
    return found


def restricted_globals(func: Callable[..., Any]) -> dict[str, Any]:
    """Only the names generated code needs; see the module docstring for what this trusts."""
    names: dict[str, Any] = {
        "__builtins__": builtins,
        "__name__": f"byzerllm_impl_{func.__name__}",
        "pydantic": pydantic,
        "BaseModel": pydantic.BaseModel,
        "Field": pydantic.Field,
    }
    names.update({n: getattr(typing, n) for n in ("Any", "Dict", "List", "Optional", "Tuple")})
    for tp in _mentioned_types(_hints(func).values()):
        if getattr(builtins, tp.__name__, None) is not tp:
            names[tp.__name__] = tp
    return names


def compile_impl(func: Callable[..., Any], answer: str) -> Callable[..., Any]:
    blocks = [code for lang, code in extract_code(answer) if lang in ("python", "py", "unknown")]
    code = blocks[-1] if blocks else answer
    scope = restricted_globals(func)
    try:
        exec(compile(code, f"<impl of {func.__qualname__}>", "exec"), scope)
    except Exception as exc:
        raise ImplError(
            f"the code written for {func.__qualname__} does not run: {exc}", code
        ) from None
    generated = scope.get(func.__name__)
    if not callable(generated):
        raise ImplError(
            f"the code written for {func.__qualname__} defines no {func.__name__}()", code
        )
    generated.__byzerllm_code__ = code
    return typing.cast(Callable[..., Any], generated)


def _coerce(func: Callable[..., Any], value: Any) -> Any:
    return_type = _hints(func).get("return")
    if return_type is None or not is_model_type(return_type):
        return value
    if isinstance(return_type, type) and isinstance(value, return_type):
        return value
    if isinstance(value, dict):
        return return_type.model_validate(value)
    if isinstance(value, str):
        return parse_as(value, return_type)
    return value


class ImplFunction:
    """A function whose body the model writes on first call."""

    def __init__(
        self,
        client: Any,
        func: Callable[..., Any],
        model: str | None,
        llm_config: dict[str, Any] | None,
        sync: bool,
        instruction: str = "",
        skip_cache: bool = False,
        verbose: bool = False,
    ) -> None:
        functools.update_wrapper(self, func)
        self.client = client
        self.func = func
        self.model = model
        self.llm_config = dict(llm_config or {})
        self.sync = sync
        self.instruction = instruction or ""
        self.skip_cache = skip_cache
        self.verbose = verbose

    def _key(self) -> ImplKey:
        f = self.func
        return ImplKey(
            self.model or self.client.default_model_name or "",
            self.instruction,
            f"{f.__module__}.{f.__qualname__}",
            str(inspect.signature(f)),
            f.__doc__,
        )

    async def implementation(self) -> Callable[..., Any]:
        """The compiled generated function (asks the model only when not cached)."""
        cache = self.client.impl_cache
        key = self._key()
        if self.skip_cache or key not in cache:
            start = time.perf_counter()
            [response] = await self.client.chat_oai(
                [{"role": "user", "content": impl_prompt(self.func, self.instruction)}],
                model=self.model,
                llm_config=self.llm_config,
            )
            generated = compile_impl(self.func, str(response.output))
            if self.verbose:  # the original printed what the model wrote, and the time
                print(
                    f"Generated code for {key.full_func_name} "
                    f"({time.perf_counter() - start:.2f}s):\n"
                    f"```python\n{generated.__byzerllm_code__}\n```",  # type: ignore[attr-defined]
                    flush=True,
                )
            if self.skip_cache:
                return generated
            cache[key] = generated
        return typing.cast(Callable[..., Any], cache[key])

    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        generated = await self.implementation()
        value = generated(*args, **kwargs)
        if inspect.isawaitable(value):
            value = await value
        return _coerce(self.func, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.sync and not self.skip_cache:
            cached = self.client.impl_cache.get(self._key())
            if cached is not None:  # no hop to the loop thread: as fast as a plain call
                return _coerce(self.func, cached(*args, **kwargs))
            return run_sync(self.acall(*args, **kwargs))
        return self.acall(*args, **kwargs)

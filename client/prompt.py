"""``@byzerllm.prompt``: the docstring is the prompt, the return annotation the answer.

The answer's shape follows the return annotation: ``str`` (or none) gives
text, a pydantic model gives a parsed object, ``Generator[str, None, None]``
gives text deltas. Everything runs on the async client; ``run()`` and
calling the function are the synchronous facade, ``arun()`` the async one.

Every ``with_*`` / ``options`` call returns a new prompt function, so
settings made for one call never leak into the next (in the original they
stuck to a module-level function).
"""

from __future__ import annotations

import collections.abc
import copy
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Generator
from dataclasses import dataclass, field
from typing import Any, get_origin, get_type_hints

from byzerllm.broker.errors import ConfigurationError
from byzerllm.client.loop_thread import iterate_sync, run_sync
from byzerllm.client.prompt_template import (
    PromptDefinitionError,
    prompt_variables,
    render,
    render_simple,
)
from byzerllm.client.structured import (
    StructuredOutputError,
    is_model_type,
    parse_as,
    schema_instruction,
)

CONTINUE_PROMPT = "接着前面的内容继续"
_STREAM_ORIGINS: set[Any] = {
    collections.abc.Generator,
    collections.abc.Iterator,
    collections.abc.AsyncGenerator,
    collections.abc.AsyncIterator,
}
_UNSET: Any = object()
# render= of @byzerllm.prompt: jinja2 templates, or the original's "simple" str.format
RENDERERS: dict[str, Callable[[Callable[..., Any], dict[str, Any]], str]] = {
    "jinja2": render,
    "jinja": render,
    "simple": render_simple,
}
_CALL_KEYS = ("model", "role_mapping", "extra_request_params")
# A small model often gets the JSON almost right; asking again with the reason
# usually fixes it. ``.options({"max_retries": 0})`` turns this off.
DEFAULT_PARSE_RETRIES = 2


def _repair(
    messages: list[dict[str, Any]], answer: str, error: StructuredOutputError
) -> list[dict[str, Any]]:
    """The conversation again, with the unreadable answer and the reason,
    and the question asked once more (after it, a response prefix if any)."""
    prefix = messages[-1:] if messages and messages[-1].get("role") == "assistant" else []
    asked = messages[: len(messages) - len(prefix)]
    reason = str(error).split("\n--- raw answer ---")[0]
    question = dict(asked[-1]) if asked else {"role": "user", "content": ""}
    question["content"] = (
        f"Your answer above could not be read: {reason}. Answer again.\n\n"
        f"{question.get('content', '')}"
    )
    return [*asked, {"role": "assistant", "content": answer}, question, *prefix]


class MarkedText:
    """The answer between response markers, as much of it as is certain so far.

    Streaming cannot take text back, so while the answer grows, what may not
    belong to it is held back: everything before the start marker (a model's
    preamble is dropped, as in the whole answer), and a tail that may be the
    beginning of the end marker or whitespace before it. ``final`` releases
    what remains, the whole text where no start marker came.
    """

    def __init__(self, start: str, end: str) -> None:
        self.start, self.end = start, end

    def visible(self, total: str, final: bool = False) -> str:
        begin = total.find(self.start)
        if begin < 0 and not final:
            return ""
        body = (total[begin + len(self.start) :] if begin >= 0 else total).lstrip()
        stop = body.find(self.end)
        if stop >= 0:
            return body[:stop].rstrip()
        if final:
            return body.rstrip()
        return body[: len(body) - _partial_tail(body, self.end)].rstrip()


def _partial_tail(text: str, marker: str) -> int:
    """The length of the longest end of ``text`` that begins ``marker``."""
    for size in range(min(len(text), len(marker) - 1), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


class MetaHolder:
    """Receives the metadata of the last answer: ``f.with_meta(holder)``."""

    def __init__(self) -> None:
        self.meta: dict[str, Any] | None = None

    def get_meta(self) -> dict[str, Any]:
        meta = self.meta or {}
        keys = (
            "input_tokens_count",
            "generated_tokens_count",
            "reasoning_content",
            "finish_reason",
            "first_token_time",
        )
        return {k: meta.get(k) for k in keys}


def async_client(llm: Any) -> Any:
    """The async core of any client: ``ByzerLLM.aio``, or an AsyncByzerLLM itself."""
    aio = getattr(llm, "aio", None)
    if aio is not None:
        return aio
    if hasattr(llm, "chat_oai"):
        return llm
    raise ConfigurationError(
        f"{llm!r} is not a byzerllm client; pass a ByzerLLM, AsyncByzerLLM, SimpleByzerLLM, "
        "a model alias string, or a function of the instance returning one"
    )


@dataclass
class _Plan:
    """One rendered call, prepared in the caller's thread."""

    messages: list[dict[str, Any]]
    call: dict[str, Any]
    llm_config: dict[str, Any]
    kind: str
    parse_cls: Any = None
    client: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class _StreamCall:
    """What ``arun`` gives for a Generator prompt: usable with ``async for`` or ``await``."""

    def __init__(self, agen: AsyncIterator[str]) -> None:
        self._agen = agen

    def __aiter__(self) -> AsyncIterator[str]:
        return self._agen

    def __await__(self) -> Generator[Any, None, AsyncIterator[str]]:
        async def itself() -> AsyncIterator[str]:
            return self._agen

        return itself().__await__()


class PromptFunction:
    """The object ``@byzerllm.prompt`` makes; a descriptor, so methods bind ``self``."""

    def __init__(
        self,
        func: Callable[..., Any],
        llm: Any = None,
        options: dict[str, Any] | None = None,
        check_result: bool = False,
        render: str = "jinja2",
    ) -> None:
        functools.update_wrapper(self, func)
        self.func = func
        self.render = render
        self.check_result = check_result
        self._instance: Any = None
        self._llm = llm
        self._options: dict[str, Any] = dict(options or {})
        self._return_type: Any = _UNSET
        self._extractor: Callable[[str], Any] | None = None
        self._markers: tuple[str, str] | None = None
        self._auto_remove_markers = True
        self._max_turns = 10
        self._continue_prompt = CONTINUE_PROMPT
        self._stop: list[str] | None = None
        self._return_prefix: str | None = None
        self._conversation: list[dict[str, Any]] = []
        self._meta_holder: Any = None
        self._shared: dict[str, Any] = {}  # clients made from alias strings, kept across copies

    # -- binding and modifiers (each returns a new prompt function) ---------------------

    def _copy(self, **changes: Any) -> PromptFunction:
        new = copy.copy(self)
        new.__dict__.update(changes)
        return new

    def __get__(self, instance: Any, owner: Any = None) -> PromptFunction:
        return self if instance is None else self._copy(_instance=instance)

    def with_llm(self, llm: Any) -> PromptFunction:
        """Set the client on this prompt function and return it: the original's
        in-place style (``f.with_llm(llm); f.run()``) and chaining both work.
        The client is where the function runs, not a per-call setting, so
        unlike the other ``with_*`` it does not make a copy."""
        self._llm = llm
        return self

    def with_return_type(self, cls: Any) -> PromptFunction:
        return self._copy(_return_type=cls)

    def with_extractor(self, fn: Callable[[str], Any]) -> PromptFunction:
        return self._copy(_extractor=fn)

    def with_response_markers(self, markers: list[str] | None = None) -> PromptFunction:
        markers = list(markers or ["<RESPONSE>", "</RESPONSE>"])
        if len(markers) != 2:
            raise ConfigurationError(
                f"with_response_markers needs exactly 2 markers (start, end), got {markers!r}"
            )
        return self._copy(_markers=(markers[0], markers[1]))

    def with_auto_remove_response_markers(self, remove: bool = True) -> PromptFunction:
        return self._copy(_auto_remove_markers=remove)

    def with_max_turns(self, turns: int) -> PromptFunction:
        return self._copy(_max_turns=max(1, int(turns)))

    def with_continue_prompt(self, text: str) -> PromptFunction:
        return self._copy(_continue_prompt=text)

    def with_stop_suffix_list(self, stops: list[str]) -> PromptFunction:
        return self._copy(_stop=list(stops))

    def with_return_prefix(self, prefix: str) -> PromptFunction:
        return self._copy(_return_prefix=prefix)

    def with_conversation(self, messages: list[dict[str, Any]]) -> PromptFunction:
        return self._copy(_conversation=list(messages))

    def with_meta(self, holder: Any) -> PromptFunction:
        return self._copy(_meta_holder=holder)

    def options(self, options: dict[str, Any]) -> PromptFunction:
        merged = {**self._options, **options}
        if "llm_config" in self._options and "llm_config" in options:
            merged["llm_config"] = {**self._options["llm_config"], **options["llm_config"]}
        return self._copy(_options=merged)

    # -- inspection --------------------------------------------------------------------

    def _annotation(self) -> Any:
        annotation = inspect.signature(self.func).return_annotation
        if isinstance(annotation, str):
            try:
                annotation = get_type_hints(self.func).get("return", annotation)
            except Exception as exc:
                raise PromptDefinitionError(
                    f"cannot resolve the return annotation {annotation!r} of "
                    f"{self.func.__qualname__}: {exc}"
                ) from None
        return annotation

    def _kind(self) -> tuple[str, Any, bool]:
        """(text|model|stream, class to parse as, whether to put the schema in the prompt)."""
        annotation = self._annotation()
        if annotation in (inspect.Signature.empty, None, str):
            kind = "text"
        elif get_origin(annotation) in _STREAM_ORIGINS or annotation in _STREAM_ORIGINS:
            kind = "stream"
        elif is_model_type(annotation):
            if self._return_type is not _UNSET:
                return "model", self._return_type, True
            return "model", annotation, True
        else:
            raise PromptDefinitionError(
                f"{self.func.__qualname__} should return str, a pydantic model or "
                f"Generator[str, None, None], not {annotation!r}"
            )
        if self._return_type is not _UNSET and kind == "text":
            return "model", self._return_type, False
        return kind, None, False

    def _resolve_llm(self) -> Any:
        llm = self._llm
        if callable(llm) and not hasattr(llm, "chat_oai") and not hasattr(llm, "aio"):
            llm = llm(self._instance)
        if isinstance(llm, str):
            from byzerllm.client.sync import ByzerLLM

            key = f"alias:{llm}"
            if key not in self._shared:
                self._shared[key] = ByzerLLM.from_default_model(llm)
            llm = self._shared[key]
        return llm

    # -- calls -------------------------------------------------------------------------

    def prompt(self, *args: Any, **kwargs: Any) -> str:
        """The rendered prompt text; no model is called."""
        variables = prompt_variables(self.func, self._instance, args, kwargs)
        return RENDERERS[self.render](self.func, variables)

    def _plan(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Plan:
        kind, parse_cls, with_schema = self._kind()
        llm = self._resolve_llm()
        if llm is None:
            name = self.func.__qualname__
            raise ConfigurationError(
                f"prompt function {name} has no llm: use @byzerllm.prompt(llm=...) or "
                f"{name}.with_llm(llm).run(...)"
            )
        text = self.prompt(*args, **kwargs)
        if with_schema:
            text += schema_instruction(parse_cls)
        if self._markers:
            start, end = self._markers
            text += (
                f"\n\nWrite your whole answer between {start} and {end}: start it with {start} "
                f"and end it with {end}."
            )
        llm_config = dict(self._options.get("llm_config") or {})
        if self._stop:
            llm_config["gen.stop"] = list(self._stop)
        messages = [*self._conversation, {"role": "user", "content": text}]
        if self._return_prefix is not None:
            messages.append({"role": "assistant", "content": self._return_prefix})
            llm_config["gen.response_prefix"] = True
        call = {k: self._options[k] for k in _CALL_KEYS if k in self._options}
        return _Plan(messages, call, llm_config, kind, parse_cls, async_client(llm))

    def _record_meta(self, meta: dict[str, Any]) -> None:
        if self._meta_holder is not None:
            self._meta_holder.meta = meta

    async def _chat(
        self, plan: _Plan, messages: list[dict[str, Any]]
    ) -> tuple[str, dict[str, Any]]:
        [response] = await plan.client.chat_oai(messages, llm_config=plan.llm_config, **plan.call)
        return str(response.output), dict(response.metadata)

    async def _with_markers(
        self, plan: _Plan, messages: list[dict[str, Any]]
    ) -> tuple[str, dict[str, Any]]:
        """Ask again with the continue prompt until the end marker shows up."""
        assert self._markers is not None
        start, end = self._markers
        messages = list(messages)
        total, meta = "", dict[str, Any]()
        for turn in range(self._max_turns):
            piece, meta = await self._chat(plan, messages)
            total += piece
            if end in total or turn + 1 == self._max_turns:
                break
            messages += [
                {"role": "assistant", "content": piece},
                {"role": "user", "content": self._continue_prompt},
            ]
        if not self._auto_remove_markers:
            return total, meta
        return MarkedText(start, end).visible(total, final=True), meta

    async def _answer(
        self, plan: _Plan, messages: list[dict[str, Any]]
    ) -> tuple[str, dict[str, Any]]:
        if self._markers:
            answer, meta = await self._with_markers(plan, messages)
        else:
            answer, meta = await self._chat(plan, messages)
        self._record_meta(meta)
        if self._return_prefix is not None:
            answer = self._return_prefix + answer
        return answer, meta

    async def _execute(self, plan: _Plan) -> Any:
        answer, _ = await self._answer(plan, plan.messages)
        if self._extractor is not None:
            return self._extractor(answer)
        if plan.kind != "model":
            return answer
        retries = int(self._options.get("max_retries", DEFAULT_PARSE_RETRIES))
        for attempt in range(retries + 1):
            try:
                return parse_as(answer, plan.parse_cls)
            except StructuredOutputError as exc:
                if attempt == retries:
                    if retries:
                        exc.add_note(f"{attempt + 1} answers were asked for; none could be read")
                    raise
                answer, _ = await self._answer(plan, _repair(plan.messages, answer, exc))
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stream(self, plan: _Plan) -> AsyncIterator[str]:
        if self._markers:
            async for text in self._stream_with_markers(plan):
                yield text
            return
        delta_mode = self._options.get("delta_mode", True)
        async for text, meta in plan.client.stream_chat_oai(
            plan.messages, delta_mode=delta_mode, llm_config=plan.llm_config, **plan.call
        ):
            if meta.finish_reason is not None or meta.extra_info:
                self._record_meta(meta.extra_info)
            if text:
                yield text

    async def _stream_turn(self, plan: _Plan, messages: list[dict[str, Any]]) -> AsyncIterator[str]:
        async for text, meta in plan.client.stream_chat_oai(
            messages, delta_mode=True, llm_config=plan.llm_config, **plan.call
        ):
            if meta.finish_reason is not None or meta.extra_info:
                self._record_meta(meta.extra_info)
            if text:
                yield text

    async def _stream_with_markers(self, plan: _Plan) -> AsyncIterator[str]:
        """Stream turn after turn, as :meth:`_with_markers` asks, until the end marker;
        with the markers removed, what is yielded adds up to what ``run`` returns."""
        assert self._markers is not None
        end = self._markers[1]
        view = MarkedText(*self._markers) if self._auto_remove_markers else None
        cumulative = not self._options.get("delta_mode", True)
        messages, total, shown = list(plan.messages), "", ""
        for turn in range(self._max_turns):
            piece = ""
            async for text in self._stream_turn(plan, messages):
                piece += text
                total += text
                visible = view.visible(total) if view is not None else total
                if len(visible) > len(shown):
                    yield visible if cumulative else visible[len(shown) :]
                    shown = visible
                if end in total:
                    break  # the answer is complete; what follows the marker is not wanted
            if end in total or turn + 1 == self._max_turns:
                break
            messages += [
                {"role": "assistant", "content": piece},
                {"role": "user", "content": self._continue_prompt},
            ]
        visible = view.visible(total, final=True) if view is not None else total
        if len(visible) > len(shown):
            yield visible if cumulative else visible[len(shown) :]

    def arun(self, *args: Any, **kwargs: Any) -> Any:
        """Async run: ``await f.arun(...)``; a Generator prompt also allows ``async for``."""
        plan = self._plan(args, kwargs)
        if plan.kind == "stream":
            return _StreamCall(self._stream(plan))
        return self._execute(plan)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the model and wait: the answer text, object, or an iterator of deltas."""
        plan = self._plan(args, kwargs)
        if plan.kind == "stream":
            return iterate_sync(self._stream(plan))
        return run_sync(self._execute(plan))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """With an llm, like :meth:`run`; without one, the rendered prompt (as the original)."""
        if self._resolve_llm() is None:
            return self.prompt(*args, **kwargs)
        return self.run(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<prompt function {self.func.__qualname__}>"


def prompt(
    llm: Any = None,
    render: str = "jinja2",
    check_result: bool = False,
    options: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], PromptFunction]:
    """Decorator: ``@byzerllm.prompt()``, ``@byzerllm.prompt(llm=llm)``, ``prompt("alias")``,
    ``@byzerllm.prompt(lambda self: self.llm)`` on methods.
    """
    if render not in RENDERERS:
        raise ConfigurationError(
            f"render={render!r} is not supported: use 'jinja2' ({{{{ name }}}} templates) or "
            "'simple' ({name}, Python's str.format)"
        )
    if llm is not None and not (isinstance(llm, str) or callable(llm) or hasattr(llm, "chat_oai")):
        raise ConfigurationError(
            f"llm={llm!r} is not usable: pass a client, an alias string, or a function "
            "of the instance returning a client"
        )

    def decorate(func: Callable[..., Any]) -> PromptFunction:
        return PromptFunction(
            func, llm=llm, options=options, check_result=check_result, render=render
        )

    return decorate

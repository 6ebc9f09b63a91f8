"""Small helpers the guide imports from the original's paths.

``byzerllm.utils.client.code_utils.extract_code``, ``byzerllm.apps.utils.TagExtractor``
and ``byzerllm.utils.langutil.asyncfy*`` re-export these.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import re
from collections.abc import Callable, Generator
from typing import Any, Optional

import anyio
import anyio.to_thread
from pydantic import BaseModel

UNKNOWN = "unknown"
CODE_BLOCK_PATTERN = r"```[ \t]*([\w+\-#.]*)[^\S\r\n]*\r?\n(.*?)\r?\n?[ \t]*```"


def extract_code(
    text: str, pattern: str = CODE_BLOCK_PATTERN, detect_single_line_code: bool = False
) -> list[tuple[str, str]]:
    """Fenced code blocks as (language, code); ``[("unknown", text)]`` when there are none."""
    if detect_single_line_code:
        inline = re.findall(r"`([^`\n]+)`", text)
        if inline and "```" not in text:
            return [(UNKNOWN, code.strip()) for code in inline]
    blocks = re.findall(pattern, text, flags=re.DOTALL)
    if not blocks:
        return [(UNKNOWN, text)]
    return [(lang.strip(), code) for lang, code in blocks]


# -- <_tag_>...</_tag_> extraction -------------------------------------------------------

_TAG_TOKEN = re.compile(r"<(/?)_([A-Za-z0-9]+)_>")


class Tag(BaseModel):
    """A ``<_name_>...</_name_>`` pair; ``content`` is its text, or its child tags."""

    start_tag: str
    end_tag: str
    content: str | list[Tag] = ""
    parent: Optional[Tag] = None  # noqa: UP045 - pydantic needs the forward reference resolved

    def __repr__(self) -> str:
        return f"Tag({self.start_tag!r}, content={self.content!r})"


Tag.model_rebuild()


class TagExtractor:
    """Extract ``<_tag_>`` pairs (nested ones too) from text; text between tags is dropped."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.root_tag = Tag(start_tag="<_ROOT_>", end_tag="</_ROOT_>", content=[])

    def extract(self) -> Tag:
        stack: list[tuple[Tag, int, list[Tag]]] = []
        roots: list[Tag] = []
        for match in _TAG_TOKEN.finditer(self.text):
            closing, name = match.group(1), match.group(2)
            if not closing:
                tag = Tag(start_tag=f"<_{name}_>", end_tag=f"</_{name}_>")
                stack.append((tag, match.end(), []))
                continue
            if not stack or stack[-1][0].end_tag != match.group(0):
                continue  # a stray closing tag
            tag, begin, children = stack.pop()
            tag.content = children if children else self.text[begin : match.start()]
            (stack[-1][2] if stack else roots).append(tag)
        self.root_tag.content = roots
        return self.root_tag


# -- making sync functions async --------------------------------------------------------


class _AsyncCall:
    """The call's result, awaitable; ``async with`` enters the (async) context it returns."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._entered: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._make().__await__()

    async def __aenter__(self) -> Any:
        self._entered = await self._make()
        if hasattr(self._entered, "__aenter__"):
            return await self._entered.__aenter__()
        return self._entered.__enter__()

    async def __aexit__(self, *exc: Any) -> Any:
        if hasattr(self._entered, "__aexit__"):
            return await self._entered.__aexit__(*exc)
        return self._entered.__exit__(*exc)


def asyncfy_with_semaphore(
    func: Callable[..., Any],
    semaphore: Optional[anyio.Semaphore] = None,  # noqa: UP045 - the guide's signature
    timeout: Optional[float] = None,  # noqa: UP045
) -> Callable[..., Any]:
    """Run ``func`` in a worker thread (or await it if async), bounded by ``semaphore``.

    A timeout raises TimeoutError. The result can also be used with
    ``async with`` when ``func`` returns a context manager, as in the guide.
    """

    async def call(*args: Any, **kwargs: Any) -> Any:
        async def run() -> Any:
            if inspect.iscoroutinefunction(func):
                return await func(*args, **kwargs)
            # on timeout the thread cannot be stopped: stop waiting for it instead
            return await anyio.to_thread.run_sync(
                functools.partial(func, *args, **kwargs), abandon_on_cancel=timeout is not None
            )

        limit = anyio.fail_after(timeout) if timeout is not None else contextlib.nullcontext()
        with limit:
            if semaphore is None:
                return await run()
            async with semaphore:
                return await run()

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> _AsyncCall:
        return _AsyncCall(lambda: call(*args, **kwargs))

    return wrapper


def asyncfy(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap ``func`` in an async function; it still runs in the caller's thread."""

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper

"""The usage of one admitted request: its tokens and whether it failed, written once.

A route opens a :class:`Meter` around its work (``async with meter:``), adds the
answer's OpenAI ``usage`` when it knows it, and the meter writes at the end:
an exception means the request ended in an error status. A stream ends later
than its route: ``meter.stream(events)`` hands the meter over to the event
stream, which adds the usage of the stream's tail and writes when the stream
ends. The write itself is not awaited on the response path (see auth.KeyGate).

A client that leaves (499, a cancelled task) is no error of the request: its
tokens so far are not known, so nothing but the request is counted.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing
from types import TracebackType
from typing import Any

# (input tokens, output tokens, whether the request failed) -> None, never raises
UsageSink = Callable[[int, int, bool], None]


def _is_error(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and getattr(exc, "status", 500) != 499


class Meter:
    """Tokens and outcome of one request admitted for an API key."""

    def __init__(self, sink: UsageSink) -> None:
        self._sink = sink
        self._input = 0
        self._output = 0
        self._failed = False
        self._streaming = False
        self._done = False

    def add(self, usage: Mapping[str, Any]) -> None:
        """Count an OpenAI ``usage`` object (``prompt_tokens``, ``completion_tokens``)."""
        self._input += int(usage.get("prompt_tokens") or 0)
        self._output += int(usage.get("completion_tokens") or 0)

    async def __aenter__(self) -> Meter:
        return self

    async def __aexit__(
        self,
        typ: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            self._failed = self._failed or _is_error(exc)
            self._finish()
        elif not self._streaming:
            self._finish()

    def stream(self, events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        """``events``, metered: the meter writes when the stream ends, not the route."""
        self._streaming = True
        return self._metered(events)

    async def _metered(self, events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        try:
            async with aclosing(events):
                async for event in events:
                    yield event
        except BaseException as exc:
            self._failed = self._failed or _is_error(exc)
            raise
        finally:
            self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._sink(self._input, self._output, self._failed)


class _Unmetered(Meter):
    """For callers whose usage nobody records (the master key, no key): keeps nothing,
    so one instance serves every request."""

    def __init__(self) -> None:
        super().__init__(lambda input_tokens, output_tokens, failed: None)

    def add(self, usage: Mapping[str, Any]) -> None:
        pass

    def stream(self, events: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        return events

    def _finish(self) -> None:
        pass


UNMETERED: Meter = _Unmetered()

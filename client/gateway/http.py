"""HTTP plumbing every route of the gateway shares: JSON and SSE responses, errors in
OpenAI's shape, and the race of a request against its client's disconnect.

Nothing of a key or a prompt is logged: an unexpected failure is logged as its
type and traceback frames, without its message.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from byzerllm.broker.errors import ByzerLLMError, ConfigurationError
from byzerllm.broker.spec import check_alias
from byzerllm.client.gateway.errors import _ApiError, from_byzerllm, internal_error

log = logging.getLogger("byzerllm.gateway")

T = TypeVar("T")


class JSONBytes(Response):
    media_type = "application/json"


def error_response(err: _ApiError) -> Response:
    return JSONBytes(err.encoded(), status_code=err.status, headers=err.headers)


def as_api_error(exc: BaseException) -> _ApiError:
    if isinstance(exc, _ApiError):
        return exc
    if isinstance(exc, ByzerLLMError):
        return from_byzerllm(exc)
    log_unexpected(exc)
    return internal_error()


def log_unexpected(exc: BaseException) -> None:
    """The failure's type and where it happened; not its message, which may quote a prompt."""
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s in the gateway:\n%s", type(exc).__name__, frames)


async def _disconnected(receive: Receive) -> None:
    """Returns when the client is gone (or the response complete)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _raced_with_disconnect(receive: Receive, work: Awaitable[T]) -> asyncio.Future[T]:
    """``work`` run until it ends or the client leaves (then it is cancelled, and with
    it the request on the worker); the finished task."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return task


async def until_done_or_gone(request: Request, work: Awaitable[T]) -> T:
    """``work``'s result; cancelled (and so stopped on the worker) if the client leaves."""
    task = await _raced_with_disconnect(request.receive, work)
    if task.cancelled():
        raise _ApiError(499, "the client closed the request", type_="cancelled")
    return task.result()


class EventStream(Response):
    """Server-sent events from an async iterator of encoded events.

    The first event is awaited before the response starts, so a request that
    fails at once (unknown alias, overload, no worker) gets its HTTP status;
    a failure after that is sent as an ``error`` event, as OpenAI does. The
    stream is raced against the client's disconnect: a client that leaves
    cancels the iterator, and with it the request on the worker.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        run = await _raced_with_disconnect(receive, self._run(send))
        if not run.cancelled() and run.exception() is not None:
            log_unexpected(run.exception())  # type: ignore[arg-type]

    async def _run(self, send: Send) -> None:
        async with aclosing(self.events) as events:
            try:
                first = await anext(events, b"")
            except Exception as exc:
                err = as_api_error(exc)
                await send(
                    {
                        "type": "http.response.start",
                        "status": err.status,
                        "headers": error_response(err).raw_headers,
                    }
                )
                await send({"type": "http.response.body", "body": err.encoded()})
                return
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            try:
                async for event in events:
                    await send({"type": "http.response.body", "body": event, "more_body": True})
            except Exception as exc:  # the status is sent: the error goes as an event
                event = b"data: " + as_api_error(exc).encoded() + b"\n\n"
                await send({"type": "http.response.body", "body": event, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def alias_of(name: str) -> str:
    try:
        return check_alias(name)
    except ConfigurationError as exc:
        raise _ApiError(404, str(exc), param="model", code="model_not_found") from None


def guarded(
    handler: Callable[..., Awaitable[Response]],
) -> Callable[..., Awaitable[Response]]:
    """Any failure becomes an OpenAI-shaped answer; unexpected ones are logged safely."""

    @functools.wraps(handler)
    async def guarded(*args: Any, **kwargs: Any) -> Response:
        try:
            return await handler(*args, **kwargs)
        except Exception as exc:
            return error_response(as_api_error(exc))

    return guarded

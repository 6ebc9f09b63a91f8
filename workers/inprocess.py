"""Backends served in the calling process, with the shape of the Redis channel.

``SimpleByzerLLM`` (the original's pure-client mode, no Redis at all) talks
to its backends through :class:`InProcessChannel`: ``submit`` and
``replies`` answer like the client's Redis channel, and a request runs
through the same :class:`~byzerllm.workers.execution.Execution` a worker uses.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from byzerllm.broker.errors import ModelNotFoundError, RequestCancelledError, error_from_wire
from byzerllm.broker.messages import (
    FINAL_TYPES,
    Reply,
    ReplyType,
    Request,
    RequestKind,
    delta_data,
)
from byzerllm.workers.backend import Backend
from byzerllm.workers.execution import Execution


@dataclass
class LocalCall:
    request: Request

    @property
    def rid(self) -> str:
        return self.request.id


class InProcessChannel:
    """Runs requests on the backends of this process (alias -> backend)."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        self.backends = backends
        self._seq = itertools.count()
        self._running: dict[str, asyncio.Queue[Reply]] = {}  # request id -> its replies

    async def submit(
        self,
        alias: str,
        kind: RequestKind,
        payload: dict[str, Any],
        timeout: float | None,
        owner: object | None = None,
        request_id: str | None = None,
    ) -> LocalCall:
        if alias not in self.backends:
            raise ModelNotFoundError(
                alias,
                f"no model is deployed under {alias!r} in this SimpleByzerLLM; call "
                f"llm.deploy(model_path=..., pretrained_model_type=..., udf_name={alias!r}, "
                "infer_params={...}) first",
            )
        return LocalCall(Request.new(alias, kind, payload, "", timeout, request_id))

    def abort(self, rid: str) -> bool:
        """End the running call ``rid`` with RequestCancelledError (its generation stops)."""
        queue = self._running.get(rid)
        if queue is None:
            return False
        err = RequestCancelledError(f"request {rid} was aborted")
        queue.put_nowait(Reply(rid=rid, seq=-1, type=ReplyType.ERROR, data=err.to_wire()))
        return True

    def _reply(self, call: LocalCall, type_: ReplyType, data: dict[str, Any]) -> Reply:
        return Reply(rid=call.rid, seq=next(self._seq), type=type_, data=data)

    async def replies(self, call: LocalCall) -> AsyncIterator[Reply]:
        """The call's replies up to its end, as they come; errors are raised.

        Leaving early cancels the generation.
        """
        execution = Execution(self.backends[call.request.alias])
        queue: asyncio.Queue[Reply] = asyncio.Queue()

        def on_delta(
            text: str, reasoning: str, audio: bytes, tool_calls: list[dict[str, Any]] | None
        ) -> None:
            data = delta_data(text, reasoning, audio, tool_calls)
            queue.put_nowait(self._reply(call, ReplyType.DELTA, data))

        async def run() -> None:
            type_, data = await execution.run(call.request, on_delta)
            queue.put_nowait(self._reply(call, type_, data))

        task = asyncio.create_task(run())
        self._running[call.rid] = queue
        try:
            while True:
                item = await queue.get()
                if item.type is ReplyType.ERROR:
                    raise error_from_wire(item.data)
                yield item
                if item.type in FINAL_TYPES:
                    return
        finally:
            self._running.pop(call.rid, None)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        for backend in list(self.backends.values()):
            await backend.aclose()

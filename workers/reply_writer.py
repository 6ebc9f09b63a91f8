"""Writes replies, acks and worker state back to Redis in coalesced pipelines.

Everything a worker has to say goes through one writer task. While a
pipeline is in flight, new deltas of a request are appended to its unsent
delta, so a backend faster than Redis produces fewer, larger entries; when
nothing is in flight the next entry leaves at once. A request's first delta
is never held back: a backend that hands over a whole answer at once (a
vendor's stream already in the socket buffer) would otherwise be read to its
end before the writer task ran, and the first token would leave with the
last, so :meth:`ReplyWriter.delta` asks the generation to wait until the
writer has sent it (when the writer is idle; under load it coalesces as
any delta does). A request's final reply and its XACK travel in the same
pipeline, final reply first: an acked request always has its answer written.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from byzerllm.broker.connection import (
    READ_TIMEOUT,
    OutageLog,
    answered_within,
    raise_if_cancelling,
)
from byzerllm.broker.keys import AliasKeys
from byzerllm.broker.messages import ReplyType, delta_data, join_tool_call_fragments, reply
from byzerllm.broker.metrics import MetricsDelta, MetricsRecorder
from byzerllm.broker.replies import write_batch
from byzerllm.broker.requests import dead_letter_entry

if TYPE_CHECKING:  # redis is broker/'s business; here it only names types
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

# Worker state (free slots, totals) is for dashboards: written at most this
# often, so a busy worker does not add a hash write to every reply.
STATE_INTERVAL = 0.05


class ReplyWriter:
    def __init__(
        self,
        redis: aioredis.Redis,
        keys: AliasKeys,
        worker_id: str,
        on_client_gone: Callable[[str], None],
        metrics: MetricsRecorder | None = None,
        read_timeout: float = READ_TIMEOUT,
    ) -> None:
        # best a client made without timed_reads: each pipeline is timed here, once
        self._redis = redis
        self._read_timeout = read_timeout
        # per-request counters, written with the worker state (never a call per request)
        self.metrics = metrics or MetricsRecorder()
        self._keys = keys
        self._worker_id = worker_id
        self._on_client_gone = on_client_gone
        self._outage = OutageLog(log, "writing replies")
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._open_delta: dict[str, dict[str, Any]] = {}
        self._seq: dict[str, int] = {}
        self._delta_sent: set[str] = set()  # requests whose first delta is queued
        self._flushing = False  # a pipeline is in flight
        # generations waiting until the next pipeline has left (their first delta in it)
        self._first_waiters: list[asyncio.Future[None]] = []
        self._acks: list[str] = []
        self._dead: list[dict[str, Any]] = []
        self._marks: dict[str, tuple[str, int]] = {}  # run marks: request id -> (value, ttl)
        self._state: dict[str, str] = {}
        self._lru: dict[str, float] = {}
        self._last_state_write = 0.0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="reply-writer")

    # -- what the worker says ---------------------------------------------------

    def _next_seq(self, rid: str) -> int:
        seq = self._seq.get(rid, 0)
        self._seq[rid] = seq + 1
        return seq

    def _queue(self, reply_to: str, item: dict[str, Any]) -> None:
        self._pending.setdefault(reply_to, []).append(item)
        self._idle.clear()
        self._wakeup.set()

    def delta(
        self,
        rid: str,
        reply_to: str,
        attempt: int,
        text: str,
        reasoning: str,
        audio: bytes = b"",
        tool_calls: list[dict[str, Any]] | None = None,
    ) -> asyncio.Future[None] | None:
        """Queue a piece of the answer. For a request's first delta while no
        pipeline is in flight, returns a future that is done once a pipeline
        carrying it was tried: the generation awaits it, so the first token
        leaves before the rest of a burst is read."""
        open_delta = self._open_delta.get(rid)
        # text after tool-call fragments starts a new entry: a merged one would show it first
        if open_delta is not None and (
            "tool_calls" not in open_delta["data"] or not (text or reasoning)
        ):
            data = open_delta["data"]
            data["text"] += text
            data["reasoning"] += reasoning
            if audio:
                data["audio"] = data.get("audio", b"") + audio
            if tool_calls:
                join_tool_call_fragments(data.setdefault("tool_calls", []), tool_calls)
            return None
        item = reply(
            rid,
            self._next_seq(rid),
            ReplyType.DELTA,
            delta_data(text, reasoning, audio, tool_calls),
            attempt,
        )
        self._open_delta[rid] = item
        self._queue(reply_to, item)
        if rid in self._delta_sent:
            return None
        self._delta_sent.add(rid)
        if self._flushing or self._task is None or self._task.done():
            return None  # it goes with the next pipeline, coalesced with what comes
        waiter = asyncio.get_running_loop().create_future()
        self._first_waiters.append(waiter)
        return waiter

    def notice(
        self, rid: str, reply_to: str, attempt: int, type_: ReplyType, data: dict[str, Any]
    ) -> None:
        """A non-final entry (retry, meta) that must not merge with deltas."""
        self._open_delta.pop(rid, None)
        self._queue(reply_to, reply(rid, self._next_seq(rid), type_, data, attempt))

    def finish(
        self,
        rid: str,
        reply_to: str,
        attempt: int,
        entry_id: str,
        type_: ReplyType | None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """The final reply (or none, for a cancelled request) plus the ack."""
        self._open_delta.pop(rid, None)
        if type_ is not None:
            self._queue(reply_to, reply(rid, self._next_seq(rid), type_, data or {}, attempt))
        self._seq.pop(rid, None)
        self._delta_sent.discard(rid)
        self.ack(entry_id)

    def ack(self, entry_id: str) -> None:
        self._acks.append(entry_id)
        self._idle.clear()
        self._wakeup.set()

    def dead_letter(self, entry_id: str, fields: dict[bytes, bytes], reason: str) -> None:
        self._dead.append(dead_letter_entry(entry_id, fields, reason))
        self.ack(entry_id)

    def marks(self, marks: dict[str, tuple[str, int]]) -> None:
        """Run marks (broker.run_marks) to write with the next flush."""
        self._marks.update(marks)
        self._idle.clear()
        self._wakeup.set()

    def state(self, fields: dict[str, str], last_work: float | None = None) -> None:
        """Worker hash fields (and LRU time) to write with the next flush."""
        self._state.update(fields)
        if last_work is not None:
            self._lru[self._worker_id] = last_work
        self._idle.clear()
        self._wakeup.set()

    # -- the writer task ----------------------------------------------------------

    def _state_wait(self) -> float | None:
        """Seconds until worker state may be written again; None when there is none."""
        if not (self._state or self._lru or self.metrics.pending):
            return None
        return max(0.0, self._last_state_write + STATE_INTERVAL - time.monotonic())

    async def _run(self) -> None:
        while True:
            raise_if_cancelling()  # a library may have swallowed our cancel
            state_wait = self._state_wait()
            if not (self._pending or self._acks or self._dead or self._marks) and state_wait != 0:
                if state_wait is None:
                    self._idle.set()
                    if self._closing:
                        return
                self._wakeup.clear()
                try:
                    async with asyncio.timeout(state_wait):
                        await self._wakeup.wait()
                except TimeoutError:
                    pass
                continue
            batch = self._take(with_state=state_wait == 0)
            waiters, self._first_waiters = self._first_waiters, []
            self._flushing = True
            try:
                await self._flush(*batch)
                self._outage.recovered()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis blip: keep everything and try again
                raise_if_cancelling()
                self._outage.failed(exc)  # said once per outage, not once per retry
                self._put_back(*batch)
                _release(waiters)  # a generation never waits out an outage
                await asyncio.sleep(0.5)
            finally:
                self._flushing = False
                _release(waiters)

    def _take(self, with_state: bool) -> tuple[Any, ...]:
        state: dict[str, str] = {}
        lru: dict[str, float] = {}
        metrics: MetricsDelta | None = None
        if with_state:
            state, lru, self._state, self._lru = self._state, self._lru, {}, {}
            metrics = self.metrics.take()
            self._last_state_write = time.monotonic()
        batch = (self._pending, self._acks, self._dead, state, lru, metrics, self._marks)
        self._pending, self._acks, self._dead, self._marks = {}, [], [], {}
        self._open_delta.clear()
        return batch

    def _put_back(
        self,
        pending: dict[str, list[dict[str, Any]]],
        acks: list[str],
        dead: list[dict[str, Any]],
        state: dict[str, str],
        lru: dict[str, float],
        metrics: MetricsDelta | None,
        marks: dict[str, tuple[str, int]],
    ) -> None:
        for stream, items in pending.items():
            self._pending[stream] = items + self._pending.get(stream, [])
        self._acks = acks + self._acks
        self._dead = dead + self._dead
        self._state = {**state, **self._state}
        self._lru = {**lru, **self._lru}
        self.metrics.put_back(metrics)
        self._marks = {**marks, **self._marks}

    async def _flush(
        self,
        pending: dict[str, list[dict[str, Any]]],
        acks: list[str],
        dead: list[dict[str, Any]],
        state: dict[str, str],
        lru: dict[str, float],
        metrics: MetricsDelta | None,
        marks: dict[str, tuple[str, int]],
    ) -> None:
        work = write_batch(
            self._redis,
            self._keys,
            self._worker_id,
            pending,
            acks,
            dead,
            state,
            lru.get(self._worker_id),
            metrics,
            marks,
        )
        outcome = await answered_within(work, self._read_timeout, "a reply pipeline")
        for stream in outcome.gone:  # the client's reply stream expired: it left
            for item in pending[stream]:
                self._on_client_gone(item["rid"])
        for stream, reason in outcome.failed.items():
            # nobody can be answered there: drop these replies (never the batch) and
            # stop their requests
            rids = sorted({item["rid"] for item in pending[stream]})
            log.warning("dropping %d replies to %s: %s", len(pending[stream]), stream[:200], reason)
            for rid in rids:
                self._on_client_gone(rid)
        for reason in outcome.other_errors:
            log.warning("a write of worker state or acks failed: %s", reason)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until everything queued so far is written."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            log.warning("reply writer did not drain in %.1fs", timeout)

    async def aclose(self) -> None:
        await self.drain()
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


def _release(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)

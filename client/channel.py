"""The client's side of the data plane: submit requests, route their replies.

One :class:`RequestChannel` per event loop and Redis: it owns one reply
stream and one reader task that serves every in-flight request of the
process, so a thousand concurrent requests cost one blocked XREAD, not a
thousand connections. Submissions from concurrent callers share pipelines.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections import deque
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from byzerllm.broker.batcher import CommandBatcher
from byzerllm.broker.connection import (
    OutageLog,
    connect,
    raise_if_cancelling,
    reconnect_later,
    redis_errors,
)
from byzerllm.broker.errors import (
    BrokerUnavailableError,
    ByzerLLMError,
    ConfigurationError,
    ProtocolError,
    RequestCancelledError,
    RequestTimeoutError,
    error_from_wire,
)
from byzerllm.broker.keys import Keys
from byzerllm.broker.messages import (
    FINAL_TYPES,
    Reply,
    ReplyType,
    Request,
    RequestKind,
    decode_replies,
)
from byzerllm.broker.replies import ReplyStream
from byzerllm.broker.requests import Admission, still_queued
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.loop_thread import is_background_loop

if TYPE_CHECKING:  # redis is broker/'s business; here it only names types
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

TRIM_EVERY = 256  # reply entries read between two trims of the reply stream
# seconds between two checks that the reply stream still exists (and pushes of its
# expiry): a stream lost with Redis' data is noticed this soon, not at the deadline
KEEP_ALIVE_EVERY = 5.0
# seconds between the reader's recovery from an outage and its check for requests the
# (new) master lost: time for workers to reconnect and write their run marks first
RESEND_AFTER = 3.0


class Mailbox:
    """A call's replies in arrival order, for its one reader: what asyncio.Queue
    does here, with one deque and a future only while the reader waits. (A Queue
    holds three deques and a loop binding; with a thousand calls in flight, those
    are what the garbage collector walks through on each of its passes.)"""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Reply) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Reply:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class Call:
    """One in-flight request as the reader sees it; ``owner`` is the client that made it.

    It keeps its request and entry id until it ends, to send it again should a
    failover lose it (:meth:`RequestChannel._resend_lost`), and the next reply
    number it expects, to drop a reply written twice and notice lost ones.
    """

    __slots__ = (
        "rid",
        "alias",
        "queue",
        "attempt",
        "deadline",
        "owner",
        "request",
        "entry_id",
        "ended",
        "_seq_attempt",
        "_next_seq",
    )

    def __init__(
        self,
        rid: str,
        alias: str,
        deadline: float | None,
        owner: object | None = None,
        request: Request | None = None,
    ) -> None:
        self.rid = rid
        self.alias = alias
        self.deadline = deadline
        self.owner = owner
        self.attempt = 0
        self.queue = Mailbox()
        self.request = request
        self.entry_id = ""
        self.ended = False  # its final reply (or an error of ours) is queued
        self._seq_attempt = 0
        self._next_seq = 0

    def in_order(self, item: Reply) -> bool | None:
        """True for the next reply; False for one already passed on (a worker wrote
        it again after a failover); None when replies before it were lost. Errors
        always pass: an undeploy or a peer may answer a request at any point."""
        if item.type is ReplyType.ERROR:
            return True
        if item.attempt != self._seq_attempt:  # a new attempt numbers its replies anew
            self._seq_attempt, self._next_seq = item.attempt, item.seq + 1
            return True
        if item.seq < self._next_seq:
            return False
        expected, self._next_seq = self._next_seq, item.seq + 1
        return True if item.seq == expected else None


class RequestChannel:
    """One process' transport to Redis for one event loop and one set of settings.

    Clients share it (one reply stream and one reader serve them all) and
    ``attach`` to it; a client that closes ``release``s it: its own calls end
    and the channel closes with the last of its clients.
    """

    def __init__(self, settings: BrokerSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.loop = loop  # the event loop it serves: its reader and calls live there
        # Whether the calls answered by one XREAD run before the next XREAD is sent
        # (its write then is not on their path). Not on the sync API's loop: there
        # each answered call wakes a blocked thread, which would wait for the GIL
        # while this thread sent the XREAD; sent first, it is out of the way.
        self._answered_first = not is_background_loop(loop)
        self.keys = Keys(settings.prefix)
        self.client_id = uuid.uuid4().hex[:16]
        self.reply_key = self.keys.reply(self.client_id)
        self._calls: dict[str, Call] = {}
        self._reader_task: asyncio.Task[None] | None = None
        self._idle: asyncio.Future[None] | None = None  # the reader waits for a call
        self._started = False
        self._start_lock = asyncio.Lock()
        self._closed = False
        self._untrimmed = 0
        self._users: weakref.WeakSet[object] = weakref.WeakSet()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def reader_parked(self) -> bool:
        """Whether the reply reader waits for a call, with no XREAD at Redis."""
        return self._idle is not None and not self._idle.done()

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if self._started:
                return
            self._redis = await connect(self.settings)
            self._blocking = await connect(self.settings, blocking=True)
            # the batcher's own client: it times each round trip, not each reply
            self._pipelined = await connect(self.settings, timed_reads=False)
            self._batcher = CommandBatcher(self._pipelined)
            self._admission = Admission(self._redis, self._batcher, self.settings)
            self._replies = ReplyStream(
                self._redis, self._blocking, self._batcher, self.keys, self.client_id
            )
            with redis_errors(self.settings):
                await self._admission.load()
                self._last_id = await self._replies.create()
            self._reader_task = asyncio.get_running_loop().create_task(
                self._read_loop(), name="byzerllm-reply-reader"
            )
            self._started = True

    def attach(self, user: object) -> None:
        """Count ``user`` (a client) among those sharing this channel."""
        self._users.add(user)

    async def release(self, user: object) -> None:
        """``user`` is done: its calls end (and stop on the workers); the last user
        to leave closes the channel."""
        for call in [c for c in self._calls.values() if c.owner is user]:
            self.cancel(call)
            self._end(
                call,
                RequestCancelledError(
                    f"request {call.rid} for {call.alias!r} was cancelled: its client was closed"
                ),
            )
        self._users.discard(user)
        if not self._users:
            await self.aclose()

    @staticmethod
    def _end(call: Call, err: ByzerLLMError) -> None:
        """End a waiting call with ``err`` (raised to its caller)."""
        # of the call's current attempt, so that the reader does not skip it as stale
        ended = Reply(
            rid=call.rid, seq=-1, type=ReplyType.ERROR, data=err.to_wire(), attempt=call.attempt
        )
        call.ended = True
        call.queue.put_nowait(ended)

    def _end_all(self, reason: str) -> None:
        """Every call in flight ends with BrokerUnavailableError: their replies are gone."""
        calls, self._calls = self._calls, {}
        if calls:
            log.warning("%s; ending %d call(s)", reason, len(calls))
        for call in calls.values():
            err = BrokerUnavailableError(f"request {call.rid} for {call.alias!r}: {reason}")
            self._end(call, err)

    async def aclose(self) -> None:
        if self._closed or not self._started:
            self._closed = True
            return
        self._closed = True
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)
        await self._batcher.aclose()
        try:
            await self._replies.delete()
        except Exception:  # it expires by itself
            pass
        await self._blocking.aclose()
        await self._pipelined.aclose()
        await self._redis.aclose()

    @property
    def redis(self) -> aioredis.Redis:
        """The channel's connection (after start()), for reads such as stat."""
        return self._redis

    # -- submitting ----------------------------------------------------------------

    async def submit(
        self,
        alias: str,
        kind: RequestKind,
        payload: dict[str, Any],
        timeout: float | None,
        owner: object | None = None,
        request_id: str | None = None,
    ) -> Call:
        if request_id is not None and request_id in self._calls:
            raise ConfigurationError(
                f"request id {request_id!r} is already in flight; give each request its own"
            )
        if not self._started:
            await self.start()
        request = Request.new(alias, kind, payload, self.reply_key, timeout, request_id)
        call = Call(request.id, alias, request.deadline, owner, request)
        self._calls[request.id] = call
        idle = self._idle
        if idle is not None and not idle.done():
            # the reader's XREAD goes out after this submit: queued now, the wake-up
            # runs before the batcher's, and the reader's own step after its flush
            self.loop.call_soon(_wake, idle)
        try:
            with redis_errors(self.settings):
                call.entry_id = await self._admission.submit(request)
        except BaseException:
            self._calls.pop(request.id, None)
            raise
        return call

    def abort(self, rid: str) -> bool:
        """End the in-flight call ``rid`` (its caller gets RequestCancelledError) and
        stop it on the worker; False when no such call is in flight here."""
        continued = f"{rid}-c"  # a stream asked again after a worker failure
        calls = [c for key, c in self._calls.items() if key == rid or key.startswith(continued)]
        for call in calls:
            self.cancel(call)
            self._end(call, RequestCancelledError(f"request {rid} for {call.alias!r} was aborted"))
        return bool(calls)

    def cancel(self, call: Call) -> None:
        """Forget the call and tell the workers to stop it."""
        if self._calls.pop(call.rid, None) is not None and not self._closed:
            self._admission.cancel(call.alias, call.rid)

    # -- receiving -------------------------------------------------------------------

    async def replies(self, call: Call) -> AsyncGenerator[Reply, None]:
        """The call's replies up to its end; errors are raised, retries passed on.

        Leaving early (break, cancellation, timeout) cancels the request on
        the worker.
        """
        finished = False
        # one timer for the whole call, not a timeout scope around every reply: a
        # stream's deltas then cost a queue read each, and nothing more
        timer = None
        if call.deadline is not None:
            loop = asyncio.get_running_loop()
            when = loop.time() + (call.deadline - time.time())
            timer = loop.call_at(when, self._expire, call)
        try:
            while True:
                item = await call.queue.get()
                if item.attempt < call.attempt:
                    continue
                if item.type is ReplyType.ERROR:
                    finished = True
                    raise error_from_wire(item.data)
                yield item
                if item.type is ReplyType.END:
                    finished = True
                    return
        finally:
            if timer is not None:
                timer.cancel()
            if finished:
                self._calls.pop(call.rid, None)
            else:
                self.cancel(call)

    def _expire(self, call: Call) -> None:
        """The call's deadline passed before its end was queued: it ends with
        RequestTimeoutError (after the replies queued before it) and stops on
        the worker."""
        if call.ended:
            return
        self.cancel(call)
        self._end(
            call,
            RequestTimeoutError(
                f"request {call.rid} for {call.alias!r} got no complete answer before "
                f"its deadline; raise the timeout or check `byzerllm stat --model {call.alias}`"
            ),
        )

    async def _read_loop(self) -> None:
        last_refresh = time.monotonic()
        outage = OutageLog(log, "reading replies")
        failures = 0
        resend_at: float | None = None  # when to look for requests an outage lost
        while True:
            raise_if_cancelling()  # a library may have swallowed our cancel
            if not outage.down and not self._waiting_calls():
                await self._until_called(last_refresh + KEEP_ALIVE_EVERY - time.monotonic())
            try:
                with redis_errors(self.settings):
                    entries = await self._replies.read(self._last_id, block_ms=1000)
                    if resend_at is not None and time.monotonic() >= resend_at:
                        resend_at = None
                        if entries:
                            self._dispatch(entries)
                            entries = []
                        await self._resend_lost()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                outage.failed(exc)  # said once; retried with backoff until Redis is back
                await reconnect_later(self._blocking)  # asks the Sentinels where the master is
                failures += 1
                await asyncio.sleep(min(5.0, 0.25 * 2**failures))
                continue
            if outage.down:  # Redis is back: it may have come back empty, or be a new master
                last_refresh = 0.0
                resend_at = time.monotonic() + RESEND_AFTER
            outage.recovered()
            failures = 0
            if entries:
                self._dispatch(entries)
                if self._answered_first and self._waiting_calls():
                    await asyncio.sleep(0)  # replies meanwhile wait in the stream
            if time.monotonic() - last_refresh > KEEP_ALIVE_EVERY:
                last_refresh = time.monotonic()
                await self._refresh()

    def _waiting_calls(self) -> bool:
        """Whether a call in flight still waits for replies (its final one is not in)."""
        return any(not call.ended for call in self._calls.values())

    async def _until_called(self, seconds: float) -> None:
        """With no call waiting, the reader sends no XREAD until one is submitted (or
        the reply stream's keep-alive is due): the last call's caller then resumes
        without that write on its way, and the next submit goes out before the read.

        Nothing can be missed meanwhile: the next XREAD starts after the last entry
        read, and only replies to ended or unknown calls can arrive before it.
        """
        loop = asyncio.get_running_loop()
        idle = self._idle = loop.create_future()
        timer = loop.call_later(max(0.0, seconds), _wake, idle)
        try:
            await idle
        finally:
            timer.cancel()
            self._idle = None

    async def _resend_lost(self) -> None:
        """Send again, under the same id, each call's request that Redis no longer holds
        and whose answer did not come: a failover lost it with the old master.

        Whether the stream holds each request is asked first; then every reply
        written before that question is read (and dispatched), so a request that
        finished meanwhile is not taken for lost. A worker that takes a re-sent
        copy runs it only if no worker runs or ran it (broker.run_marks): nothing
        is paid for twice.
        """
        # (a call still being submitted has no entry id yet: it hears how that went)
        calls = [c for c in self._calls.values() if c.entry_id and not c.ended and c.request]
        if not calls:
            return
        held = await still_queued(
            self._redis, self.keys, [(c.alias, c.entry_id, c.rid) for c in calls]
        )
        while entries := await self._replies.read(self._last_id, block_ms=None):
            self._dispatch(entries)
        for call, queued in zip(calls, held, strict=True):
            if queued or call.ended or self._calls.get(call.rid) is not call:
                continue
            assert call.request is not None
            copy = call.request.model_copy(update={"attempt": call.attempt + 1, "resent": True})
            try:
                call.entry_id = await self._admission.submit(copy)
            except BrokerUnavailableError:
                raise  # another outage: looked at again after it
            except ByzerLLMError as exc:  # refused now: no live worker, overloaded, ...
                self._calls.pop(call.rid, None)
                self._end(call, exc)
                continue
            log.warning("request %s for %r lost in a failover: sent again", call.rid, call.alias)

    def _lost_replies(self, call: Call) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"request {call.rid} for {call.alias!r} lost part of its answer: replies written "
            "to a Redis master that failed before its replica had them (a Sentinel failover); "
            "the answer would have a hole: retry it"
        )

    def _dispatch(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        calls = self._calls
        for entry_id, fields in entries:
            self._last_id = entry_id
            if b"hello" in fields:
                continue
            try:
                replies = decode_replies(fields)
            except ProtocolError as exc:
                log.warning("dead-lettering malformed reply entry %r: %s", entry_id, exc)
                self._replies.dead_letter(entry_id, str(exc))
                continue
            for item in replies:
                call = calls.get(item.rid)
                if call is None or item.attempt < call.attempt or call.ended:
                    continue  # finished, cancelled, or from a worker presumed dead
                in_order = call.in_order(item)
                if in_order is None:
                    self.cancel(call)
                    self._end(call, self._lost_replies(call))
                    continue
                if not in_order:
                    continue  # written twice: the worker sent again what Redis had taken
                if item.type is ReplyType.RETRY:
                    call.attempt = item.attempt
                call.ended = item.type in FINAL_TYPES
                call.queue.put_nowait(item)
        # consumed entries are of no further use: keep the stream short, but
        # without a command per reply
        self._untrimmed += len(entries)
        if self._untrimmed >= TRIM_EVERY:
            self._untrimmed = 0
            self._replies.trim(self._last_id)

    async def _refresh(self) -> None:
        try:
            with redis_errors(self.settings):
                recreated = await self._replies.keep_alive()
        except Exception as exc:
            log.warning("refreshing the reply stream failed: %s", exc)
            return
        if recreated is not None:
            self._last_id = recreated
            self._end_all(
                "the client's reply stream was lost (Redis restarted without its data, or "
                "this process stopped reading for over a minute); the request may or may "
                "not have run: retry it"
            )


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


_channels: dict[tuple[int, BrokerSettings], tuple[asyncio.AbstractEventLoop, RequestChannel]] = {}


def channel_for(settings: BrokerSettings) -> RequestChannel:
    """The process' channel for this event loop and these settings (created on first
    use); clients with other settings (a smaller request limit, say) get their own."""
    loop = asyncio.get_running_loop()
    key = (id(loop), settings)
    found = _channels.get(key)
    if found is not None and found[0] is loop and not found[1].closed:
        return found[1]
    channel = RequestChannel(settings, loop)
    _channels[key] = (loop, channel)
    return channel


async def close_channels() -> None:
    """Close every channel of the running loop (its reader, batcher and reply stream)."""
    loop = asyncio.get_running_loop()
    for key, (owner, channel) in list(_channels.items()):
        if owner is loop:
            del _channels[key]
            await channel.aclose()

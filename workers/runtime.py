"""The worker: one backend, one alias, pulling requests from Redis.

A worker asks its alias' request stream for at most as many requests as it
has free slots (pull, not push), so the idle worker that blocked first gets
the next request: LRU without a dispatcher. It never acks a request before
its final reply is written. The jobs are split by part: :mod:`execution`
runs a request on the backend, :mod:`liveness` heartbeats and claims the
entries of dead peers, :mod:`orders` hears cancels and drains, and the
:mod:`reply_writer` writes replies, acks and state. This module reads
requests, keeps the slots, and starts and stops the rest.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import socket
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from byzerllm.broker import deployments, requests, run_marks, state
from byzerllm.broker.connection import (
    OutageLog,
    connect,
    raise_if_cancelling,
    reconnect_later,
    redis_errors,
)
from byzerllm.broker.errors import (
    BackendLoadError,
    BrokerUnavailableError,
    ModelNotFoundError,
    ProtocolError,
    RequestTooLargeError,
)
from byzerllm.broker.keys import Keys
from byzerllm.broker.messages import FIELD, ReplyType, Request, decode_request
from byzerllm.broker.requests import Entry
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend
from byzerllm.workers.execution import Execution
from byzerllm.workers.liveness import Liveness, WorkerTiming
from byzerllm.workers.orders import Orders
from byzerllm.workers.registry import backend_class
from byzerllm.workers.reply_writer import ReplyWriter

log = logging.getLogger(__name__)

__all__ = ["Worker", "WorkerTiming", "serve"]

CANCEL_MEMORY = 3600.0  # seconds a cancel for a request not seen yet is remembered


@dataclass
class _InFlight:
    request: Request
    entry_id: str
    task: asyncio.Task[None]
    cancelled_by_client: bool = False
    running: bool = True  # False while a retry or re-sent copy waits for its run mark


class Worker:
    def __init__(
        self,
        spec: DeploySpec,
        settings: BrokerSettings,
        *,
        backend: Backend | None = None,
        timing: WorkerTiming | None = None,
        worker_id: str | None = None,
        generation: int = 0,
    ) -> None:
        self.generation = generation
        self.spec = spec
        self.settings = settings
        self.timing = timing or WorkerTiming()
        self.worker_concurrency = spec.worker_concurrency  # requests served at once
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._reply_keys = Keys(settings.prefix)
        self.keys = self._reply_keys.alias(spec.alias)
        self.backend = backend or backend_class(spec.pretrained_model_type, spec.infer_backend)(
            spec
        )
        self.execution = Execution(self.backend, self.worker_id)
        self._drain_timeout = self.timing.drain_timeout
        self._inflight: dict[str, _InFlight] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._read_task: asyncio.Task[None] | None = None
        self._in_read = False
        self._cancelled_read = False
        self._early_cancels: dict[str, float] = {}
        # request id -> when it ran to its end, for DONE_TTL: the run marks of broker.run_marks
        self._finished: OrderedDict[str, float] = OrderedDict()
        self._marked: set[str] = set()  # running requests whose run mark was written
        self._total = 0
        self._last_work = 0.0
        self._started = time.time()
        self.ready = asyncio.Event()

    @property
    def free_slots(self) -> int:
        return self.worker_concurrency - len(self._inflight)

    # -- lifecycle ----------------------------------------------------------------

    def stop(self, drain_timeout: float | None = None) -> None:
        """Stop taking requests; in-flight ones finish (drain), for up to
        ``drain_timeout`` seconds (default: the worker's timing).

        A read blocked on the stream is cancelled rather than waited out, so
        reads can block long (which keeps the LRU order of idle workers); an
        entry Redis delivered just before the cancel is served from our own
        pending list by :meth:`_serve_own_backlog`.
        """
        if drain_timeout is not None:
            self._drain_timeout = drain_timeout
        self._stopping.set()
        self._slot_freed.set()
        if self._in_read and self._read_task is not None:
            self._cancelled_read = True
            self._read_task.cancel()

    async def run(self) -> None:
        """Serve until stop() (or SIGTERM, when installed) and drain."""
        settings = self.settings
        self._redis = await connect(settings)
        self._reader = await connect(settings, blocking=True)
        # the reply writer's own client: it times each pipeline once (broker.connection)
        self._replies_redis = await connect(settings, timed_reads=False)
        self._writer = ReplyWriter(
            self._replies_redis, self.keys, self.worker_id, self._client_gone
        )
        liveness = Liveness(
            self._redis,
            settings,
            self.keys,
            self.worker_id,
            self.timing,
            free_slots=lambda: self.free_slots,
            held_entries=lambda: [f.entry_id for f in self._inflight.values()],
            accept_claimed=lambda entry: self._accept(entry, retry=True),
            claiming=lambda: not self._stopping.is_set(),
            reply_streams=lambda: {f.request.reply_to for f in self._inflight.values()},
            clients_gone=self._clients_gone,
            after_outage=self._after_outage,
        )
        orders = Orders(
            self._redis,
            settings,
            self.keys,
            self.generation,
            on_cancel=self._cancel,
            on_drain=self.stop,
        )
        tasks: list[asyncio.Task[Any]] = []
        try:
            with redis_errors(settings):
                await self._register()
            await self._start_backend()
            with redis_errors(settings):
                await liveness.beat()
            self._writer.start()
            tasks = [
                asyncio.create_task(liveness.run(), name="heartbeat"),
                asyncio.create_task(orders.listen(), name="orders"),
            ]
            self.ready.set()
            self._read_task = asyncio.create_task(self._read_loop(), name="read-requests")
            await self._read_task
            await self._serve_own_backlog()
            await self._drain()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._unregister()
            await self.backend.aclose()
            await self._reader.aclose()
            await self._replies_redis.aclose()
            await self._redis.aclose()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    def _state(self, ready: bool) -> state.WorkerState:
        return state.WorkerState(
            worker_id=self.worker_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            backend=self.backend.name,
            max_concurrency=self.worker_concurrency,  # stat's worker_max_concurrency
            free_slots=self.free_slots,
            total_requests=self._total,
            last_work_time=self._last_work,
            heartbeat=time.time(),
            started=self._started,
            ready=ready,
            generation=self.generation,
            gpu_ids=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        )

    async def _register(self) -> None:
        await requests.ensure_group(self._redis, self.keys)
        spec_fields = self.spec.public_hash(self.settings.max_waiting)
        await state.register_worker(
            self._redis,
            Keys(self.settings.prefix),
            self.spec.alias,
            self._state(False),
            spec_fields,
        )

    async def _start_backend(self) -> None:
        try:
            await self.backend.start()
        except Exception as exc:
            err = (
                exc
                if isinstance(exc, BackendLoadError)
                else BackendLoadError(f"{type(exc).__name__}: {exc}")
            )
            with redis_errors(self.settings):
                await state.update_worker(self._redis, self.keys, self.worker_id, last_error=err)
            raise err from exc
        with redis_errors(self.settings):
            await state.update_worker(self._redis, self.keys, self.worker_id, ready=True)

    async def _unregister(self) -> None:
        try:
            with redis_errors(self.settings):
                await state.forget_worker(self._redis, self.keys, self.worker_id)
        except BrokerUnavailableError as exc:  # leaving anyway; peers clean up after us
            log.warning("unregistering worker %s failed: %s", self.worker_id, exc)

    async def _drain(self) -> None:
        inflight = [f.task for f in self._inflight.values()]
        if inflight:
            log.info("draining %d in-flight requests", len(inflight))
            done, pending = await asyncio.wait(inflight, timeout=self._drain_timeout)
            for task in pending:  # left un-acked: a peer claims and retries them
                task.cancel()
        await self._writer.aclose()

    # -- reading requests ------------------------------------------------------------

    async def _read_loop(self) -> None:
        outage = OutageLog(log, "reading requests")
        while not self._stopping.is_set():
            free = self.free_slots
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._in_read = True
            try:
                with redis_errors(self.settings):
                    entries = await requests.read_new(
                        self._reader, self.keys, self.worker_id, free, self.timing.block_ms
                    )
                    if entries is None:  # the stream was gone: announce ourselves again
                        await self._register()
                        continue
            except asyncio.CancelledError:
                if not self._cancelled_read:
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                return
            except BrokerUnavailableError as exc:
                raise_if_cancelling()
                outage.failed(exc)
                await reconnect_later(self._reader)  # ask the Sentinels where the master is
                await asyncio.sleep(0.5)
                continue
            finally:
                self._in_read = False
            outage.recovered()
            for entry in entries:
                self._accept(entry, retry=False)
            if entries:
                # the accepted requests start (their backend call goes out) before
                # the next XREADGROUP is sent: its write is not on their path
                await asyncio.sleep(0)

    async def _serve_own_backlog(self) -> None:
        """Serve entries delivered to us that a cancelled read never returned."""
        held = {f.entry_id for f in self._inflight.values()}
        try:
            with redis_errors(self.settings):
                entries = await requests.read_own_pending(self._reader, self.keys, self.worker_id)
        except BrokerUnavailableError as exc:
            log.warning("could not read our own pending entries; peers will claim them: %s", exc)
            return
        for entry in entries:
            if entry[0] not in held:
                self._accept(entry, retry=False)

    def _accept(self, entry: Entry, retry: bool) -> None:
        entry_id, fields = entry
        if not fields:  # deleted after delivery: nothing to answer
            self._writer.ack(entry_id)
            return
        try:
            request = decode_request(fields)
        except ProtocolError as exc:
            log.warning("dead-lettering malformed request %s: %s", entry_id, exc)
            self._writer.dead_letter(entry_id, fields, str(exc))
            return
        if not self._reply_keys.is_reply(request.reply_to):
            reason = f"reply_to {request.reply_to[:200]!r} is not a reply stream of this prefix"
            log.warning("dead-lettering request %s: %s", entry_id, reason)
            self._writer.dead_letter(entry_id, fields, reason)
            return
        flight = self._inflight.get(request.id)
        if flight is not None:  # our own entry came back by a claim: we run it
            if request.resent and flight.entry_id != entry_id:  # a copy: we answer it
                self._writer.ack(entry_id)
            return
        size = len(fields.get(FIELD, b""))
        if size > self.settings.max_request_bytes:  # the worker's limit holds whatever sent it
            err = RequestTooLargeError(
                f"the request for {request.alias!r} is {size} bytes, above the workers' limit "
                f"of {self.settings.max_request_bytes} (BYZERLLM_MAX_REQUEST_BYTES where the "
                "workers run); send less or raise it there"
            )
            self._writer.metrics.record_reply(request, ReplyType.ERROR, err.to_wire(), 0.0)
            self._writer.finish(
                request.id,
                request.reply_to,
                request.attempt,
                entry_id,
                ReplyType.ERROR,
                err.to_wire(),
            )
            return
        if retry:
            request = request.model_copy(update={"attempt": request.attempt + 1})
        if request.id in self._early_cancels:
            self._writer.metrics.record_reply(request, None, {}, 0.0)
            self._writer.finish(request.id, request.reply_to, request.attempt, entry_id, None)
            return
        # a retry, or a copy re-sent after a failover, runs only if nobody runs or ran it
        checked = retry or request.resent
        task = asyncio.get_running_loop().create_task(self._serve(request, entry_id, checked))
        self._inflight[request.id] = _InFlight(request, entry_id, task, running=not checked)
        task.add_done_callback(functools.partial(self._done, request.id))
        if checked:
            self._writer.state(state.hash_fields(free_slots=self.free_slots))
        else:
            self._count_run()

    def _count_run(self) -> None:
        """A request starts running here: counted, and the LRU time moves."""
        self._total += 1
        self._last_work = time.time()
        self._writer.state(
            state.hash_fields(
                free_slots=self.free_slots,
                total_requests=self._total,
                last_work_time=self._last_work,
            ),
            last_work=self._last_work,
        )

    def _done(self, rid: str, _task: object = None) -> None:
        self._inflight.pop(rid, None)
        self._marked.discard(rid)
        self._slot_freed.set()
        self._writer.state(state.hash_fields(free_slots=self.free_slots))

    # -- serving one request -----------------------------------------------------------

    async def _serve(self, request: Request, entry_id: str, checked: bool = False) -> None:
        rid, to, attempt = request.id, request.reply_to, request.attempt
        writer = self._writer
        if checked and not await self._claim_run(request, entry_id):
            return
        taken = time.perf_counter()

        def on_delta(
            text: str, reasoning: str, audio: bytes, tool_calls: list[dict[str, Any]] | None
        ) -> asyncio.Future[None] | None:
            return writer.delta(rid, to, attempt, text, reasoning, audio, tool_calls)

        try:
            type_, data = await self.execution.run(request, on_delta)
        except asyncio.CancelledError:
            flight = self._inflight.get(rid)
            if flight is not None and flight.cancelled_by_client:
                writer.metrics.record_reply(request, None, {}, time.perf_counter() - taken)
                writer.finish(rid, to, attempt, entry_id, None)
                self._ran(rid, checked)
            # else: shutting down; the entry stays pending for a peer
            raise
        writer.metrics.record_reply(request, type_, data, time.perf_counter() - taken)
        writer.finish(rid, to, attempt, entry_id, type_, data)
        self._ran(rid, checked)

    async def _claim_run(self, request: Request, entry_id: str) -> bool:
        """Whether this worker runs a claimed retry or a re-sent copy (its run mark,
        broker.run_marks); if so, the client hears that the request starts over."""
        rid, to, attempt = request.id, request.reply_to, request.attempt
        try:
            with redis_errors(self.settings):
                verdict, holder = await run_marks.claim(
                    self._redis, self.keys, rid, self.worker_id, run_marks.ttl_for(request.deadline)
                )
        except BrokerUnavailableError as exc:  # left pending: claimed again once Redis is back
            log.warning("could not check who runs request %s: %s", rid, exc)
            return False
        if verdict is run_marks.Claim.ELSEWHERE:
            # left pending, untouched: claimed (and checked) again until that worker ends
            log.info("request %s runs on worker %s; this copy waits", rid, holder)
            return False
        if verdict is run_marks.Claim.DONE:
            err = BrokerUnavailableError(
                f"request {rid} for {request.alias!r} already ran on worker {holder}, and its "
                "answer was lost in a Redis failover; it is not run twice: send it again as "
                "a new request"
            )
            self._writer.finish(rid, to, attempt, entry_id, ReplyType.ERROR, err.to_wire())
            return False
        flight = self._inflight.get(rid)
        if flight is not None:
            flight.running = True
        self._count_run()
        self._writer.metrics.retried()
        self._writer.notice(rid, to, attempt, ReplyType.RETRY, {"attempt": attempt})
        return True

    def _ran(self, rid: str, checked: bool) -> None:
        """Remember that ``rid`` ran to its end here, for the run marks written after an
        outage; a run whose mark exists (it claimed it, or wrote it after an outage)
        turns it into a done mark at once, so a copy waiting on it is answered."""
        now = time.monotonic()
        self._finished[rid] = now
        self._finished.move_to_end(rid)
        while self._finished and next(iter(self._finished.values())) < now - run_marks.DONE_TTL:
            self._finished.popitem(last=False)
        if checked or rid in self._marked:
            self._writer.marks({rid: run_marks.done(self.worker_id)})

    def _after_outage(self) -> dict[str, tuple[str, int]]:
        """Back from an outage, perhaps on a promoted replica that lacks our latest
        writes: our counters are written again, and the run marks of what we run and
        ran lately (broker.run_marks) are returned for the heartbeat to write."""
        self._writer.state(
            state.hash_fields(
                free_slots=self.free_slots,
                total_requests=self._total,
                last_work_time=self._last_work,
            ),
            last_work=self._last_work or None,
        )
        horizon = time.monotonic() - run_marks.DONE_TTL
        done = run_marks.done(self.worker_id)
        marks = {rid: done for rid, at in self._finished.items() if at > horizon}
        for rid, flight in self._inflight.items():
            if flight.running:
                marks[rid] = run_marks.running(self.worker_id, flight.request.deadline)
                self._marked.add(rid)
        return marks

    # -- cancellation and client loss ------------------------------------------------

    def _cancel(self, rid: str) -> None:
        flight = self._inflight.get(rid)
        if flight is None:  # not here (yet): remember it in case it arrives
            now = time.time()
            self._early_cancels[rid] = now
            if len(self._early_cancels) > 10_000:
                horizon = now - CANCEL_MEMORY
                self._early_cancels = {r: t for r, t in self._early_cancels.items() if t > horizon}
            return
        flight.cancelled_by_client = True
        flight.task.cancel()

    def _client_gone(self, rid: str) -> None:
        log.info("client of request %s is gone; stopping it", rid)
        self._cancel(rid)

    def _clients_gone(self, reply_streams: set[str]) -> None:
        """Stop the requests whose reply stream expired: their client died."""
        for flight in list(self._inflight.values()):
            if flight.request.reply_to in reply_streams:
                self._client_gone(flight.request.id)


async def serve(
    spec: DeploySpec | None,
    settings: BrokerSettings,
    timing: WorkerTiming | None = None,
    alias: str | None = None,
) -> None:
    """Run one worker in this process until SIGTERM/SIGINT, then drain.

    Without a spec, the deployment of ``alias`` is loaded from Redis (secrets
    unsealed with the cluster key): how node agents start workers, so that
    secrets never appear on a command line.
    """
    generation = 0
    if spec is None:
        spec, generation = await _deployed_spec(settings, alias or "")
    worker = Worker(spec, settings, timing=timing, generation=generation)
    worker.install_signal_handlers()
    await worker.run()


async def _deployed_spec(settings: BrokerSettings, alias: str) -> tuple[DeploySpec, int]:
    redis = await connect(settings)
    try:
        with redis_errors(settings):
            keys = Keys(settings.prefix)
            spec = await deployments.load(redis, keys, alias)
            details = await deployments.info(redis, keys, alias)
    finally:
        await redis.aclose()
    if spec is None or details is None:
        raise ModelNotFoundError(alias)
    return spec, int(details.get("generation", "0"))

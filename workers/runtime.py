"""The worker process runtime: one backend, one alias, pulling from Redis.

A worker asks its alias' request stream for at most as many requests as it
has free slots (pull, not push), so the idle worker that blocked first gets
the next request: LRU without a dispatcher. It heartbeats, refreshes the
idle time of the entries it holds, and claims the entries of workers whose
heartbeat stopped. It never acks a request before its final reply is written.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis import exceptions as rex

from byzerllm.broker import deployments
from byzerllm.broker.connection import connect, raise_if_cancelling, redis_errors
from byzerllm.broker.errors import (
    BackendError,
    BackendLoadError,
    ByzerLLMError,
    ModelNotFoundError,
    ProtocolError,
    RequestTimeoutError,
)
from byzerllm.broker.keys import GROUP, Keys, text
from byzerllm.broker.messages import (
    ChatPayload,
    EmbedPayload,
    ReplyType,
    Request,
    RequestKind,
    decode_request,
)
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, ChatTally
from byzerllm.workers.registry import backend_class
from byzerllm.workers.reply_writer import ReplyWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerTiming:
    """How often a worker speaks up and how soon peers give up on it."""

    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0  # a worker silent this long is dead to clients
    claim_idle: float = 10.0  # entries untouched this long are claimed by peers
    block_ms: int = 5000  # stop() interrupts a blocked read, so this may be long
    drain_timeout: float = 30.0


@dataclass
class _InFlight:
    request: Request
    entry_id: str
    task: asyncio.Task[None]
    cancelled_by_client: bool = False


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
        self.concurrency = spec.worker_concurrency
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.keys = Keys(settings.prefix).alias(spec.alias)
        self.backend = backend or backend_class(spec.pretrained_model_type, spec.infer_backend)(
            spec
        )
        self._inflight: dict[str, _InFlight] = {}
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._read_task: asyncio.Task[None] | None = None
        self._in_read = False
        self._cancelled_read = False
        self._recent_cancels: dict[str, float] = {}
        self._total = 0
        self._last_work = 0.0
        self._started = time.time()
        self.ready = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking requests; in-flight ones finish (drain).

        A read blocked on the stream is cancelled rather than waited out, so
        reads can block long (which keeps the LRU order of idle workers); an
        entry Redis delivered just before the cancel is served from our own
        pending list by :meth:`_serve_own_backlog`.
        """
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
        self._writer = ReplyWriter(self._redis, self.keys, self.worker_id, self._client_gone)
        tasks: list[asyncio.Task[Any]] = []
        try:
            with redis_errors(settings):
                await self._register()
            await self._start_backend()
            self._writer.start()
            tasks = [
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                asyncio.create_task(self._cancel_listener(), name="cancel-listener"),
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
            await self._redis.aclose()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def _register(self) -> None:
        r, k = self._redis, self.keys
        try:
            await r.xgroup_create(k.requests, GROUP, id="0", mkstream=True)
        except rex.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        pipe = r.pipeline(transaction=False)
        if not await r.hexists(k.spec, "managed"):  # a deployment's spec is the deployer's
            pipe.hset(k.spec, mapping=self.spec.public_hash(self.settings.max_waiting))
        pipe.sadd(Keys(self.settings.prefix).models, self.spec.alias)
        pipe.sadd(k.workers, self.worker_id)
        pipe.hset(k.worker(self.worker_id), mapping=self._state_fields(ready=False))
        await pipe.execute()

    async def _start_backend(self) -> None:
        try:
            await self.backend.start()
        except Exception as exc:
            err = (
                exc
                if isinstance(exc, BackendLoadError)
                else BackendLoadError(f"{type(exc).__name__}: {exc}")
            )
            await self._redis.hset(self.keys.worker(self.worker_id), "last_error", str(err))
            raise err from exc
        await self._redis.hset(self.keys.worker(self.worker_id), "ready", "1")
        await self._heartbeat()

    def _state_fields(self, ready: bool = True) -> dict[str, str]:
        return {
            "host": socket.gethostname(),
            "pid": str(os.getpid()),
            "backend": self.backend.name,
            "max_concurrency": str(self.concurrency),
            "free_slots": str(self.concurrency - len(self._inflight)),
            "total_requests": str(self._total),
            "last_work_time": str(self._last_work),
            "heartbeat": str(time.time()),
            "started": str(self._started),
            "ready": "1" if ready else "0",
            "generation": str(self.generation),
            "gpu_ids": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        }

    async def _unregister(self) -> None:
        r, k = self._redis, self.keys
        try:
            pipe = r.pipeline(transaction=False)
            pipe.zrem(k.alive, self.worker_id)
            pipe.zrem(k.lru, self.worker_id)
            pipe.srem(k.workers, self.worker_id)
            pipe.delete(k.worker(self.worker_id))
            await pipe.execute()
            consumers = await r.xinfo_consumers(k.requests, GROUP)
            mine = [c for c in consumers if text(c["name"]) == self.worker_id]
            if mine and int(mine[0]["pending"]) == 0:
                await r.xgroup_delconsumer(k.requests, GROUP, self.worker_id)
        except Exception as exc:  # leaving anyway; peers clean up after us
            log.warning("unregistering worker %s failed: %s", self.worker_id, exc)

    async def _drain(self) -> None:
        inflight = [f.task for f in self._inflight.values()]
        if inflight:
            log.info("draining %d in-flight requests", len(inflight))
            done, pending = await asyncio.wait(inflight, timeout=self.timing.drain_timeout)
            for task in pending:  # left un-acked: a peer claims and retries them
                task.cancel()
        await self._writer.aclose()

    # -- reading requests ------------------------------------------------------------

    async def _read_loop(self) -> None:
        k = self.keys
        while not self._stopping.is_set():
            free = self.concurrency - len(self._inflight)
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            self._in_read = True
            try:
                response = await self._reader.xreadgroup(
                    GROUP,
                    self.worker_id,
                    {k.requests: ">"},
                    count=free,
                    block=self.timing.block_ms,
                )
            except asyncio.CancelledError:
                if not self._cancelled_read:
                    raise
                current = asyncio.current_task()
                if current is not None:
                    current.uncancel()
                return
            except rex.ResponseError as exc:
                if "NOGROUP" in str(exc):  # the stream was deleted under us
                    await self._register()
                    continue
                raise
            except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
                raise_if_cancelling()
                log.warning("reading requests failed, retrying: %s", exc)
                await asyncio.sleep(0.5)
                continue
            finally:
                self._in_read = False
            for _stream, entries in response or ():
                for entry_id, fields in entries:
                    self._accept(text(entry_id), fields, retry=False)

    async def _serve_own_backlog(self) -> None:
        """Serve entries delivered to us that a cancelled read never returned."""
        held = {f.entry_id for f in self._inflight.values()}
        try:
            response = await self._reader.xreadgroup(
                GROUP, self.worker_id, {self.keys.requests: "0"}, count=10_000
            )
        except (rex.ConnectionError, rex.TimeoutError, rex.ResponseError, OSError) as exc:
            log.warning("could not read our own pending entries; peers will claim them: %s", exc)
            return
        for _stream, entries in response or ():
            for entry_id, fields in entries:
                if text(entry_id) not in held:
                    self._accept(text(entry_id), fields, retry=False)

    def _accept(self, entry_id: str, fields: dict[bytes, bytes] | None, retry: bool) -> None:
        if not fields:  # deleted after delivery: nothing to answer
            self._writer.ack(entry_id)
            return
        try:
            request = decode_request(fields)
        except ProtocolError as exc:
            log.warning("dead-lettering malformed request %s: %s", entry_id, exc)
            self._writer.dead_letter(entry_id, fields, str(exc))
            return
        if request.id in self._inflight:  # our own entry came back by a claim
            return
        if retry:
            request = request.model_copy(update={"attempt": request.attempt + 1})
            self._writer.notice(
                request.id,
                request.reply_to,
                request.attempt,
                ReplyType.RETRY,
                {"attempt": request.attempt},
            )
        if request.id in self._recent_cancels:
            self._writer.finish(request.id, request.reply_to, request.attempt, entry_id, None)
            return
        self._total += 1
        self._last_work = time.time()
        task = asyncio.get_running_loop().create_task(self._serve(request, entry_id))
        self._inflight[request.id] = _InFlight(request, entry_id, task)
        task.add_done_callback(functools.partial(self._done, request.id))
        self._writer.state(
            {
                "free_slots": str(self.concurrency - len(self._inflight)),
                "total_requests": str(self._total),
                "last_work_time": str(self._last_work),
            },
            last_work=self._last_work,
        )

    def _done(self, rid: str, _task: object = None) -> None:
        self._inflight.pop(rid, None)
        self._slot_freed.set()
        self._writer.state({"free_slots": str(self.concurrency - len(self._inflight))})

    # -- serving one request -----------------------------------------------------------

    async def _serve(self, request: Request, entry_id: str) -> None:
        rid, to, attempt = request.id, request.reply_to, request.attempt
        try:
            if request.deadline is not None and time.time() >= request.deadline:
                raise RequestTimeoutError(
                    f"request {rid} for {request.alias!r} passed its deadline before it ran"
                )
            if request.deadline is not None:
                loop = asyncio.get_running_loop()
                remaining = request.deadline - time.time()
                async with asyncio.timeout_at(loop.time() + remaining):
                    data = await self._run_kind(request)
            else:
                data = await self._run_kind(request)
        except asyncio.CancelledError:
            flight = self._inflight.get(rid)
            if flight is not None and flight.cancelled_by_client:
                self._writer.finish(rid, to, attempt, entry_id, None)
            # else: shutting down; the entry stays pending for a peer
            raise
        except TimeoutError:
            err = RequestTimeoutError(f"request {rid} for {request.alias!r} passed its deadline")
            self._writer.finish(rid, to, attempt, entry_id, ReplyType.ERROR, err.to_wire())
        except ByzerLLMError as exc:
            self._writer.finish(rid, to, attempt, entry_id, ReplyType.ERROR, exc.to_wire())
        except Exception as exc:
            log.exception("backend %s failed on request %s", self.backend.name, rid)
            err = BackendError(f"{type(exc).__name__}: {exc}")
            self._writer.finish(rid, to, attempt, entry_id, ReplyType.ERROR, err.to_wire())
        else:
            self._writer.finish(rid, to, attempt, entry_id, ReplyType.END, data)

    async def _run_kind(self, request: Request) -> dict[str, Any]:
        if request.kind is RequestKind.CHAT:
            return await self._chat(request)
        if request.kind is RequestKind.EMBED:
            payload = EmbedPayload.model_validate(request.payload)
            start = time.perf_counter()
            vectors = await self.backend.embed(payload.texts, payload.llm_config)
            return {
                "output": vectors,
                "meta": {
                    "request_id": request.id,
                    "time_cost": time.perf_counter() - start,
                    "input_tokens_count": sum(len(t.split()) for t in payload.texts),
                    "generated_tokens_count": 0,
                    "worker_id": self.worker_id,
                },
            }
        return {"output": self.backend.meta()}

    async def _chat(self, request: Request) -> dict[str, Any]:
        payload = ChatPayload.model_validate(request.payload)
        writer, rid, to, attempt = self._writer, request.id, request.reply_to, request.attempt
        tally = ChatTally()
        async for chunk in self.backend.run_chat(payload):
            if tally.add(chunk) and payload.stream:
                writer.delta(rid, to, attempt, chunk.text, chunk.reasoning)
        return tally.end_data(rid, payload.stream, worker_id=self.worker_id)

    # -- cancellation and client loss ------------------------------------------------

    def _cancel(self, rid: str) -> None:
        flight = self._inflight.get(rid)
        if flight is None:
            self._recent_cancels[rid] = time.time()
            return
        flight.cancelled_by_client = True
        flight.task.cancel()

    def _client_gone(self, rid: str) -> None:
        log.info("client of request %s is gone; stopping it", rid)
        self._cancel(rid)

    def _control(self, raw: str) -> None:
        """Orders from the control plane: ``drain`` (optionally only older generations)."""
        try:
            order = json.loads(raw)
        except ValueError:
            log.warning("ignoring malformed control message %r", raw[:200])
            return
        if order.get("op") == "drain" and self.generation < int(order.get("below", 1 << 62)):
            log.info("draining on request of the control plane")
            self.stop()

    async def _cancel_listener(self) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.keys.cancel_channel, self.keys.control_channel)
        control = self.keys.control_channel.encode()
        try:
            while True:
                raise_if_cancelling()  # a library may have swallowed our cancel
                try:
                    message = await pubsub.get_message(timeout=1.0)
                except (rex.ConnectionError, OSError) as exc:
                    raise_if_cancelling()
                    log.warning("cancel channel lost, resubscribing: %s", exc)
                    await asyncio.sleep(0.5)
                    continue
                if message and message["type"] == "message":
                    if message["channel"] == control:
                        self._control(text(message["data"]))
                    else:
                        self._cancel(text(message["data"]))
        finally:
            await pubsub.aclose()

    # -- liveness and recovery ------------------------------------------------------

    async def _heartbeat(self) -> None:
        now = time.time()
        r, k = self._redis, self.keys
        pipe = r.pipeline(transaction=False)
        pipe.zadd(k.alive, {self.worker_id: now + self.timing.heartbeat_ttl})
        pipe.hset(
            k.worker(self.worker_id),
            mapping={
                "heartbeat": str(now),
                "free_slots": str(self.concurrency - len(self._inflight)),
            },
        )
        held = [f.entry_id for f in self._inflight.values()]
        if held:  # keep our entries' idle time low so peers don't claim them
            pipe.xclaim(k.requests, GROUP, self.worker_id, 0, held, justid=True)
        await pipe.execute()
        horizon = now - 3600
        for rid in [r_ for r_, t in self._recent_cancels.items() if t < horizon]:
            del self._recent_cancels[rid]

    async def _heartbeat_loop(self) -> None:
        beats = 0
        while True:
            raise_if_cancelling()  # a library may have swallowed our cancel
            await asyncio.sleep(self.timing.heartbeat_interval)
            try:
                await self._heartbeat()
                if not self._stopping.is_set():
                    await self._claim_stale()
                beats += 1
                if beats % 10 == 0:
                    await self._forget_dead_workers()
            except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
                raise_if_cancelling()
                log.warning("heartbeat failed: %s", exc)

    async def _claim_stale(self) -> None:
        free = self.concurrency - len(self._inflight)
        if free <= 0:
            return
        min_idle = int(self.timing.claim_idle * 1000)
        result = await self._redis.xautoclaim(
            self.keys.requests, GROUP, self.worker_id, min_idle, "0-0", count=free
        )
        entries = result[1] if result else []
        for entry_id, fields in entries:
            log.info("claimed request entry %s from a dead worker", text(entry_id))
            self._accept(text(entry_id), fields, retry=True)

    async def _forget_dead_workers(self) -> None:
        """Drop state of workers whose heartbeat expired long ago and who hold nothing."""
        r, k = self._redis, self.keys
        horizon = time.time() - self.timing.claim_idle * 3
        dead = [text(w) for w in await r.zrangebyscore(k.alive, "-inf", horizon)]
        if not dead:
            return
        consumers = {
            text(c["name"]): int(c["pending"]) for c in await r.xinfo_consumers(k.requests, GROUP)
        }
        for wid in dead:
            if consumers.get(wid, 0):
                continue
            pipe = r.pipeline(transaction=False)
            pipe.zrem(k.alive, wid)
            pipe.zrem(k.lru, wid)
            pipe.srem(k.workers, wid)
            pipe.delete(k.worker(wid))
            if wid in consumers:
                pipe.xgroup_delconsumer(k.requests, GROUP, wid)
            await pipe.execute()


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
        keys = Keys(settings.prefix)
        spec = await deployments.load(redis, keys, alias)
        details = await deployments.info(redis, keys, alias)
    finally:
        await redis.aclose()
    if spec is None or details is None:
        raise ModelNotFoundError(alias)
    return spec, int(details.get("generation", "0"))

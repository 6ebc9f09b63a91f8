"""A worker's liveness: heartbeats, and taking over the requests of dead peers.

Every ``heartbeat_interval`` the worker renews its place in the alias' alive
set and touches the entries it holds (so peers see them as busy, not stale);
it then claims entries nobody touched for ``claim_idle`` (their worker is
dead) as retries, and now and then forgets peers that died long ago. The
first beat after an outage also writes the worker's run marks (what it runs
and ran lately, which a failover may have lost), and claims wait another
``claim_idle``: entries that went untouched because Redis was away are not
stale, their workers touch them again once they are back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from byzerllm.broker import replies, requests, run_marks, state
from byzerllm.broker.connection import OutageLog, raise_if_cancelling, redis_errors
from byzerllm.broker.errors import BrokerUnavailableError
from byzerllm.broker.keys import AliasKeys
from byzerllm.broker.requests import Entry
from byzerllm.broker.settings import BrokerSettings

if TYPE_CHECKING:  # redis is broker/'s business; here it only names types
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)

FORGET_EVERY = 10  # heartbeats between two sweeps for long-dead peers
# heartbeats between two checks that the clients of our requests are still there: a
# non-streaming request writes nothing until its end, so nothing else would notice
CLIENTS_EVERY = 3


@dataclass(frozen=True)
class WorkerTiming:
    """How often a worker speaks up and how soon peers give up on it."""

    heartbeat_interval: float = 1.0
    heartbeat_ttl: float = 5.0  # a worker silent this long is dead to clients
    claim_idle: float = 10.0  # entries untouched this long are claimed by peers
    block_ms: int = 5000  # stop() interrupts a blocked read, so this may be long
    drain_timeout: float = 30.0


class Liveness:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: BrokerSettings,
        ak: AliasKeys,
        worker_id: str,
        timing: WorkerTiming,
        *,
        free_slots: Callable[[], int],
        held_entries: Callable[[], list[str]],
        accept_claimed: Callable[[Entry], None],
        claiming: Callable[[], bool],
        reply_streams: Callable[[], set[str]],
        clients_gone: Callable[[set[str]], None],
        after_outage: Callable[[], dict[str, tuple[str, int]]] = dict,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._ak = ak
        self._worker_id = worker_id
        self._timing = timing
        self._free_slots = free_slots
        self._held_entries = held_entries
        self._accept_claimed = accept_claimed
        self._claiming = claiming
        self._reply_streams = reply_streams
        self._clients_gone = clients_gone
        self._after_outage = after_outage  # the worker's run marks to write then

    async def beat(self) -> str:
        """One heartbeat; returns the server's replication id (see state.heartbeat)."""
        return await state.heartbeat(
            self._redis,
            self._ak,
            self._worker_id,
            ttl=self._timing.heartbeat_ttl,
            free_slots=self._free_slots(),
            held_entries=self._held_entries(),
        )

    async def run(self) -> None:
        """Beat, claim and sweep until cancelled; a Redis outage is logged once."""
        beats = 0
        outage = OutageLog(log, "heartbeat")
        claim_from = 0.0  # after an outage, peers get claim_idle to touch their entries again
        server = ""  # the replication id of the Redis we beat on
        while True:
            raise_if_cancelling()  # a library may have swallowed our cancel
            await asyncio.sleep(self._timing.heartbeat_interval)
            try:
                with redis_errors(self._settings):
                    replid = await self.beat()
                    moved = bool(server and replid) and replid != server
                    server = replid or server
                    if outage.down or moved:
                        # back, or on a restarted Redis or a promoted replica: before any
                        # claim, say what we run and ran, so that no peer runs it again
                        marks = self._after_outage()
                        await run_marks.write_marks(self._redis, self._ak, marks)
                        claim_from = time.monotonic() + self._timing.claim_idle
                    if self._claiming() and time.monotonic() >= claim_from:
                        await self._claim_stale()
                    beats += 1
                    if beats % CLIENTS_EVERY == 0:
                        gone = await replies.missing_streams(self._redis, self._reply_streams())
                        if gone:
                            self._clients_gone(gone)
                    if beats % FORGET_EVERY == 0:
                        horizon = time.time() - self._timing.claim_idle * 3
                        await state.forget_dead_workers(self._redis, self._ak, horizon)
            except BrokerUnavailableError as exc:
                raise_if_cancelling()
                outage.failed(exc)
                continue
            outage.recovered()

    async def _claim_stale(self) -> None:
        free = self._free_slots()
        if free <= 0:
            return
        claimed = await requests.claim_stale(
            self._redis, self._ak, self._worker_id, self._timing.claim_idle, free
        )
        for entry in claimed:
            log.info("claimed request entry %s from a dead worker", entry[0])
            self._accept_claimed(entry)

"""The reply streams: one per client process, written by workers, read by its client.

A worker adds everything it has for one client in one entry (a msgpack array
of replies), with NOMKSTREAM: a reply stream that expired means its client is
gone, and the worker stops that client's requests. The client creates its
stream, keeps it from expiring while it lives, reads it with one blocked
XREAD, and trims what it has consumed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from byzerllm.broker.batcher import CommandBatcher
from byzerllm.broker.keys import AliasKeys, Keys
from byzerllm.broker.messages import FIELD, encode_replies
from byzerllm.broker.metrics import MetricsDelta, stage_metrics
from byzerllm.broker.requests import DEAD_LETTER_LIMIT, stage_acks, stage_dead_letters
from byzerllm.broker.run_marks import stage_marks
from byzerllm.broker.state import stage_worker_state

REPLY_TTL = 60  # seconds a reply stream outlives its client

Entries = list[tuple[bytes, dict[bytes, bytes]]]


@dataclass
class BatchOutcome:
    """Which reply streams of a written batch are gone, and which could not be written."""

    gone: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    other_errors: list[str] = field(default_factory=list)


async def write_batch(
    redis: aioredis.Redis,
    ak: AliasKeys,
    worker_id: str,
    replies: dict[str, list[dict[str, Any]]],
    acks: list[str],
    dead: list[dict[str, Any]],
    state: dict[str, str],
    last_work: float | None,
    metrics: MetricsDelta | None = None,
    marks: dict[str, tuple[str, int]] | None = None,
) -> BatchOutcome:
    """Everything a worker has to say, in one round trip, replies first.

    ``replies`` maps a client's reply stream to its items (one entry each);
    then dead letters, the acks of finished requests, the worker's state and its
    metrics' increments, and run marks (after an outage: broker.run_marks).
    Returns the reply streams that are gone (NOMKSTREAM: their client left)
    and those whose write failed, with the reason (the key is not a stream,
    say): the other writes of the batch went through and must not be sent
    again. A lost connection raises.
    """
    pipe = redis.pipeline(transaction=False)
    streams = list(replies)
    for stream in streams:
        pipe.xadd(stream, {FIELD: encode_replies(replies[stream])}, nomkstream=True)
    stage_dead_letters(pipe, ak.dead_letter, dead)
    stage_acks(pipe, ak, acks)
    stage_worker_state(pipe, ak, worker_id, state, last_work)
    stage_metrics(pipe, ak, metrics)
    stage_marks(pipe, ak, marks or {})
    results = await pipe.execute(raise_on_error=False)
    outcome = BatchOutcome()
    for stream, result in zip(streams, results, strict=False):
        if result is None:
            outcome.gone.append(stream)
        elif isinstance(result, Exception):
            outcome.failed[stream] = str(result)
    outcome.other_errors = [str(r) for r in results[len(streams) :] if isinstance(r, Exception)]
    return outcome


async def missing_streams(redis: aioredis.Redis, streams: set[str]) -> set[str]:
    """Which of these reply streams no longer exist (their client is gone)."""
    ordered = sorted(streams)
    if not ordered:
        return set()
    pipe = redis.pipeline(transaction=False)
    for stream in ordered:
        pipe.exists(stream)
    found = await pipe.execute()
    return {stream for stream, exists in zip(ordered, found, strict=True) if not exists}


class ReplyStream:
    """A client's own reply stream, named by its client id."""

    def __init__(
        self,
        redis: aioredis.Redis,
        blocking: aioredis.Redis,
        batcher: CommandBatcher,
        keys: Keys,
        client_id: str,
    ) -> None:
        self._redis = redis
        self._blocking = blocking
        self._batcher = batcher
        self._keys = keys
        self.key = keys.reply(client_id)

    async def create(self) -> bytes:
        """Create the stream (with an opening entry) and return the id to read after."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(self.key, {b"hello": b"1"})
        pipe.expire(self.key, REPLY_TTL)
        entry_id, _ = await pipe.execute()
        return bytes(entry_id)

    async def read(self, after: bytes, block_ms: int | None) -> Entries:
        """Entries after ``after``, blocking up to ``block_ms`` for the first one
        (None: not at all)."""
        response = await self._blocking.xread({self.key: after}, count=1000, block=block_ms)
        return list(response[0][1]) if response else []

    async def keep_alive(self) -> bytes | None:
        """Push the expiry back; if the stream had expired, create it again and
        return the id to read after (else None)."""
        if await self._redis.expire(self.key, REPLY_TTL):
            return None
        return await self.create()

    def trim(self, consumed_up_to: bytes) -> None:
        """Drop entries already read (without waiting for the answer)."""
        self._batcher.send("XTRIM", self.key, "MINID", consumed_up_to)

    def dead_letter(self, entry_id: bytes, reason: str) -> None:
        """Keep a reply entry nobody could read, with the reason, for inspection."""
        self._batcher.send(
            "XADD",
            self._keys.dead_letter,
            "MAXLEN",
            "~",
            DEAD_LETTER_LIMIT,
            "*",
            "reason",
            reason,
            "stream",
            self.key,
            "entry_id",
            entry_id,
        )

    async def delete(self) -> None:
        await self._redis.delete(self.key)

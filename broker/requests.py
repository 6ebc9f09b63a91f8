"""The request streams: admitting, reading, claiming, acking and answering requests.

Both sides of the data plane meet here. A client admits a request with the
submit script (alias known, a live worker, room in the queue, and the XADD,
in one round trip); workers read the stream through the consumer group,
claim entries of dead peers, ack after the final reply and dead-letter
entries they cannot parse; ``undeploy`` answers what is still queued.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from byzerllm.broker import cluster
from byzerllm.broker.batcher import CommandBatcher
from byzerllm.broker.connection import unless_answer
from byzerllm.broker.errors import (
    ByzerLLMError,
    ModelNotFoundError,
    NoLiveWorkerError,
    OverloadedError,
    RequestTooLargeError,
)
from byzerllm.broker.keys import GROUP, AliasKeys, Keys, decoded
from byzerllm.broker.messages import (
    FIELD,
    ReplyType,
    Request,
    decode_request,
    encode_replies,
    encode_request,
    reply,
)
from byzerllm.broker.settings import BrokerSettings

SUBMIT_SCRIPT = resources.files("byzerllm.broker").joinpath("submit.lua").read_text()
DEAD_LETTER_LIMIT = 10_000  # entries kept in a dead-letter stream (approximately)
# seconds a worker's heartbeat may be late before admission calls it gone: a Redis
# stall makes every heartbeat late; a worker that left cleanly deregisters at once
STALL_GRACE = 30.0

Entry = tuple[str, dict[bytes, bytes]]


class Admission:
    """Submits requests through the admission script, pipelined with other callers.

    The script answers ``{0, id}`` (queued), ``{1}`` (unknown alias), ``{2}``
    (no live worker) or ``{3, waiting, limit}`` (overloaded); each refusal
    becomes the error that names the alias and the fix.
    """

    def __init__(
        self, redis: aioredis.Redis, batcher: CommandBatcher, settings: BrokerSettings
    ) -> None:
        self._redis = redis
        self._batcher = batcher
        self._settings = settings
        self._keys = Keys(settings.prefix)
        self._sha = ""
        self._publish = "PUBLISH"

    async def load(self) -> None:
        self._sha = await self._redis.script_load(SUBMIT_SCRIPT)
        self._publish = await cluster.publish_command(self._redis)

    async def submit(self, request: Request) -> str:
        """Admit the request; returns its entry id in the alias' request stream."""
        data = encode_request(request)
        limit = self._settings.max_request_bytes
        if len(data) > limit:
            raise RequestTooLargeError(
                f"the request for {request.alias!r} is {len(data)} bytes, above the limit of "
                f"{limit}; send less (smaller images, fewer texts) or raise "
                "BYZERLLM_MAX_REQUEST_BYTES on clients and workers"
            )
        ak = self._keys.alias(request.alias)
        args = (
            3,
            ak.spec,
            ak.alive,
            ak.requests,
            data,
            self._settings.max_waiting,
            STALL_GRACE,
        )
        call = self._batcher.call
        result = await unless_answer(call("EVALSHA", self._sha, *args), "NOSCRIPT", default=None)
        if result is None:  # the server restarted or was flushed: load the script again
            await self.load()
            result = await call("EVALSHA", self._sha, *args)
        _raise_refusal(request.alias, result)
        return decoded(result[1])

    def cancel(self, alias: str, request_id: str) -> None:
        """Tell the alias' workers to stop a request (nobody waits for the answer)."""
        self._batcher.send(self._publish, self._keys.alias(alias).cancel_channel, request_id)


async def still_queued(
    redis: aioredis.Redis, keys: Keys, requests: list[tuple[str, str, str]]
) -> list[bool]:
    """For each (alias, entry id, request id): whether the alias' stream still holds
    that request (waiting, or taken and not finished), in one round trip.

    After a failover, a request the new master lacks was lost with the old one
    (or finished, and then its final reply is in the reply stream). The entry's
    request id is compared too: a new master may give a lost entry's id to another.
    """
    if not requests:
        return []
    pipe = redis.pipeline(transaction=False)
    for alias, entry_id, _ in requests:
        pipe.xrange(keys.alias(alias).requests, entry_id, entry_id, count=1)
    found = []
    for (_, _, request_id), entries in zip(requests, await pipe.execute(), strict=True):
        try:
            found.append(bool(entries) and decode_request(entries[0][1]).id == request_id)
        except ByzerLLMError:  # not ours, whatever it is
            found.append(False)
    return found


def _raise_refusal(alias: str, result: list[Any]) -> None:
    code = int(result[0])
    if code == 0:
        return
    if code == 1:
        raise ModelNotFoundError(alias)
    if code == 2:
        state, last_error = (decoded(v) for v in (list(result[1:3]) + ["", ""])[:2])
        raise NoLiveWorkerError(alias, state, last_error)
    raise OverloadedError(
        f"{int(result[1])} requests already wait for {alias!r} (limit {int(result[2])}); "
        "retry later, add workers, or raise the alias' limit: BYZERLLM_MAX_WAITING where "
        "the alias is deployed (or its workers started by hand), then deploy again"
    )


# -- the worker's side ------------------------------------------------------------------


async def ensure_group(redis: aioredis.Redis, ak: AliasKeys) -> None:
    """The alias' request stream and its consumer group, created if missing."""
    await unless_answer(
        redis.xgroup_create(ak.requests, GROUP, id="0", mkstream=True), "BUSYGROUP", default=None
    )


def _entries(response: Any) -> list[Entry]:
    return [
        (decoded(entry_id), fields)
        for _stream, entries in response or ()
        for entry_id, fields in entries
    ]


async def read_new(
    reader: aioredis.Redis, ak: AliasKeys, consumer: str, count: int, block_ms: int
) -> list[Entry] | None:
    """Up to ``count`` new entries for ``consumer``, blocking up to ``block_ms``.

    None when the stream or its group was gone (deleted, or Redis lost its
    data): they are created again, and the caller should register again too.
    """
    response = await unless_answer(
        reader.xreadgroup(GROUP, consumer, {ak.requests: ">"}, count=count, block=block_ms),
        "NOGROUP",
        default=None,
    )
    if response is None:
        await ensure_group(reader, ak)
        return None
    return _entries(response)


async def read_own_pending(reader: aioredis.Redis, ak: AliasKeys, consumer: str) -> list[Entry]:
    """Entries already delivered to ``consumer`` and not acked."""
    response = await reader.xreadgroup(GROUP, consumer, {ak.requests: "0"}, count=10_000)
    return _entries(response)


async def claim_stale(
    redis: aioredis.Redis, ak: AliasKeys, consumer: str, min_idle_s: float, count: int
) -> list[Entry]:
    """Up to ``count`` entries nobody touched for ``min_idle_s``: their worker is dead."""
    result = await redis.xautoclaim(
        ak.requests, GROUP, consumer, int(min_idle_s * 1000), "0-0", count=count
    )
    return [(decoded(entry_id), fields) for entry_id, fields in (result[1] if result else [])]


def stage_acks(pipe: Any, ak: AliasKeys, entry_ids: list[str]) -> None:
    """Ack and delete finished entries on a pipeline the caller executes.

    Deleting keeps the stream's length equal to waiting + in-flight
    requests, which the admission script counts.
    """
    if entry_ids:
        pipe.xack(ak.requests, GROUP, *entry_ids)
        pipe.xdel(ak.requests, *entry_ids)


def dead_letter_entry(entry_id: str, fields: dict[bytes, bytes], reason: str) -> dict[str, Any]:
    """What the dead-letter stream keeps of an entry nobody could read."""
    entry: dict[str, Any] = {"entry_id": entry_id, "reason": reason, "at": str(time.time())}
    for key, value in list(fields.items())[:16]:
        entry[f"field:{key!r}"] = value[:4096]
    return entry


def stage_dead_letters(pipe: Any, stream: str, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        pipe.xadd(stream, entry, maxlen=DEAD_LETTER_LIMIT, approximate=True)


async def answer_queued(
    redis: aioredis.Redis, ak: AliasKeys, *, queued: ByzerLLMError, running: ByzerLLMError
) -> int:
    """Answer every request still in the stream and ack it: ``queued`` for those no
    worker took, ``running`` for those a worker took and did not finish.

    For requests nobody will serve any more (the alias was undeployed): the
    client hears why at once instead of waiting out its deadline.
    """
    pending = await unless_answer(
        redis.xpending_range(ak.requests, GROUP, "-", "+", 100_000), "NOGROUP", default=[]
    )
    taken = {decoded(p["message_id"]) for p in pending}
    pipe = redis.pipeline(transaction=False)
    entries: Any = await redis.xrange(ak.requests)
    answered = 0
    for entry_id, fields in entries:
        try:
            request = decode_request(fields)
        except ByzerLLMError:
            continue
        error = running if decoded(entry_id) in taken else queued
        item = reply(request.id, 0, ReplyType.ERROR, error.to_wire(), request.attempt)
        pipe.xadd(request.reply_to, {FIELD: encode_replies([item])}, nomkstream=True)
        pipe.xack(ak.requests, GROUP, entry_id)
        answered += 1
    if answered:
        await pipe.execute()
    return answered

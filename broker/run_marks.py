"""Run marks: which worker runs a request, or ran it to its end, so none runs it twice.

Replication to a Sentinel's replica is asynchronous: the master that fails may
take its newest writes with it. A request whose entry the new master lacks is
sent again by its client under the same id (``Request.resent``); a request
whose final reply and ack were lost is claimed by a peer as if its worker had
died. Either way a worker must not run again what another one runs or ran.

A mark ``P:{A}:run:R`` holds the id of the worker running request R, or
``done:`` and that id once R ran to its end. Marks cost nothing while Redis
is healthy: workers remember what they run and ran (for ``DONE_TTL``) and
write it only once an outage is over, onto whatever master they reached;
a worker that takes a re-sent copy or a claimed retry asks :func:`claim`
first (one round trip, on those rare paths only).
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Any

import redis.asyncio as aioredis

from byzerllm.broker.keys import AliasKeys, decoded

DONE_TTL = 120  # seconds a worker remembers (and a mark keeps) that it ran a request
RUNNING_TTL = 6 * 3600  # mark of a request without a deadline
_DONE = "done:"

# KEYS[1] run mark  KEYS[2] alive zset (worker id -> heartbeat expiry, epoch s)
# ARGV[1] worker id  ARGV[2] mark ttl (s)
# Returns {0} claimed | {1, holder} a live worker runs it | {2, holder} it ran to its end
_CLAIM = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  if string.sub(held, 1, 5) == 'done:' then return {2, string.sub(held, 6)} end
  local expiry = redis.call('ZSCORE', KEYS[2], held)
  if expiry and tonumber(expiry) > tonumber(redis.call('TIME')[1]) then return {1, held} end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {0}
"""


class Claim(Enum):
    RUN = 0  # nobody else runs it, nor ran it: this worker does
    ELSEWHERE = 1  # a live worker runs it: its replies reach the client
    DONE = 2  # it ran to its end; the answer is the one its client got, or was lost


def ttl_for(deadline: float | None) -> int:
    """How long a running mark must last: past the request's deadline."""
    if deadline is None:
        return RUNNING_TTL
    return max(60, int(deadline - time.time()) + 60)


def running(worker_id: str, deadline: float | None) -> tuple[str, int]:
    """The mark (value, ttl) of a request ``worker_id`` runs."""
    return worker_id, ttl_for(deadline)


def done(worker_id: str) -> tuple[str, int]:
    """The mark (value, ttl) of a request ``worker_id`` ran to its end."""
    return f"{_DONE}{worker_id}", DONE_TTL


def stage_marks(pipe: Any, ak: AliasKeys, marks: dict[str, tuple[str, int]]) -> None:
    """Queue marks (request id -> (value, ttl)) on a pipeline the caller executes."""
    for request_id, (value, ttl) in marks.items():
        pipe.set(ak.run_mark(request_id), value, ex=ttl)


async def write_marks(
    redis: aioredis.Redis, ak: AliasKeys, marks: dict[str, tuple[str, int]]
) -> None:
    """Write marks now, in one round trip (a worker back from an outage)."""
    if marks:
        pipe = redis.pipeline(transaction=False)
        stage_marks(pipe, ak, marks)
        await pipe.execute()


async def claim(
    redis: aioredis.Redis, ak: AliasKeys, request_id: str, worker_id: str, ttl: int
) -> tuple[Claim, str]:
    """Whether ``worker_id`` may run the request, atomically taking its mark if so;
    with the worker that runs or ran it otherwise."""
    result = await redis.register_script(_CLAIM)(
        keys=[ak.run_mark(request_id), ak.alive], args=[worker_id, ttl]
    )
    holder = decoded(result[1]) if len(result) > 1 else worker_id
    return Claim(int(result[0])), holder

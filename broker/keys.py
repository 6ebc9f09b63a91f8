"""The Redis key schema: every key byzerllm touches is named here.

All keys of one alias share the hash tag ``{alias}`` so that they live in one
Redis Cluster slot and the submit script can touch them atomically.

=====================================  ===========  ==========================================
key                                    type         content
=====================================  ===========  ==========================================
``P:models``                           set          every deployed alias
``P:{A}:spec``                         hash         deployment spec of alias A (secrets masked)
``P:{A}:req``                          stream       requests for A; consumer group ``workers``
``P:{A}:dead``                         stream       malformed request entries, with the reason
``P:{A}:workers``                      set          worker ids of A
``P:{A}:worker:W``                     hash         state of worker W (broker.state.WorkerState)
``P:{A}:alive``                        zset         worker id -> heartbeat expiry (epoch s)
``P:{A}:lru``                          zset         worker id -> last work time (epoch s)
``P:{A}:cancel``                       pub/sub      request ids the clients cancelled
``P:{A}:control``                      pub/sub      JSON orders to the workers (drain)
``P:{A}:metrics``                      hash         counters and histograms of A (broker.metrics)
``P:{A}:run:R``                        string       run mark of request R: W runs it, done:W ran it
``P:apikeys``                          hash         API key name -> digest (never the key)
``P:apikey:{D}``                       hash         API key of digest D: aliases, limits, state
``P:apikey:{D}:usage:DAY``             hash         requests, tokens, errors of key D on DAY (UTC)
``P:apikey:{D}:window:MIN``            hash         requests and tokens of key D in minute MIN
``P:nodes``                            set          node agent ids
``P:node:N``                           hash         node N: host, cpus, gpus, free capacity
``P:node:{N}:queue``                   arq queue    jobs for node N (start workers)
``P:reply:C``                          stream       replies to client C; expires without C
``P:dead``                             stream       malformed reply entries seen by clients
=====================================  ===========  ==========================================

``P`` is the configurable prefix (``BYZERLLM_PREFIX``, default ``byzerllm``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

GROUP = "workers"
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def decoded(value: Any) -> str:
    """A key, member or field as read from Redis (bytes), decoded to str."""
    return value.decode() if isinstance(value, bytes) else str(value)


@lru_cache(maxsize=4096)  # a worker sees the same few reply streams over and over
def _is_reply(prefix: str, key: str) -> bool:
    head = f"{prefix}:reply:"
    return key.startswith(head) and _CLIENT_ID.fullmatch(key[len(head) :]) is not None


@dataclass(frozen=True, slots=True)
class AliasKeys:
    """Names of the keys that belong to one alias."""

    prefix: str
    alias: str

    @property
    def _base(self) -> str:
        return f"{self.prefix}:{{{self.alias}}}"

    @property
    def spec(self) -> str:
        return f"{self._base}:spec"

    @property
    def requests(self) -> str:
        return f"{self._base}:req"

    @property
    def dead_letter(self) -> str:
        return f"{self._base}:dead"

    @property
    def workers(self) -> str:
        return f"{self._base}:workers"

    @property
    def alive(self) -> str:
        return f"{self._base}:alive"

    @property
    def lru(self) -> str:
        return f"{self._base}:lru"

    @property
    def cancel_channel(self) -> str:
        return f"{self._base}:cancel"

    @property
    def control_channel(self) -> str:
        return f"{self._base}:control"

    def worker(self, worker_id: str) -> str:
        return f"{self._base}:worker:{worker_id}"

    @property
    def metrics(self) -> str:
        return f"{self._base}:metrics"

    def run_mark(self, request_id: str) -> str:
        return f"{self._base}:run:{request_id}"


@dataclass(frozen=True, slots=True)
class ApiKeyKeys:
    """Names of the keys that belong to one gateway API key, by the key's digest.

    They share the hash tag ``{digest}``, so a limit check and a usage update
    touch one Redis Cluster slot in one script.
    """

    prefix: str
    digest: str

    @property
    def record(self) -> str:
        return f"{self.prefix}:apikey:{{{self.digest}}}"

    def usage(self, day: str) -> str:
        """``day``: ``YYYY-MM-DD`` in UTC."""
        return f"{self.record}:usage:{day}"

    def window(self, minute: int) -> str:
        """``minute``: whole minutes since the epoch."""
        return f"{self.record}:window:{minute}"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "byzerllm"

    def alias(self, alias: str) -> AliasKeys:
        return AliasKeys(self.prefix, alias)

    @property
    def models(self) -> str:
        return f"{self.prefix}:models"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:dead"

    def reply(self, client_id: str) -> str:
        return f"{self.prefix}:reply:{client_id}"

    def is_reply(self, key: str) -> bool:
        """Whether ``key`` names a reply stream of this prefix (a request's ``reply_to``
        must: a worker writes nowhere else)."""
        return _is_reply(self.prefix, key)

    @property
    def nodes(self) -> str:
        return f"{self.prefix}:nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}:node:{node_id}"

    def node_queue(self, node_id: str) -> str:
        """arq's queue of node N. It and its jobs' keys (``arq:job:<job id>``, ...) share
        the hash tag ``{N}``: arq changes them in MULTI/EXEC, one slot on a cluster."""
        return f"{self.prefix}:node:{{{node_id}}}:queue"

    def node_job_id(self, node_id: str, unique: str) -> str:
        return f"{self.prefix}:node:{{{node_id}}}:job:{unique}"

    @property
    def api_key_names(self) -> str:
        return f"{self.prefix}:apikeys"

    def api_key(self, digest: str) -> ApiKeyKeys:
        return ApiKeyKeys(self.prefix, digest)

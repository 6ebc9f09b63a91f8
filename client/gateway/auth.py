"""Who may call the gateway, and how much: the master key and the keys of ``byzerllm keys``.

Two kinds of credentials, both sent as OpenAI's SDKs send them
(``Authorization: Bearer <key>``):

- the master key, from ``BYZERLLM_MASTER_KEY`` (never a command-line flag,
  never logged): every alias, no limits, no usage counted;
- API keys made with ``byzerllm keys create`` (``sk-byz-...``): kept in Redis
  as a digest only (broker/api_keys.py), each with the aliases it may use,
  rpm/tpm limits and usage per day, shared by every gateway replica.

The rule without a master key stays the simple one: no key is *required*, so
the gateway listens on loopback only (server.py). A request that presents an
API key is still checked as that key (a revoked one gets 401, limits hold,
usage is counted), so keys behave on a loopback gateway as they will on a
public one; a request with no key, or any other text, is anonymous.

Per request: :meth:`Authenticator.__call__` answers who the caller is, before
the body is read (an unknown or revoked key gets its 401 then); a key's lookup
is remembered for one second at most. The route, once it knows the alias, calls
:meth:`Caller.admit`, one round trip for a key that checks revocation (again,
so a revoked key stops at once), the alias and the limits atomically and
counts the request; it returns the :class:`Meter` that records the request's
tokens and outcome when it ends. Nothing of a key reaches a log or an error
message.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from starlette.requests import Request

from byzerllm.broker.api_keys import ApiKeys, Verdict, digest_of, is_api_key
from byzerllm.broker.connection import create_redis, redis_errors
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.gateway.errors import _ApiError, unauthorized
from byzerllm.client.gateway.metering import UNMETERED, Meter

if TYPE_CHECKING:  # redis is broker/'s business; here it only names a type
    import redis.asyncio as aioredis

MASTER_KEY_ENV = "BYZERLLM_MASTER_KEY"
LOOKUP_TTL = 1.0  # seconds a key's lookup is remembered: a revoked key's grace, at most
LOOKUP_CACHE_SIZE = 10_000  # keys remembered at once; the memory is dropped beyond

log = logging.getLogger("byzerllm.gateway")


def _not_allowed(name: str, alias: str, aliases: frozenset[str] | tuple[str, ...]) -> _ApiError:
    return _ApiError(
        403,
        f"the API key {name!r} may not use the model {alias!r}; it may use: "
        f"{', '.join(sorted(aliases))} (ask for a key with that alias: byzerllm keys create "
        "--aliases ...)",
        type_="permission_error",
        param="model",
        code="model_not_allowed",
    )


def _rate_limited(verdict: Verdict) -> _ApiError:
    what = (
        f"{verdict.limit} requests per minute"
        if verdict.limit_kind == "rpm"
        else f"{verdict.limit} tokens per minute (prompt and completion tokens of the last 60 s)"
    )
    return _ApiError(
        429,
        f"the API key {verdict.name!r} reached its limit of {what}; it frees up in "
        f"{verdict.retry_after} s (Retry-After), or ask for a higher limit",
        type_="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(verdict.retry_after)},
    )


def _unknown_key() -> _ApiError:
    return unauthorized(
        "incorrect API key: this gateway knows no such key (keys are made with "
        "`byzerllm keys create` and shown once; check that the whole key was copied)"
    )


def _revoked(name: str) -> _ApiError:
    return unauthorized(
        f"the API key {name!r} was revoked; ask for a new one (byzerllm keys create)"
    )


@dataclass(frozen=True, slots=True)
class _KeyHandle:
    """Where a key caller's admission goes: the gate and the key's digest."""

    gate: KeyGate
    digest: str


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request. ``aliases`` None: every alias. ``key``: set for an API key
    (its admission counts and limits requests), None for the master key and no key."""

    name: str
    aliases: frozenset[str] | None = None
    key: _KeyHandle | None = field(default=None, repr=False, compare=False)

    def may_use(self, alias: str) -> bool:
        return self.aliases is None or alias in self.aliases

    def check_alias(self, alias: str) -> None:
        if not self.may_use(alias):
            raise _not_allowed(self.name, alias, self.aliases or ())

    async def admit(self, alias: str) -> Meter:
        """Let the request for ``alias`` through, or raise its 401/403/429: for an API
        key, one atomic round trip that also counts it. The meter records its usage."""
        if self.key is None:
            self.check_alias(alias)
            return UNMETERED
        return await self.key.gate.admit(self.key.digest, alias)


ANONYMOUS = Caller("anonymous")
MASTER = Caller("master")


def presented_key(request: Request) -> str | None:
    """The key the client sent as ``Authorization: Bearer <key>``, if any."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class KeyGate:
    """The gateway's side of the API keys: lookups (remembered for a second at most),
    admission, and usage writes that run beside the responses, not in their way."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._redis: aioredis.Redis | None = None
        self._store: ApiKeys | None = None
        self._known: dict[str, tuple[float, Caller]] = {}
        self._writes: set[asyncio.Task[None]] = set()

    @property
    def store(self) -> ApiKeys:
        if self._store is None:  # no connection until a key is first presented
            self._redis = create_redis(self._settings)
            self._store = ApiKeys(self._redis, Keys(self._settings.prefix))
        return self._store

    async def caller(self, key: str) -> Caller:
        """The caller the key names, or a 401 (unknown or revoked)."""
        digest = digest_of(key)
        now = time.monotonic()
        known = self._known.get(digest)
        if known is not None and known[0] > now:
            return known[1]
        with redis_errors(self._settings):
            record = await self.store.lookup(digest)
        if record is None:
            raise _unknown_key()
        if not record.active:
            self._known.pop(digest, None)
            raise _revoked(record.name)
        caller = Caller(record.name, frozenset(record.aliases) or None, _KeyHandle(self, digest))
        if len(self._known) >= LOOKUP_CACHE_SIZE:
            self._known.clear()
        self._known[digest] = (now + LOOKUP_TTL, caller)
        return caller

    async def admit(self, digest: str, alias: str) -> Meter:
        with redis_errors(self._settings):
            verdict = await self.store.admit(digest, alias)
        if verdict.outcome == "admitted":
            count_tokens = verdict.tpm > 0

            def sink(input_tokens: int, output_tokens: int, failed: bool) -> None:
                self._record(digest, input_tokens, output_tokens, failed, count_tokens)

            return Meter(sink)
        if verdict.outcome in ("unknown", "revoked"):
            self._known.pop(digest, None)
            raise _unknown_key() if verdict.outcome == "unknown" else _revoked(verdict.name)
        if verdict.outcome == "alias":
            raise _not_allowed(verdict.name, alias, verdict.aliases)
        raise _rate_limited(verdict)

    def _record(
        self, digest: str, input_tokens: int, output_tokens: int, failed: bool, count: bool
    ) -> None:
        write = self._write(digest, input_tokens, output_tokens, failed, count)
        task = asyncio.get_running_loop().create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(
        self, digest: str, input_tokens: int, output_tokens: int, failed: bool, count: bool
    ) -> None:
        try:
            with redis_errors(self._settings):
                await self.store.record(
                    digest,
                    input_tokens=input_tokens,
                    output_tokens=output_tokens,
                    error=failed,
                    count_tokens=count,
                )
        except Exception as exc:  # the answer is sent; only the count is lost
            log.warning("could not record an API key's usage (%s)", type(exc).__name__)

    async def aclose(self) -> None:
        """Finish the usage writes under way, then close the connection."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = self._store = None


class Authenticator:
    """``await auth(request)``: the request's :class:`Caller`, or a 401.

    ``settings``: where the API keys are (None: the master key only)."""

    def __init__(self, master_key: str | None, settings: BrokerSettings | None = None) -> None:
        self._master = master_key.encode() if master_key else None
        self._gate = KeyGate(settings) if settings is not None else None

    @property
    def open(self) -> bool:
        """True when no key is required (no master key is set)."""
        return self._master is None

    async def __call__(self, request: Request) -> Caller:
        key = presented_key(request)
        if key is not None and self._master is not None:
            if hmac.compare_digest(key.encode(), self._master):
                return MASTER
        if key is not None and self._gate is not None and is_api_key(key):
            return await self._gate.caller(key)
        if self._master is None:
            return ANONYMOUS
        if key is None:
            raise unauthorized(
                "no API key: send the gateway's master key or a key made with "
                "`byzerllm keys create` as 'Authorization: Bearer <key>' (the api_key of "
                "OpenAI's SDKs)"
            )
        raise unauthorized(
            "incorrect API key; use the key this gateway was started with "
            "(BYZERLLM_MASTER_KEY) or one made with `byzerllm keys create`"
        )

    async def aclose(self) -> None:
        if self._gate is not None:
            await self._gate.aclose()

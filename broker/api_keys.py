"""The gateway's API keys in Redis: create, list, revoke, usage, and the per-request check.

A key is ``sk-byz-`` and 32 random bytes from :mod:`secrets` (256 bits, URL-safe
base64). It is shown once, when it is created; Redis keeps only its SHA-256
digest. A plain, unkeyed hash is enough here: a key with 256 bits of randomness
cannot be found from its digest by guessing, so the slow or keyed hashes that
protect low-entropy passwords add nothing but a secret to manage. The record
keeps a hint of the key's first characters (``sk-byz-AbCd``: 24 of its 256 bits)
so people can tell their keys apart in ``keys list``.

Every gateway request made with a key costs one round trip, :meth:`ApiKeys.admit`:
a script that finds the key by digest, checks that it is not revoked and may
use the alias, checks its rpm/tpm limits over the last 60 seconds and counts
the request, all atomically, so limits hold across any number of gateway
replicas. A refused request is not counted against the limit. Tokens are known
only after the answer: :meth:`ApiKeys.record` adds them (and an error, if the
request ended in one) to the day's usage and, for a key with a tpm limit, to
the window, in one pipelined write. So a tpm limit refuses new requests once
the tokens of the last 60 seconds reach it; the request that crossed it is
already answered.

All keys of one API key carry the hash tag ``{digest}`` (keys.ApiKeyKeys), so
on Redis Cluster the script touches one slot. The key name index ``P:apikeys``
lives elsewhere and is only read and written by the commands, never per request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

import redis.asyncio as aioredis

from byzerllm.broker.connection import awaitable
from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.keys import Keys, decoded
from byzerllm.broker.spec import check_alias

KEY_PREFIX = "sk-byz-"
HINT_CHARS = 4  # characters of the random part kept as a hint
WINDOW_TTL = 120  # seconds a minute's window is kept: its own minute and the next
USAGE_TTL = 400 * 86400  # seconds a day's usage is kept: over a year, for yearly reports
ADMIT_SCRIPT = resources.files("byzerllm.broker").joinpath("apikey_admit.lua").read_text()
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
USAGE_FIELDS = ("requests", "input_tokens", "output_tokens", "errors", "rate_limited")


def new_key() -> str:
    """A fresh API key: the prefix and 256 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def is_api_key(text: str) -> bool:
    """Whether ``text`` has the shape of a key made by :func:`new_key`."""
    return text.startswith(KEY_PREFIX) and len(text) > len(KEY_PREFIX) + HINT_CHARS


def digest_of(key: str) -> str:
    """The SHA-256 of the key, hex: what Redis keeps instead of the key (see the module)."""
    return hashlib.sha256(key.encode()).hexdigest()


def day_of(epoch: float) -> str:
    """``YYYY-MM-DD`` in UTC: the day a usage count belongs to."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise ConfigurationError("the key name is empty; give one, e.g. --name team-a")
    if not _NAME.fullmatch(name):
        raise ConfigurationError(
            f"bad key name {name!r}: use 1-64 letters, digits or _ . @ - starting with a "
            "letter or digit, e.g. team-a"
        )
    return name


def _check_limit(what: str, value: int) -> int:
    unit = "requests" if what == "rpm" else "tokens"
    if value < 0:
        raise ConfigurationError(
            f"{what} must be 0 (no limit) or the {unit} per minute the key may use, got {value}"
        )
    return value


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """What Redis knows about a key (never the key). ``aliases`` empty: every alias;
    ``rpm``/``tpm`` 0: no limit; ``revoked`` 0: active, else when it was revoked."""

    name: str
    aliases: tuple[str, ...]
    rpm: int
    tpm: int
    created: float
    revoked: float
    hint: str

    @property
    def active(self) -> bool:
        return not self.revoked

    def may_use(self, alias: str) -> bool:
        return not self.aliases or alias in self.aliases


def _record_of(fields: dict[Any, Any]) -> ApiKeyRecord | None:
    values = {decoded(k): decoded(v) for k, v in fields.items()}
    if "name" not in values:
        return None
    return ApiKeyRecord(
        name=values["name"],
        aliases=tuple(a for a in values.get("aliases", "").split(",") if a),
        rpm=int(values.get("rpm") or 0),
        tpm=int(values.get("tpm") or 0),
        created=float(values.get("created") or 0),
        revoked=float(values.get("revoked") or 0),
        hint=values.get("hint", ""),
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer of :meth:`ApiKeys.admit`. ``outcome``: ``admitted``, ``unknown``,
    ``revoked``, ``alias`` (the key may not use it) or ``limited``; for ``limited``,
    ``limit_kind`` (``rpm``/``tpm``), ``limit`` and ``retry_after`` (seconds until the
    window frees up)."""

    outcome: str
    name: str = ""
    aliases: tuple[str, ...] = ()
    rpm: int = 0
    tpm: int = 0
    limit_kind: str = ""
    limit: int = 0
    retry_after: int = 0


_OUTCOMES = {0: "admitted", 1: "unknown", 2: "revoked", 3: "alias", 4: "limited"}


def _verdict(result: list[Any]) -> Verdict:
    outcome = _OUTCOMES[int(result[0])]
    if outcome == "unknown":
        return Verdict(outcome)
    name = decoded(result[1])
    if outcome == "revoked":
        return Verdict(outcome, name)
    if outcome == "limited":
        kind, limit, wait = decoded(result[2]), int(result[3]), int(result[4])
        return Verdict(outcome, name, limit_kind=kind, limit=limit, retry_after=max(1, wait))
    aliases = tuple(a for a in decoded(result[2]).split(",") if a)
    if outcome == "alias":
        return Verdict(outcome, name, aliases)
    return Verdict(outcome, name, aliases, int(result[3]), int(result[4]))


@dataclass(frozen=True, slots=True)
class UsageRow:
    """One key's usage on one day (UTC)."""

    name: str
    day: str
    requests: int
    input_tokens: int
    output_tokens: int
    errors: int
    rate_limited: int


class ApiKeys:
    """Every Redis operation on the gateway's API keys, under one prefix."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._admit = redis.register_script(ADMIT_SCRIPT)

    # -- the commands ----------------------------------------------------------------

    async def create(
        self,
        name: str,
        aliases: list[str] | tuple[str, ...] = (),
        rpm: int = 0,
        tpm: int = 0,
    ) -> tuple[str, ApiKeyRecord]:
        """A new key named ``name``: (the key, to show once; its record)."""
        name = check_name(name)
        rpm, tpm = _check_limit("rpm", rpm), _check_limit("tpm", tpm)
        allowed = tuple(dict.fromkeys(check_alias(a.strip()) for a in aliases if a.strip()))
        key = new_key()
        digest = digest_of(key)
        # claim the name first: two creates of one name race here, and one loses
        if not await awaitable(self._redis.hsetnx(self._keys.api_key_names, name, digest)):
            existing = await self._by_name(name)
            state = (
                " (revoked: its name stays taken, with its usage, until `byzerllm keys "
                f"delete {name}`)"
                if (existing is not None and not existing[1].active)
                else ""
            )
            raise ConfigurationError(
                f"an API key named {name!r} exists already{state}; choose another name "
                "(byzerllm keys list shows the names in use)"
            )
        record = ApiKeyRecord(
            name=name,
            aliases=allowed,
            rpm=rpm,
            tpm=tpm,
            created=time.time(),
            revoked=0,
            hint=key[: len(KEY_PREFIX) + HINT_CHARS],
        )
        fields = {
            "name": name,
            "aliases": ",".join(allowed),
            "rpm": rpm,
            "tpm": tpm,
            "created": f"{record.created:.3f}",
            "revoked": 0,
            "hint": record.hint,
        }
        try:
            await awaitable(self._redis.hset(self._keys.api_key(digest).record, mapping=fields))
        except BaseException:
            await awaitable(self._redis.hdel(self._keys.api_key_names, name))
            raise
        return key, record

    async def records(self) -> list[ApiKeyRecord]:
        """Every key's record, by name (revoked ones too)."""
        names = await awaitable(self._redis.hgetall(self._keys.api_key_names))
        ordered = sorted((decoded(n), decoded(d)) for n, d in names.items())
        pipe = self._redis.pipeline(transaction=False)
        for _name, digest in ordered:
            pipe.hgetall(self._keys.api_key(digest).record)
        found = await pipe.execute() if ordered else []
        return [r for r in (_record_of(f) for f in found) if r is not None]

    async def revoke(self, name: str) -> tuple[ApiKeyRecord, bool]:
        """Revoke the key named ``name`` at once: (its record, whether it was active)."""
        digest, record = await self._known(name)
        if not record.active:
            return record, False
        now = time.time()
        await awaitable(
            self._redis.hset(self._keys.api_key(digest).record, "revoked", f"{now:.3f}")
        )
        return replace(record, revoked=now), True

    async def delete(self, name: str, now: float | None = None) -> ApiKeyRecord:
        """Forget the revoked key ``name``: its record and usage go, and the name is
        free again. An active key is refused: revoking first makes deleting a key
        that gateways still let in a two-step, deliberate act."""
        digest, record = await self._known(name)
        if record.active:
            raise ConfigurationError(
                f"the API key {name!r} is active; revoke it first (byzerllm keys revoke "
                f"{name}), then delete it"
            )
        ak = self._keys.api_key(digest)
        today = time.time() if now is None else now
        # every day a usage hash can still exist for (they share the key's hash tag:
        # one slot, so one command even on a cluster)
        days = [ak.usage(day_of(today - 86400 * back)) for back in range(USAGE_TTL // 86400 + 1)]
        await awaitable(self._redis.unlink(ak.record, *days))
        await awaitable(self._redis.hdel(self._keys.api_key_names, record.name))
        return record

    async def usage(
        self, name: str | None = None, days: int = 7, now: float | None = None
    ) -> list[UsageRow]:
        """Usage per key per day over the last ``days`` days (today included, UTC),
        by name then day; days without requests are left out."""
        if days < 1:
            raise ConfigurationError(f"days must be 1 or more, got {days}")
        if name is not None:
            digest, record = await self._known(name)
            chosen = [(record.name, digest)]
        else:
            names = await awaitable(self._redis.hgetall(self._keys.api_key_names))
            chosen = sorted((decoded(n), decoded(d)) for n, d in names.items())
        today = time.time() if now is None else now
        dates = [day_of(today - 86400 * back) for back in range(days - 1, -1, -1)]
        pipe = self._redis.pipeline(transaction=False)
        for _name, digest in chosen:
            for day in dates:
                pipe.hgetall(self._keys.api_key(digest).usage(day))
        found = iter(await pipe.execute() if chosen else [])
        rows = []
        for key_name, _digest in chosen:
            for day in dates:
                fields = {decoded(k): int(v) for k, v in next(found).items()}
                if fields:
                    counts = [fields.get(f, 0) for f in USAGE_FIELDS]
                    rows.append(UsageRow(key_name, day, *counts))
        return rows

    async def _by_name(self, name: str) -> tuple[str, ApiKeyRecord] | None:
        digest = await awaitable(self._redis.hget(self._keys.api_key_names, name))
        if digest is None:
            return None
        digest = decoded(digest)
        record = await self.lookup(digest)
        return None if record is None else (digest, record)

    async def _known(self, name: str) -> tuple[str, ApiKeyRecord]:
        found = await self._by_name(name)
        if found is None:
            names = sorted(
                decoded(n) for n in await awaitable(self._redis.hkeys(self._keys.api_key_names))
            )
            known = ", ".join(names) or "none"
            raise ConfigurationError(
                f"no API key is named {name!r}; known names: {known} (byzerllm keys list)"
            )
        return found

    # -- the gateway's side ------------------------------------------------------------

    async def lookup(self, digest: str) -> ApiKeyRecord | None:
        """The record of the key with this digest, or None if there is none."""
        fields = await awaitable(self._redis.hgetall(self._keys.api_key(digest).record))
        return _record_of(fields)

    async def admit(self, digest: str, alias: str, now: float | None = None) -> Verdict:
        """One round trip: may the key with this digest call ``alias`` now? Counts the
        request (in its window and the day's usage) only when it may."""
        at = int(time.time() if now is None else now)
        ak = self._keys.api_key(digest)
        minute = at // 60
        keys = [ak.record, ak.window(minute), ak.window(minute - 1), ak.usage(day_of(at))]
        result = await self._admit(keys=keys, args=[alias, at, WINDOW_TTL, USAGE_TTL])
        return _verdict(result)

    async def record(
        self,
        digest: str,
        *,
        input_tokens: int,
        output_tokens: int,
        error: bool,
        count_tokens: bool,
        now: float | None = None,
    ) -> None:
        """After an admitted request: its tokens (and error) into the day's usage, and
        with ``count_tokens`` (the key has a tpm limit) into its window; one write."""
        tokens = input_tokens + output_tokens
        if not tokens and not error:
            return
        at = int(time.time() if now is None else now)
        ak = self._keys.api_key(digest)
        usage = ak.usage(day_of(at))
        pipe = self._redis.pipeline(transaction=False)
        if input_tokens:
            pipe.hincrby(usage, "input_tokens", input_tokens)
        if output_tokens:
            pipe.hincrby(usage, "output_tokens", output_tokens)
        if error:
            pipe.hincrby(usage, "errors", 1)
        pipe.expire(usage, USAGE_TTL)
        if count_tokens and tokens:
            window = ak.window(at // 60)
            pipe.hincrby(window, f"t{at % 60}", tokens)
            pipe.expire(window, WINDOW_TTL)
        await pipe.execute()

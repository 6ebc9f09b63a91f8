"""Opening Redis connections, and the one place redis-py errors are mapped.

Nothing outside this module catches ``redis.exceptions`` directly: callers
wrap Redis work in :func:`redis_errors` and see only byzerllm errors.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel, SentinelConnectionPool

from byzerllm.broker.cluster import create_cluster, is_cluster
from byzerllm.broker.errors import BrokerUnavailableError, ByzerLLMError, ConfigurationError
from byzerllm.broker.redis_connection import use_broker_connections
from byzerllm.broker.settings import BrokerSettings, SentinelTarget

T = TypeVar("T")


def awaitable(command: Any) -> Awaitable[Any]:
    """A command of our asyncio client, typed as what it is.

    redis-py types each command as "awaitable or not" because one signature
    serves both its clients; ours is always the asyncio one.
    """
    return cast(Awaitable[Any], command)


# seconds a reply from Redis may take before the connection is taken for dead
READ_TIMEOUT = 30.0


def client_options(
    settings: BrokerSettings, *, blocking: bool = False, timed_reads: bool = True
) -> dict[str, Any]:
    """redis-py's socket options for our clients (see :func:`create_redis`)."""
    return {
        "socket_connect_timeout": settings.connect_timeout,
        "socket_timeout": READ_TIMEOUT if timed_reads and not blocking else None,
        "socket_keepalive": True,
        "health_check_interval": 0 if blocking else 30,
        "max_connections": None,
    }


def create_redis(
    settings: BrokerSettings, *, blocking: bool = False, timed_reads: bool = True
) -> aioredis.Redis:
    """A client for the settings' URL.

    ``blocking`` clients have no socket read timeout, for XREAD/XREADGROUP
    with BLOCK; the others time out so a dead server is noticed. Without
    ``timed_reads`` the caller times its round trips itself (the command
    batcher, once per pipeline): redis-py would time every reply of a pipeline
    on its own, at a cost that showed in profiles.

    A ``redis+sentinel://`` URL gives a client of the master the Sentinels name:
    each new connection asks them where the master is, so a process whose
    connections broke in a failover reconnects to the promoted replica. A
    ``redis+cluster://`` URL gives redis-py's cluster client (broker.cluster),
    which follows MOVED answers and failovers by itself.
    """
    options = client_options(settings, blocking=blocking, timed_reads=timed_reads)
    target = settings.sentinel
    if target is not None:
        client = _sentinel_master(target, options, settings.connect_timeout)
    elif settings.cluster is not None:
        return create_cluster(settings.cluster, options)  # the broker's connections too
    else:
        try:
            client = aioredis.Redis.from_url(settings.redis_url, **options)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {settings.safe_url!r}: {exc}") from None
    use_broker_connections(client.connection_pool)
    return client


class _SentinelPool(SentinelConnectionPool):
    """redis-py's pool of master connections, which also closes its Sentinel clients
    when it is closed (redis-py leaves them open)."""

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # closing, not just dropping connections to an old master
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()


def _sentinel_master(
    target: SentinelTarget, options: dict[str, Any], timeout: float
) -> aioredis.Redis:
    sentinels = Sentinel(
        list(target.sentinels),
        sentinel_kwargs={
            "socket_connect_timeout": timeout,
            "socket_timeout": timeout,  # a Sentinel answers at once, or is of no use
            "socket_keepalive": True,
            **target.sentinel_kwargs,
        },
    )
    return sentinels.master_for(
        target.master,
        redis_class=aioredis.Redis,
        connection_pool_class=_SentinelPool,
        **{**options, **target.master_kwargs},
    )


@contextmanager
def redis_errors(settings: BrokerSettings) -> Iterator[None]:
    """Map redis-py exceptions raised inside the block onto byzerllm errors."""
    try:
        yield
    except ByzerLLMError:
        raise
    except rex.AuthenticationError as exc:
        raise BrokerUnavailableError(
            f"Redis at {settings.safe_url} rejected the credentials: {exc}; "
            "check the user and password in --redis_url / BYZERLLM_REDIS_URL"
        ) from exc
    except MasterNotFoundError as exc:
        if "AuthenticationError" in str(exc):  # each Sentinel's error is in the text
            raise BrokerUnavailableError(
                f"the Sentinels of {settings.safe_url} refused our password (or want one): "
                "give theirs as ?sentinel_password=... in --redis_url / BYZERLLM_REDIS_URL "
                "(the URL's user:password@ is the master's)"
            ) from exc
        raise BrokerUnavailableError(
            f"the Sentinels of {settings.safe_url} name no master now (a failover under way, "
            f"or a wrong master name or Sentinel address): {exc}; retry in a few seconds, or "
            "fix --redis_url / BYZERLLM_REDIS_URL"
        ) from exc
    except (rex.ConnectionError, rex.TimeoutError, OSError) as exc:
        raise BrokerUnavailableError(
            f"cannot reach Redis at {settings.safe_url}: {exc}; start Redis there or point "
            "--redis_url / BYZERLLM_REDIS_URL at a running one"
        ) from exc
    except rex.ResponseError as exc:
        if isinstance(exc, rex.ReadOnlyError) or str(exc).startswith("UNBLOCKED"):
            raise BrokerUnavailableError(
                f"Redis at {settings.safe_url} is a replica now, not the master (a failover "
                f"moved it): {exc}; with a redis+sentinel:// URL byzerllm follows the master"
            ) from exc
        raise BrokerUnavailableError(
            f"Redis at {settings.safe_url} answered an error: {exc}"
        ) from exc


async def reconnect_later(client: aioredis.Redis) -> None:
    """Drop the client's connections, so that its next command connects afresh.

    For a loop that failed on a server that may have stopped being the master
    (a demoted master still answers reads): a new connection of a Sentinel
    URL asks the Sentinels where the master is now.
    """
    if is_cluster(client):  # it drops and re-reads the slot map itself on errors
        return
    try:
        await client.connection_pool.disconnect()
    except Exception as exc:  # closing what is broken anyway
        logging.getLogger(__name__).debug("dropping connections failed: %s", exc)


async def connect(
    settings: BrokerSettings, *, blocking: bool = False, timed_reads: bool = True
) -> aioredis.Redis:
    """A client whose server answered PING; raises BrokerUnavailableError otherwise."""
    client = create_redis(settings, blocking=blocking, timed_reads=timed_reads)
    with redis_errors(settings):
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
    return client


async def answered_within(work: Awaitable[T], seconds: float, what: str) -> T:
    """``work``'s result, or redis-py's TimeoutError naming ``what`` after ``seconds``.

    One timeout for a whole round trip, for callers on a client made without
    ``timed_reads``: redis-py would time each reply of a pipeline, and with a
    socket timeout wraps each send in a task of its own (``asyncio.wait_for``).
    On expiry redis-py drops the connection it was reading, so the next round
    trip gets a fresh one.
    """
    try:
        async with asyncio.timeout(seconds):
            return await work
    except TimeoutError:  # asyncio's
        raise rex.TimeoutError(f"Redis did not answer {what} within {seconds:g} s") from None


async def unless_answer(command: Awaitable[T], *fragments: str, default: T) -> T:
    """The command's reply, or ``default`` when Redis answers an error naming one
    of ``fragments`` (``BUSYGROUP``, ``NOGROUP``, ``no such key``): the answers
    that mean "already so" or "nothing there" rather than a failure."""
    try:
        return await command
    except rex.ResponseError as exc:
        # redis-py strips the error code of the errors it has a class for
        text = f"NOSCRIPT {exc}" if isinstance(exc, rex.NoScriptError) else str(exc)
        if any(f in text for f in fragments):
            return default
        raise


class OutageLog:
    """Says once that some Redis work failed and once that it works again.

    A process retrying through an outage (a Redis restart, a failover) would
    otherwise log every retry: several lines a second per loop.
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.down = False

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            self._log.warning("%s failed, retrying: %s", self._what, exc)
        self.down = True

    def recovered(self) -> None:
        if self.down:
            self._log.warning("%s works again", self._what)
        self.down = False


def raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library turned into another error.

    redis-py may answer a cancel during a command with a ConnectionError;
    a retry loop that catches that must still stop when its task was cancelled.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError

"""Redis Cluster: the client for a ``redis+cluster://`` URL, and what redis-py's
asyncio cluster client (5.x, the series arq allows) leaves to us.

- **Sharded pub/sub.** Its cluster client has no pub/sub at all. Cancel and
  control channels carry the alias' hash tag, so both live in the alias' slot;
  :class:`ShardedPubSub` holds one SSUBSCRIBE connection to that slot's master
  (Redis 7), published to with SPUBLISH, so a message crosses one shard instead
  of the whole cluster bus. A cluster of Redis 6 gets classic pub/sub, which a
  cluster broadcasts to every node.
- **A connection to one slot's master**, for what needs a plain connection:
  that pub/sub, and arq's job queue (arq drives a ``redis.asyncio.Redis``, with
  MULTI/EXEC over its job keys; those keys share the node agent's hash tag).
  :class:`SlotOwnerPool` asks the cluster which master owns the slot each time
  it opens a connection, so after a failover or a slot migration the next
  connection goes to the new owner, as a Sentinel pool follows its master.
- **INFO of one shard**, which the cluster client refuses inside a pipeline.
- **Failovers** (:class:`_Cluster`, :class:`_Pipeline`): stream reads find their
  slot here instead of asking a default node that may be dead, the slot map is
  read afresh after any connection error, and a pipeline's commands whose
  connection broke are sent once more.
"""

from __future__ import annotations

import logging
from typing import Any, cast
from weakref import WeakKeyDictionary

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection, ConnectionPool, SSLConnection

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.redis_connection import broker_connection_class, use_broker_connections
from byzerllm.broker.settings import ClusterTarget

log = logging.getLogger(__name__)

# redis-py's cluster client wants a number: "no limit", as for a plain client
_UNLIMITED = 2**31
# Redis answers SSUBSCRIBE from version 7 on
_SHARDED_SINCE = 7


def create_cluster(target: ClusterTarget, options: dict[str, Any]) -> aioredis.Redis:
    """A cluster client, typed as the plain client whose commands it shares.

    Everything in broker/ uses only what both have (single-key commands, EVALSHA
    on one slot's keys, non-transactional pipelines); pub/sub, INFO and plain
    connections go through this module, which knows the difference.
    """
    return cast(aioredis.Redis, _new_cluster(target, options))


class _Cluster(RedisCluster):
    """redis-py's cluster client that remembers what built it, for the plain
    clients of one slot's master made from it (same login, TLS and timeouts)."""

    def __init__(self, target: ClusterTarget, options: dict[str, Any]) -> None:
        self.target = target
        self.options = options
        kwargs = {**options, **target.node_kwargs}
        if kwargs.get("max_connections") is None:
            kwargs["max_connections"] = _UNLIMITED
        try:
            super().__init__(
                startup_nodes=[ClusterNode(host, port) for host, port in target.nodes], **kwargs
            )
        except TypeError as exc:  # an option a cluster client does not take
            raise ConfigurationError(
                f"a Redis Cluster URL option is not supported: {exc}; remove it from "
                "--redis_url / BYZERLLM_REDIS_URL"
            ) from None
        # nodes found later are made with these kwargs; the startup nodes exist already
        kwargs = self.nodes_manager.connection_kwargs
        kwargs["connection_class"] = broker_connection_class(kwargs["connection_class"])
        for node in self.nodes_manager.startup_nodes.values():
            use_broker_connections(node)

    async def _determine_slot(self, command: str, *args: Any) -> int:
        """The slot of XREAD/XREADGROUP from their STREAMS keys, here.

        redis-py asks the server (COMMAND GETKEYS, on its default node) for the
        keys of every command flagged "movablekeys", and the stream reads are:
        that was one more round trip per read, and, with the default node down,
        a read that failed until the process restarted.
        """
        if command.upper() in _STREAM_READS:
            words = [
                (a.decode(errors="replace") if isinstance(a, bytes) else str(a)).upper()
                for a in args
            ]
            streams = list(args[words.index("STREAMS") + 1 :])
            slots = {self.keyslot(key) for key in streams[: len(streams) // 2]}
            if len(slots) != 1:
                raise rex.RedisClusterException(f"{command} of streams in {len(slots)} slots")
            return slots.pop()
        return await super()._determine_slot(command, *args)

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().execute_command(*args, **kwargs)
        except (rex.ConnectionError, rex.TimeoutError):
            # a node is gone: read the slot map (and pick a live default node) afresh
            # with the next command; redis-py does so for some of these errors only
            await self.aclose()
            raise

    def pipeline(self, transaction: Any = None, shard_hint: Any = None) -> ClusterPipeline:
        if transaction or shard_hint:  # as redis-py's: a cluster has neither
            return super().pipeline(transaction, shard_hint)
        return cast(ClusterPipeline, _make(_Pipeline, self))


_STREAM_READS = ("XREAD", "XREADGROUP")
# a node's connection broke, or the node is gone
_GONE = (rex.ConnectionError, rex.TimeoutError)


class _Pipeline(ClusterPipeline):
    """redis-py's cluster pipeline, which also recovers from a connection that broke
    under it (a pooled connection to a master that failed over since).

    redis-py retries a pipeline whose send failed, but a command whose reply was
    lost comes back as its result, and the slot map stays stale. Here the map is
    read afresh and those commands, and only those, are sent once more, as
    redis-py retries a single command on a connection error. Most of what they
    do is idempotent in byzerllm (acks, heartbeats, state writes) or deduplicated
    (replies by sequence number); a submit that did run on a master which died
    before answering could be queued twice.
    """

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        stack = list(self._command_stack)
        try:
            results = await super().execute(False, allow_redirections)
        except _GONE:
            await self._client.aclose()
            raise
        broken = [i for i, result in enumerate(results) if isinstance(result, _GONE)]
        if broken:
            await self._client.aclose()
            again: ClusterPipeline = _make(ClusterPipeline, self._client)
            for i in broken:
                again.execute_command(*stack[i].args, **stack[i].kwargs)
            for i, result in zip(broken, await again.execute(False), strict=True):
                results[i] = result
        if raise_on_error:
            for result in results:
                if isinstance(result, Exception):
                    raise result
        return results


def _make(cls: Any, *args: Any) -> Any:
    # redis-py's stubs mark its cluster classes abstract (a `connection_pool` their
    # command mixins declare and a cluster never has); they are not
    return cls(*args)


def _new_cluster(target: ClusterTarget, options: dict[str, Any]) -> _Cluster:
    return cast(_Cluster, _make(_Cluster, target, options))


def is_cluster(client: Any) -> bool:
    return isinstance(client, _Cluster)


class _FindsOwner:
    """A connection that asks its pool where to connect each time it connects."""

    pool: SlotOwnerPool
    host: str
    port: int

    async def connect(self) -> None:
        if not cast(Connection, self).is_connected:
            self.host, self.port = await self.pool.owner()
        await super().connect()  # type: ignore[misc]


class _OwnerConnection(_FindsOwner, Connection):
    pass


class _OwnerSSLConnection(_FindsOwner, SSLConnection):
    pass


class SlotOwnerPool(ConnectionPool):
    """Connections to whichever master owns ``key``'s slot when each one opens."""

    def __init__(self, target: ClusterTarget, options: dict[str, Any], key: str) -> None:
        kwargs = {**options, **target.node_kwargs}
        kwargs.pop("ssl", None)
        connection_class = _OwnerSSLConnection if target.tls else _OwnerConnection
        super().__init__(connection_class=broker_connection_class(connection_class), **kwargs)
        self._key = key
        # a small client of its own that only reads the slot map
        self._locator = _new_cluster(target, options)
        self._located = False

    def make_connection(self) -> Connection:
        connection = super().make_connection()
        cast(_FindsOwner, connection).pool = self
        return connection

    async def owner(self) -> tuple[str, int]:
        """Host and port of the master that owns the key's slot now (a fresh slot
        map each time: a connection opens after an outage, or at start)."""
        if self._located:
            await self._locator.nodes_manager.initialize()
        else:
            await self._locator.initialize()
            self._located = True
        node = self._locator.get_node_from_key(self._key)
        if node is None:
            raise rex.ConnectionError(f"no master of the slot of {self._key!r} now")
        return str(node.host), int(node.port)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # closing the pool, not dropping broken connections
            await self._locator.aclose()


def slot_owner_client(client: aioredis.Redis, key: str, **options: Any) -> aioredis.Redis:
    """A plain client whose connections go to the master of ``key``'s slot, with the
    cluster client's login and TLS options (``options`` override its socket ones)."""
    cluster = cast(_Cluster, client)
    pool = SlotOwnerPool(cluster.target, {**cluster.options, **options}, key)
    return aioredis.Redis(connection_pool=pool)


class ShardedPubSub(PubSub):
    """redis-py's asyncio PubSub, which also takes shard channels (SSUBSCRIBE) and
    subscribes to them again when its connection comes back."""

    PUBLISH_MESSAGE_TYPES = ("message", "pmessage", "smessage")  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shard_channels: list[str] = []

    @property
    def subscribed(self) -> bool:
        return bool(self.shard_channels) or bool(super().subscribed)

    async def ssubscribe(self, *channels: str) -> None:
        await self.execute_command("SSUBSCRIBE", *channels)
        self.shard_channels.extend(channels)

    async def on_connect(self, connection: Connection) -> None:
        await super().on_connect(connection)
        if self.shard_channels:
            await self.execute_command("SSUBSCRIBE", *self.shard_channels)


_sharded: WeakKeyDictionary[Any, bool] = WeakKeyDictionary()


async def uses_sharded_pubsub(client: aioredis.Redis) -> bool:
    """Whether this client's pub/sub is sharded: a cluster whose nodes run Redis 7+.

    Publisher and subscriber decide alike (all nodes of a cluster run one
    version), and each client asks once.
    """
    if not is_cluster(client):
        return False
    known = _sharded.get(client)
    if known is None:
        info = await client.info("server")  # a cluster client asks one node
        major = int(str(info.get("redis_version", "0")).split(".")[0])
        known = _sharded[client] = major >= _SHARDED_SINCE
    return known


async def subscribe(client: aioredis.Redis, *channels: str) -> PubSub:
    """A pub/sub subscribed to ``channels`` (all of one hash tag: sharded channels of
    one slot when the client is a cluster's)."""
    if is_cluster(client):
        plain = slot_owner_client(client, channels[0], socket_timeout=None)
        if await uses_sharded_pubsub(client):
            sharded = ShardedPubSub(plain.connection_pool, ignore_subscribe_messages=True)
            await sharded.ssubscribe(*channels)
            return sharded
        client = plain  # classic pub/sub reaches every node of a cluster: this one will do
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(*channels)
    return pubsub


async def close_pubsub(pubsub: PubSub) -> None:
    """Close a pub/sub of :func:`subscribe`, and the pool it brought if it has one."""
    await pubsub.aclose()
    if isinstance(pubsub.connection_pool, SlotOwnerPool):
        await pubsub.connection_pool.disconnect()


async def publish_command(client: aioredis.Redis) -> str:
    """``SPUBLISH`` where subscribers use shard channels, else ``PUBLISH``."""
    return "SPUBLISH" if await uses_sharded_pubsub(client) else "PUBLISH"


async def replication_id(client: aioredis.Redis, key: str) -> str:
    """``master_replid`` of the server that holds ``key`` ("" where INFO is refused)."""
    cluster = cast(RedisCluster, client)
    try:
        info = await cluster.info("replication", target_nodes=cluster.get_node_from_key(key))
    except rex.ResponseError as exc:  # an ACL without INFO: the id is a hint, not a need
        log.debug("INFO replication failed: %s", exc)
        return ""
    return str(info.get("master_replid", ""))

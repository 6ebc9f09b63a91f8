"""Every client the broker opens uses the broker's connection class: it packs its
commands with hiredis' C packer, sending what redis-py's own packer would have sent,
and its pool checks a connection before handing it out without reading the socket,
finding what redis-py's check finds (a close, unread bytes)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.connection import Connection

from byzerllm.broker.cluster import slot_owner_client
from byzerllm.broker.connection import create_redis
from byzerllm.broker.redis_connection import (
    HiredisPacking,
    ReadinessFromLoop,
    broker_connection_class,
)
from byzerllm.broker.settings import BrokerSettings
from tests.waiting import until

VALUES = ["text", "ünïcode ✓", b"\x00\xffbytes", 42, -7, 1.5, 1e-300, memoryview(b"view")]


def _both(cls: type) -> bool:
    return issubclass(cls, HiredisPacking) and issubclass(cls, ReadinessFromLoop)


def _connection_classes(client: aioredis.Redis) -> list[type]:
    nodes = getattr(client, "nodes_manager", None)
    if nodes is None:
        return [client.connection_pool.connection_class]
    return [nodes.connection_kwargs["connection_class"]] + [
        node.connection_class for node in nodes.startup_nodes.values()
    ]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:1/0",
        "rediss://127.0.0.1:1/0",
        "unix:///tmp/nothing-here.sock",
        "redis+sentinel://127.0.0.1:1,127.0.0.1:2/mymaster",
        "redis+cluster://127.0.0.1:1,127.0.0.1:2",
        "rediss+cluster://127.0.0.1:1",
    ],
)
async def test_every_kind_of_client_uses_the_broker_connection_class(url):
    for blocking in (False, True):
        client = create_redis(BrokerSettings(redis_url=url), blocking=blocking)
        try:
            classes = _connection_classes(client)
            assert classes and all(_both(c) for c in classes), classes
            if "cluster" in url:
                owner = slot_owner_client(client, "P:node:{n}:queue")
                assert _both(owner.connection_pool.connection_class)
                await owner.aclose()
        finally:
            await client.aclose()


def test_hiredis_packs_what_redis_py_packs():
    ours, theirs = broker_connection_class(Connection)(), Connection()
    commands = [
        ("SET", "k", *VALUES),
        ("CONFIG GET", "maxmemory"),  # redis-py splits a command name given with a space
        (b"OBJECT ENCODING", b"k"),
        ("SET", "big", b"x" * 70_000),  # past redis-py's buffer cut-off
    ]
    for command in commands:
        assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))
    assert b"".join(ours.pack_commands(commands)) == b"".join(theirs.pack_commands(commands))


def test_a_value_redis_cannot_take_is_refused_as_redis_py_refuses_it():
    ours = broker_connection_class(Connection)()
    with pytest.raises(rex.DataError):
        ours.pack_command("SET", "k", object())


async def test_values_round_trip_through_a_real_server(settings: BrokerSettings):
    client = create_redis(settings)
    try:
        for i, value in enumerate(VALUES):
            await client.set(f"packing:{i}", value)
        pipe = client.pipeline(transaction=False)
        for i in range(len(VALUES)):
            pipe.get(f"packing:{i}")
        got = await pipe.execute()
        assert got == [
            b"text",
            "ünïcode ✓".encode(),
            b"\x00\xffbytes",
            b"42",
            b"-7",
            b"1.5",
            b"1e-300",
            b"view",
        ]
        assert await client.config_get("maxmemory")  # a command name with a space
    finally:
        await client.delete(*(f"packing:{i}" for i in range(len(VALUES))))
        await client.aclose()


# -- the pool's check of a connection before it hands it out --------------------------


def _pooled(client: aioredis.Redis) -> Connection:
    """The one idle connection in the client's pool."""
    [conn] = client.connection_pool._available_connections  # type: ignore[attr-defined]
    return conn


async def test_the_check_does_not_wait_for_the_socket(settings: BrokerSettings):
    """redis-py 5's check is a zero-timeout read: a loop pass and a cancelled task
    for every pooled command; this one answers at once, without suspending."""
    client = create_redis(settings)
    try:
        await client.ping()
        check = _pooled(client).can_read_destructive()
        with pytest.raises(StopIteration) as answered:
            check.send(None)
        assert answered.value.value is False
    finally:
        await client.aclose()


async def test_a_connection_the_server_closed_is_replaced_before_use(
    settings: BrokerSettings,
):
    """After a restart or a CLIENT KILL the next command gets a fresh connection
    instead of failing on the dead one (what redis-py's own check gives)."""
    client, admin = create_redis(settings), create_redis(settings)
    try:
        await client.set("readiness:k", "v")
        conn = _pooled(client)
        await admin.execute_command("CLIENT", "KILL", "ID", await client.client_id())
        await until(lambda: conn._reader is None or conn._reader.at_eof(), "the close seen")
        assert await client.get("readiness:k") == b"v"
        assert _pooled(client) is conn and not conn._reader.at_eof()  # reconnected
    finally:
        await admin.delete("readiness:k")
        await client.aclose()
        await admin.aclose()


async def test_a_connection_with_unread_bytes_is_not_handed_out_as_is(
    settings: BrokerSettings,
):
    """A reply nobody read would answer the next command: the pool must reconnect."""
    client = create_redis(settings)
    try:
        await client.set("readiness:k", "v")
        conn = _pooled(client)
        await conn.send_command("PING")  # its PONG is left unread
        await until(lambda: len(conn._reader._buffer), "the stray reply in")  # type: ignore[union-attr]
        assert await conn.can_read_destructive()
        assert await client.get("readiness:k") == b"v"
        assert await client.ping()
    finally:
        await client.delete("readiness:k")
        await client.aclose()


async def test_the_check_still_works_when_the_loop_is_busy(settings: BrokerSettings):
    """Many tasks sharing one client: every command gets its own answer."""
    client = create_redis(settings)
    try:
        results = await asyncio.gather(*(client.echo(f"m{i}") for i in range(200)))
        assert results == [f"m{i}".encode() for i in range(200)]
    finally:
        await client.aclose()

"""Every client the broker opens packs its commands with hiredis' C packer, and
what it sends is what redis-py's own packer would have sent."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.connection import Connection

from byzerllm.broker.cluster import slot_owner_client
from byzerllm.broker.connection import create_redis
from byzerllm.broker.packing import HiredisPacking, packing_class
from byzerllm.broker.settings import BrokerSettings

VALUES = ["text", "ünïcode ✓", b"\x00\xffbytes", 42, -7, 1.5, 1e-300, memoryview(b"view")]


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
async def test_every_kind_of_client_packs_with_hiredis(url):
    for blocking in (False, True):
        client = create_redis(BrokerSettings(redis_url=url), blocking=blocking)
        try:
            classes = _connection_classes(client)
            assert classes and all(issubclass(c, HiredisPacking) for c in classes), classes
            if "cluster" in url:
                owner = slot_owner_client(client, "P:node:{n}:queue")
                assert issubclass(owner.connection_pool.connection_class, HiredisPacking)
                await owner.aclose()
        finally:
            await client.aclose()


def test_hiredis_packs_what_redis_py_packs():
    ours, theirs = packing_class(Connection)(), Connection()
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
    ours = packing_class(Connection)()
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

"""Redis Cluster: the whole system on a real 3-master cluster with a replica each.

Six ``redis-server --cluster-enabled yes`` on loopback ports, joined with
``redis-cli --cluster create``; worker and node agent processes, the CLI and
``byzerllm serve`` all given the one ``redis+cluster://`` URL. What the tests
check: each alias' keys sit in its slot and aliases spread over the masters,
cancels reach workers over sharded pub/sub, and deploy (arq's queue on a
cluster), stat, undeploy and the gateway work as on one Redis.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Awaitable, Iterator
from pathlib import Path

import httpx2
import openai
import pytest
import redis
from redis.cluster import RedisCluster as SyncCluster

from byzerllm import BrokerUnavailableError, ByzerLLMError, ConfigurationError
from byzerllm.broker.connection import connect
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.state import read_alias_stat
from byzerllm.client.llm import AsyncByzerLLM
from tests.conftest import WorkerProcesses, stop_workers
from tests.processes import NodeAgent
from tests.redis_server import RedisCluster
from tests.test_gateway_keys import MASTER, Replicas, _answers, create_key
from tests.test_metrics import scrape
from tests.waiting import until, until_sync

pytestmark = pytest.mark.timeout(300)


# -- the URL ----------------------------------------------------------------------------


def test_cluster_url_names_its_nodes_and_login():
    url = "redis+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2,[::1]:7002/?socket_keepalive=true"
    target = BrokerSettings(redis_url=url).cluster
    assert target is not None
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7002))
    assert target.node_kwargs["username"] == "app"
    assert target.node_kwargs["password"] == "p@ss"
    assert target.node_kwargs["socket_keepalive"] is True
    assert not target.tls
    safe = BrokerSettings(redis_url=url).safe_url
    assert "p%40ss" not in safe and safe.startswith("redis+cluster://app:****@10.0.0.1:7000,")
    tls = BrokerSettings(redis_url="rediss+cluster://h:7000?ssl_ca_certs=/ca.pem").cluster
    assert tls is not None and tls.tls and tls.node_kwargs["ssl_ca_certs"] == "/ca.pem"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis+cluster://10.0.0.1:7000/3", "only database 0"),
        ("redis+cluster://10.0.0.1:7000,,10.0.0.2:7001", "has no host"),
        ("redis+cluster://10.0.0.1:port", "node address '10.0.0.1:port'"),
        ("redis+cluster://10.0.0.1?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_bad_cluster_url_names_the_value_and_the_form(url, expected):
    with pytest.raises(ConfigurationError, match=expected) as info:
        BrokerSettings(redis_url=url)
    assert "redis+cluster://[user:password@]host1:6379" in str(info.value)


# -- a real cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    servers = RedisCluster(masters=3, replicas=1).start()
    yield servers
    servers.stop()


@pytest.fixture(scope="module")
def view(redis_cluster: RedisCluster) -> Iterator[SyncCluster]:
    """The test's own cluster client, to look at where keys are."""
    client = SyncCluster(host="127.0.0.1", port=redis_cluster.nodes[0].port)
    yield client
    client.close()


_prefixes = iter(range(1000))


@pytest.fixture
def cluster_settings(redis_cluster: RedisCluster) -> BrokerSettings:
    return BrokerSettings(redis_url=redis_cluster.url, prefix=f"rc{next(_prefixes)}")


def master_of(view: SyncCluster, key: str) -> str:
    return str(view.get_node_from_key(key).name)


def aliases_on_distinct_masters(view: SyncCluster, prefix: str, count: int) -> list[str]:
    """Alias names whose slots belong to ``count`` different masters."""
    keys, chosen, masters = Keys(prefix), [], set()
    for i in range(1000):
        alias = f"m{i}"
        owner = master_of(view, keys.alias(alias).requests)
        if owner not in masters:
            masters.add(owner)
            chosen.append(alias)
        if len(chosen) == count:
            return chosen
    raise AssertionError("no aliases on distinct masters")


@pytest.fixture
def cluster_workers(
    cluster_settings: BrokerSettings, request: pytest.FixtureRequest
) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(cluster_settings)
    yield procs
    stop_workers(procs, request)


@pytest.fixture
async def llm(cluster_settings: BrokerSettings) -> AsyncIterator[AsyncByzerLLM]:
    client = AsyncByzerLLM(settings=cluster_settings)
    yield client
    await client.aclose()


async def _streamed(llm: AsyncByzerLLM, text: str, model: str) -> str:
    return "".join([d async for d, _ in llm.stream_chat_oai(text, model=model, delta_mode=True)])


async def test_the_data_plane_spreads_aliases_over_the_masters(
    cluster_settings, view, cluster_workers, llm
):
    keys = Keys(cluster_settings.prefix)
    aliases = aliases_on_distinct_masters(view, cluster_settings.prefix, 3)
    for alias in aliases:
        cluster_workers.start(alias, "chunks=4", concurrency=4)

    texts = [(alias, f"{alias} asks question {i}") for i in range(8) for alias in aliases]
    whole = await asyncio.gather(*(llm.chat_oai(text, model=a) for a, text in texts))
    assert [r[0].output for r in whole] == [text for _, text in texts]
    streamed = await asyncio.gather(*(_streamed(llm, text, a) for a, text in texts))
    assert streamed == [text for _, text in texts]
    [vector] = await llm.emb(aliases[0], ["a text to embed"])
    assert isinstance(vector.output, list) and vector.output

    # every key of an alias is in the alias' slot, and the three aliases are on three masters
    owners = set()
    for alias in aliases:
        ak = keys.alias(alias)
        slots = {view.keyslot(key) for key in (ak.spec, ak.requests, ak.alive, ak.workers)}
        assert len(slots) == 1
        assert view.exists(ak.spec, ak.requests, ak.alive, ak.workers) == 4
        owners.add(master_of(view, ak.requests))
    assert len(owners) == 3

    redis_ = await connect(cluster_settings)

    async def served(alias: str) -> int:  # workers write their counts with their next flush
        stat = await read_alias_stat(redis_, keys, alias)
        assert stat is not None and stat.total_workers == 1
        return sum(w.total_requests for w in stat.workers)

    try:
        for alias in aliases:
            expected = 8 * 2 + (alias == aliases[0])
            await until(lambda a=alias, n=expected: _equals(served(a), n), f"{alias}'s count")
    finally:
        await redis_.aclose()


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


def _subscribers(cluster: RedisCluster, view: SyncCluster, channel: str) -> int:
    """Subscribers of a channel, as the master that owns its slot counts them: shard
    channels on Redis 7, classic ones (which a cluster broadcasts) on Redis 6."""
    node = view.get_node_from_key(channel)
    kind = "SHARDNUMSUB" if cluster.version >= (7,) else "NUMSUB"
    with redis.Redis(host=node.host, port=node.port) as owner:
        counts = owner.execute_command("PUBSUB", kind, channel)
    return int(counts[1])


async def test_a_cancel_reaches_the_worker_over_sharded_pubsub(
    redis_cluster, cluster_settings, view, cluster_workers, llm
):
    keys = Keys(cluster_settings.prefix)
    # 2000 deltas, 0.1 s apart: only a cancel frees the slot within the wait below
    cluster_workers.start("slow", "chunks=2000", "delay=0.1", concurrency=4)
    ak = keys.alias("slow")
    for channel in (ak.cancel_channel, ak.control_channel):  # the worker subscribes as it starts
        until_sync(lambda c=channel: _subscribers(redis_cluster, view, c) == 1, f"{channel}'s")

    text = " ".join(f"w{i}" for i in range(2000))
    stream = llm.stream_chat_oai(text, model="slow", delta_mode=True)
    first, _ = await stream.__anext__()
    assert first
    redis_ = await connect(cluster_settings)

    async def busy() -> int:
        stat = await read_alias_stat(redis_, keys, "slow")
        assert stat is not None
        return stat.busy_workers

    async def idle() -> bool:
        return await busy() == 0

    try:
        assert await busy() == 1
        await stream.aclose()  # leaving the stream cancels the request on the worker
        await until(idle, "the worker to stop the cancelled stream")
    finally:
        await redis_.aclose()


# -- control plane and gateway ----------------------------------------------------------


@pytest.fixture
def node_agent(cluster_settings: BrokerSettings, tmp_path: Path) -> Iterator[NodeAgent]:
    agent = NodeAgent(cluster_settings, tmp_path)
    yield agent
    agent.stop()


def test_deploy_stat_gateway_and_undeploy_on_a_cluster(cluster_settings, view, node_agent):
    keys = Keys(cluster_settings.prefix)
    alias = aliases_on_distinct_masters(view, cluster_settings.prefix, 1)[0]
    # arq's queue and its jobs' keys share the node's hash tag: one slot for MULTI/EXEC
    assert view.keyslot(keys.node_queue("n1")) == view.keyslot(keys.node_job_id("n1", "x"))
    until_sync(lambda: view.exists(keys.node("n1")), "the node agent to report")

    deployed = node_agent.cli(
        "deploy", "--pretrained_model_type", "custom/echo", "--model", alias,
        "--num_workers", "2", "--worker_concurrency", "3",
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stderr + node_agent.log.read_text()[-3000:]
    assert "2/2 worker(s) ready" in deployed.stdout
    stat = node_agent.cli("stat", "--model", alias)
    assert stat.returncode == 0, stat.stderr
    view_ = json.loads(stat.stdout)
    assert view_["total_workers"] == 2 and view_["worker_max_concurrency"] == 3

    gateway = Replicas(cluster_settings, 1)
    try:
        [url] = gateway.urls()
        until_sync(lambda: _answers(url + "/health/ready"), "byzerllm serve to be ready")
        admin = openai.OpenAI(base_url=url + "/v1", api_key=MASTER, max_retries=0)
        assert alias in {m.id for m in admin.models.list().data}
        # a key made by `byzerllm keys create`: its limit script runs in the key's slot
        sdk = openai.OpenAI(
            base_url=url + "/v1", api_key=create_key(cluster_settings, "c1"), max_retries=0
        )
        answer = sdk.chat.completions.create(
            model=alias, messages=[{"role": "user", "content": "through the gateway"}]
        )
        assert answer.choices[0].message.content == "through the gateway"
        chunks = sdk.chat.completions.create(
            model=alias, messages=[{"role": "user", "content": "streamed on"}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "streamed on"
        )
        # the figures the workers record in their aliases' slots, read over the shards
        ok = ("byzerllm_requests_total", frozenset({("alias", alias), ("outcome", "ok")}))
        until_sync(lambda: scrape(url + "/metrics", MASTER)[1].get(ok) == 2, "2 ok scraped")
        board = httpx2.get(
            url + "/dashboard/data", headers={"Authorization": f"Bearer {MASTER}"}, timeout=30
        )
        assert board.status_code == 200 and alias in board.text
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="sk-not-a-key", max_retries=0).models.list()
    finally:
        gateway.stop()

    gone = node_agent.cli("undeploy", "--model", alias)
    assert gone.returncode == 0 and "undeployed" in gone.stdout, gone.stderr
    assert not view.exists(keys.alias(alias).spec)


# -- a master fails over ----------------------------------------------------------------


async def _answer(llm: AsyncByzerLLM, text: str, model: str, stream: bool) -> str | Exception:
    try:
        if stream:
            return await _streamed(llm, text, model)
        [response] = await llm.chat_oai(text, model=model)
        return str(response.output)
    except ByzerLLMError as exc:
        return exc


@pytest.mark.slow
async def test_calls_in_flight_end_when_their_master_fails_over():
    """SIGKILL the master of the alias' slot (and of the default node's, where redis-py
    would otherwise keep asking a dead node for stream keys) while calls run."""
    servers = RedisCluster(masters=3, replicas=1).start()
    settings = BrokerSettings(redis_url=servers.url, prefix="fo")
    workers = WorkerProcesses(settings)
    llm = None
    passed = False
    try:
        for _ in range(2):
            workers.start("fo", "delay=0.1", "chunks=12", concurrency=4)
        llm = AsyncByzerLLM(settings=settings)
        assert (await llm.chat_oai("warm up", model="fo"))[0].output == "warm up"
        owner = _owner(servers, "fo")
        texts = [" ".join(f"c{i}w{j}" for j in range(12)) for i in range(6)]
        calls = [
            asyncio.create_task(_answer(llm, text, "fo", stream=i % 2 == 0))
            for i, text in enumerate(texts)
        ]
        await until(lambda: _busy_workers(settings), "the calls to start")
        [master] = [node for node in servers.nodes if node.port == owner]
        assert master.proc is not None
        master.proc.send_signal(signal.SIGKILL)

        outcomes = await asyncio.wait_for(asyncio.gather(*calls), 30)
        for text, outcome in zip(texts, outcomes, strict=True):
            # answered in full, or told that a failover may have lost it
            assert outcome == text or isinstance(outcome, BrokerUnavailableError), outcome
        # once the cluster has promoted the replica, the same client and workers serve
        until_sync(lambda: _owner(servers, "fo") not in (owner, None), "the replica's promotion")
        after = await asyncio.gather(*(llm.chat_oai(f"after {i}", model="fo") for i in range(4)))
        assert [r[0].output for r in after] == [f"after {i}" for i in range(4)]
        passed = True
    finally:
        if llm is not None:
            await llm.aclose()
        workers.stop_all()
        if passed:  # a failure keeps the workers' logs
            workers.remove_logs()
        servers.stop()


def _owner(servers: RedisCluster, alias: str) -> int | None:
    """The port of the master that owns the alias' slot, as a live node sees it now."""
    live = next(n for n in servers.nodes if n.proc is not None and n.proc.poll() is None)
    try:
        with SyncCluster(host="127.0.0.1", port=live.port) as view:
            return int(view.get_node_from_key(Keys(alias).alias(alias).requests).port)
    except redis.RedisError:  # the cluster is down while it fails over
        return None


async def _busy_workers(settings: BrokerSettings) -> bool:
    redis_ = await connect(settings)
    try:
        stat = await read_alias_stat(redis_, Keys(settings.prefix), "fo")
        return stat is not None and stat.busy_workers == 2
    finally:
        await redis_.aclose()

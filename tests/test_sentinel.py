"""Redis Sentinel: every process follows a promoted replica, and no call hangs.

Everything is real: a master, its replica and three Sentinels (``redis-server
--sentinel``) on free ports, worker and node agent processes, the CLI, and a
Redis restarted from an older snapshot (what a promoted replica that lagged
behind its master looks like) for the requests a failover loses.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.sentinel import Sentinel

import byzerllm
from byzerllm import BrokerUnavailableError, ByzerLLMError, ConfigurationError
from byzerllm.broker.connection import connect
from byzerllm.broker.keys import Keys
from byzerllm.broker.messages import FIELD, ReplyType, delta_data, encode_replies, reply
from byzerllm.broker.settings import BrokerSettings, set_process_default
from byzerllm.broker.spec import DeploySpec
from byzerllm.broker.state import read_alias_stat
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.workers.process import WorkerProcess, spawn_worker, wait_ready
from tests.conftest import WorkerProcesses, stop_workers
from tests.processes import FAST_WORKER, NodeAgent
from tests.redis_server import RedisServer, SentinelServer
from tests.waiting import until, until_sync

pytestmark = pytest.mark.timeout(240)

MASTER = "mymaster"
# the bound: every call in flight when the master dies ends within this
ENDS_WITHIN = 40.0


# -- the URL ----------------------------------------------------------------------------


def test_sentinel_url_names_sentinels_master_db_and_both_passwords():
    url = (
        "redis+sentinel://app:master%40pw@10.0.0.1:26379,10.0.0.2,[::1]:26380/mymaster/3"
        "?sentinel_password=sentinel-pw&socket_keepalive=true"
    )
    target = BrokerSettings(redis_url=url).sentinel
    assert target is not None
    assert target.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380))
    assert target.master == "mymaster"
    assert target.master_kwargs["db"] == 3
    assert (target.master_kwargs["username"], target.master_kwargs["password"]) == (
        "app",
        "master@pw",
    )
    assert target.sentinel_kwargs == {"password": "sentinel-pw"}
    safe = BrokerSettings(redis_url=url).safe_url
    assert "master%40pw" not in safe and "sentinel-pw" not in safe
    assert safe.startswith("redis+sentinel://app:****@10.0.0.1:26379,10.0.0.2,[::1]:26380/")
    assert "sentinel_password=****" in safe


def test_tls_sentinel_url_uses_tls_to_master_and_sentinels():
    target = BrokerSettings(
        redis_url="rediss+sentinel://:pw@s1:26379/main?ssl_ca_certs=/etc/ca.pem"
    ).sentinel
    assert target is not None
    assert target.master_kwargs["ssl"] is True
    assert target.master_kwargs["ssl_ca_certs"] == "/etc/ca.pem"
    assert target.sentinel_kwargs["ssl"] is True
    assert target.sentinel_kwargs["ssl_ca_certs"] == "/etc/ca.pem"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("redis+sentinel://10.0.0.1:26379", "no master name"),
        ("redis+sentinel://10.0.0.1:26379/", "no master name"),
        ("redis+sentinel:///mymaster", "has no host"),
        ("redis+sentinel://10.0.0.1:26379,,10.0.0.2/mymaster", "has no host"),
        ("redis+sentinel://10.0.0.1:port/mymaster", "sentinel address '10.0.0.1:port'"),
        ("redis+sentinel://10.0.0.1/mymaster/zero", "/master_name/db"),
        ("redis+sentinel://10.0.0.1/mymaster/0/1", "/master_name/db"),
        ("redis+sentinel://10.0.0.1/mymaster?sentinel_pass=x", "unknown parameter"),
        ("redis+sentinel://10.0.0.1/mymaster?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_bad_sentinel_url_names_the_value_and_the_form(url, expected):
    with pytest.raises(ConfigurationError, match=expected) as info:
        BrokerSettings(redis_url=url)
    assert "redis+sentinel://[user:password@]host1:26379" in str(info.value)


def test_bad_sentinel_url_hides_its_passwords():
    with pytest.raises(ConfigurationError) as info:
        BrokerSettings(redis_url="redis+sentinel://:top-secret@h/?sentinel_password=also-secret")
    assert "top-secret" not in str(info.value) and "also-secret" not in str(info.value)


def test_connect_cluster_takes_a_sentinel_url():
    previous = set_process_default(None)
    try:
        settings = byzerllm.connect_cluster("redis+sentinel://127.0.0.1:26379/mymaster")
        assert settings.sentinel is not None and settings.sentinel.master == "mymaster"
    finally:
        set_process_default(previous)


# -- a master, a replica and three Sentinels -----------------------------------------------


@dataclass
class SentinelSet:
    master: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{MASTER}/0"

    def master_port(self) -> int:
        """The master's port as the Sentinels name it now."""
        client = redis.Redis(port=self.sentinels[0].port)
        try:
            _, port = client.sentinel_get_master_addr_by_name(MASTER)
            return int(port)
        finally:
            client.close()

    def master_client(self) -> redis.Redis:
        """A plain client of whichever server is the master (through the Sentinels)."""
        sentinel = Sentinel([("127.0.0.1", s.port) for s in self.sentinels], socket_timeout=2)
        return sentinel.master_for(MASTER, socket_timeout=5)


def _sentinels_ready(sentinels: list[SentinelServer], password: str | None = None) -> bool:
    """Each Sentinel knows the replica and the two other Sentinels: a failover can happen."""
    for sentinel in sentinels:
        client = redis.Redis(port=sentinel.port, password=password)
        try:
            state = client.sentinel_master(MASTER)
        finally:
            client.close()
        if state["num-slaves"] < 1 or state["num-other-sentinels"] < len(sentinels) - 1:
            return False
    return True


@contextmanager
def _sentinel_set(
    password: str | None = None, sentinel_password: str | None = None
) -> Iterator[SentinelSet]:
    auth = ["--requirepass", password, "--masterauth", password] if password else []
    config = [f"requirepass {sentinel_password}"] if sentinel_password else []
    master = RedisServer(*auth).start()
    replica = RedisServer("--replicaof", "127.0.0.1", str(master.port), *auth).start()
    if password:
        config.append(f"sentinel auth-pass {MASTER} {password}")
    sentinels: list[SentinelServer] = []
    try:
        probe = redis.Redis(port=replica.port, password=password)
        until_sync(
            lambda: probe.info("replication").get("master_link_status") == "up",
            "the replica to sync with its master",
        )
        probe.close()
        # started after the replica synced: their first look at the master finds it
        sentinels = [SentinelServer(master.port, *config).start() for _ in range(3)]
        until_sync(
            lambda: _sentinels_ready(sentinels, sentinel_password),
            "the Sentinels to know each other",
        )
        yield SentinelSet(master, replica, sentinels)
    finally:
        for sentinel in sentinels:
            sentinel.stop()
        replica.stop()
        master.stop()


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    with _sentinel_set() as servers:
        yield servers


async def test_the_url_logs_in_to_the_master_and_to_the_sentinels_apart():
    with _sentinel_set(password="master-pw", sentinel_password="sentinel-pw") as servers:
        hosts = servers.url.split("//", 1)[1].split("/", 1)[0]

        def url(auth: str, query: str = "") -> BrokerSettings:
            return BrokerSettings(redis_url=f"redis+sentinel://{auth}{hosts}/{MASTER}/0{query}")

        right = await connect(url(":master-pw@", "?sentinel_password=sentinel-pw"))
        try:
            await right.set("ha:probe", "1")  # a write: it reached the master
            assert await right.get("ha:probe") == b"1"
        finally:
            await right.aclose()
        with pytest.raises(BrokerUnavailableError, match="sentinel_password") as info:
            await connect(url(":master-pw@"))
        assert "master-pw" not in str(info.value)
        with pytest.raises(BrokerUnavailableError, match="rejected the credentials") as info:
            await connect(url(":wrong-pw@", "?sentinel_password=sentinel-pw"))
        assert "wrong-pw" not in str(info.value) and "sentinel-pw" not in str(info.value)


@pytest.fixture
def sentinel_settings(sentinel_set: SentinelSet) -> BrokerSettings:
    return BrokerSettings(redis_url=sentinel_set.url, prefix="ha")


@pytest.fixture
def sentinel_workers(
    sentinel_settings: BrokerSettings, request: pytest.FixtureRequest
) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(sentinel_settings)
    yield procs
    stop_workers(procs, request)


@pytest.fixture
async def client(sentinel_settings: BrokerSettings) -> AsyncIterator[AsyncByzerLLM]:
    llm = AsyncByzerLLM(settings=sentinel_settings, default_model_name="echo")
    yield llm
    await llm.aclose()


@pytest.fixture
def node_agent(sentinel_settings: BrokerSettings, tmp_path: Path) -> Iterator[NodeAgent]:
    agent = NodeAgent(sentinel_settings, tmp_path)
    yield agent
    agent.stop()


def _node_reported(sentinel_set: SentinelSet, agent: NodeAgent, since: float) -> bool:
    assert agent.proc.poll() is None, agent.log.read_text()
    client = sentinel_set.master_client()
    try:
        return float(client.hget("ha:node:n1", "heartbeat") or 0) > since
    except redis.ConnectionError:  # no master right now
        return False
    finally:
        client.close()


async def _streamed(llm: AsyncByzerLLM, text: str, started: asyncio.Event) -> str | ByzerLLMError:
    """The text a streamed call gave, or the byzerllm error it ended with."""
    got = []
    try:
        async for delta, _ in llm.stream_chat_oai(text, delta_mode=True):
            got.append(delta)
            started.set()
    except ByzerLLMError as exc:
        return exc
    return "".join(got)


async def _whole(llm: AsyncByzerLLM, text: str) -> str | ByzerLLMError:
    try:
        [response] = await llm.chat_oai(text)
    except ByzerLLMError as exc:
        return exc
    return str(response.output)


async def _runs_once_idle(settings: BrokerSettings, alias: str) -> int:
    """The requests the alias' workers ran, once none has one in flight."""
    redis_ = await connect(settings)
    keys = Keys(settings.prefix)

    async def idle_total() -> int | None:
        stat = await read_alias_stat(redis_, keys, alias)
        if stat is None or stat.busy_workers:
            return None
        return sum(w.total_requests for w in stat.workers)

    try:
        return int(await until(idle_total, f"the workers of {alias} to be idle"))
    finally:
        await redis_.aclose()


def _answered_or_told(outcome: str | ByzerLLMError, text: str) -> bool:
    """Answered in full, or ended with the error that names the failover."""
    if isinstance(outcome, BrokerUnavailableError):
        return "failover" in str(outcome)
    return outcome == text


@pytest.mark.slow
async def test_everything_follows_a_promoted_replica_and_no_call_hangs(
    sentinel_set, sentinel_settings, sentinel_workers, client, node_agent
):
    for _ in range(2):
        sentinel_workers.start("echo", "delay=0.25", concurrency=4)
    await until(
        lambda: asyncio.to_thread(_node_reported, sentinel_set, node_agent, 0),
        "the node agent to report",
    )
    [warm] = await client.chat_oai("warm up")
    assert warm.output == "warm up"

    # 10 calls on 8 slots: streams and whole answers running, two of them waiting
    texts = [" ".join(f"s{i}w{j}" for j in range(24)) for i in range(10)]
    started = [asyncio.Event() for _ in range(6)]
    calls = [
        asyncio.create_task(_streamed(client, text, event))
        for text, event in zip(texts, started, strict=False)
    ]
    calls += [asyncio.create_task(_whole(client, text)) for text in texts[6:]]
    await until(lambda: all(e.is_set() for e in started), "every stream's first words")

    old_port = sentinel_set.master_port()
    assert sentinel_set.master.proc is not None
    sentinel_set.master.proc.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    await until(lambda: sentinel_set.master_port() != old_port, "the Sentinels to promote")
    assert sentinel_set.master_port() == sentinel_set.replica.port

    outcomes = await asyncio.wait_for(
        asyncio.gather(*calls), ENDS_WITHIN - (time.monotonic() - killed)
    )
    for text, outcome in zip(texts, outcomes, strict=True):
        assert _answered_or_told(outcome, text), outcome

    # the same client and the same worker processes serve new calls on the new master
    after = await asyncio.gather(*(client.chat_oai(f"after the failover {i}") for i in range(8)))
    assert [r[0].output for r in after] == [f"after the failover {i}" for i in range(8)]
    pids = {str(w.pid) for w in sentinel_workers.workers}
    assert {r[0].metadata["worker_id"].split("-")[-2] for r in after} <= pids
    assert all(w.proc.poll() is None for w in sentinel_workers.workers)
    streamed = [d async for d, _ in client.stream_chat_oai("one more stream", delta_mode=True)]
    assert "".join(streamed) == "one more stream"
    # and none ran twice: 20 requests, 20 runs (counted by the workers, in Redis)
    assert await _runs_once_idle(sentinel_settings, "echo") == 1 + 10 + 8 + 1

    # the node agent reports to the new master and places a worker deployed now
    since = time.time()
    await until(
        lambda: asyncio.to_thread(_node_reported, sentinel_set, node_agent, since),
        "the node agent to report to the new master",
    )
    deployed = await asyncio.to_thread(
        node_agent.cli, "deploy", "--pretrained_model_type", "custom/echo", "--model", "late"
    )
    assert deployed.returncode == 0, deployed.stderr + node_agent.log.read_text()[-3000:]
    [late] = await client.chat_oai("placed after the failover", model="late")
    assert late.output == "placed after the failover"


# -- requests a failover lost ----------------------------------------------------------


@pytest.fixture
def lagging_redis() -> Iterator[RedisServer]:
    """A Redis of this test alone, restarted from a snapshot older than its last writes."""
    server = RedisServer("--dbfilename", "snapshot.rdb").start()
    yield server
    server.stop()


async def _pending(redis_: aioredis.Redis, key: str) -> int:
    return int((await redis_.xpending(key, "workers"))["pending"])


@pytest.mark.slow
async def test_requests_a_failover_lost_are_sent_again_and_run_once(lagging_redis):
    settings = BrokerSettings(redis_url=lagging_redis.url, prefix="lost")
    ak = Keys(settings.prefix).alias("echo")
    started: list[WorkerProcess] = []
    passed = False
    llm = AsyncByzerLLM(settings=settings, default_model_name="echo")
    admin = aioredis.Redis.from_url(lagging_redis.url)
    try:
        spec = DeploySpec(
            alias="echo",
            pretrained_model_type="custom/echo",
            worker_concurrency=1,
            infer_params={"delay": "0.8"},
        )
        started = [spawn_worker(spec, settings, FAST_WORKER) for _ in range(2)]
        for worker in started:
            await wait_ready(settings, worker, 120)
        [warm] = await llm.chat_oai("warm")
        assert warm.output == "warm"

        kept = "kept in the snapshot and finished by its worker"
        running = "taken after the snapshot and still running on its worker"
        queued = "queued after the snapshot and never taken"
        # one worker runs `kept`; then the snapshot (all a lagging replica would have)
        first = asyncio.create_task(llm.chat_oai(kept))
        await until(lambda: _pending(admin, ak.requests), "a worker to take the first request")
        await admin.save()
        # the other worker takes `running`; `queued` waits: Redis loses both
        words: asyncio.Queue[str] = asyncio.Queue()

        async def stream() -> str:
            got = []
            async for delta, _ in llm.stream_chat_oai(running, delta_mode=True):
                got.append(delta)
                words.put_nowait(delta)
            return "".join(got)

        second = asyncio.create_task(stream())
        await words.get()
        third = asyncio.create_task(llm.chat_oai(queued))
        await until(lambda: _when_len(admin, ak.requests, 3), "the third request to queue")

        await words.get()  # just after a word arrived: the stream has nothing unread
        assert lagging_redis.proc is not None
        lagging_redis.proc.send_signal(signal.SIGKILL)
        lagging_redis.proc.wait(10)
        lagging_redis.start()  # same port and folder: it loads the snapshot

        outcomes = await asyncio.wait_for(asyncio.gather(first, second, third), ENDS_WITHIN)
        assert outcomes[0][0].output == kept
        assert outcomes[1] == running
        assert outcomes[2][0].output == queued

        # each ran once: the copy of `running` its client sent again was not run, and
        # nothing waits in the stream any more
        await until(lambda: _when_len(admin, ak.requests, 0), "the request stream to empty")
        stat = await read_alias_stat(admin, Keys(settings.prefix), "echo")
        assert stat is not None
        runs = [w.total_requests for w in stat.workers]
        assert sum(runs) == 4, [runs] + [w.log_tail() for w in started]  # warm and the 3
        passed = True
    finally:
        await llm.aclose()
        await admin.aclose()
        for worker in started:
            worker.stop(15)
            if passed:  # a failure keeps the workers' logs
                worker.log_path.unlink(missing_ok=True)


async def _when_len(redis_: aioredis.Redis, key: str, n: int) -> bool:
    return int(await redis_.xlen(key)) == n


# -- replies a failover wrote twice, or lost --------------------------------------------


async def _inject(settings: BrokerSettings, stream: str, item: dict) -> None:
    """Add a reply entry as a worker writes one (what a failover replays or loses)."""
    admin = aioredis.Redis.from_url(settings.redis_url)
    try:
        await admin.xadd(stream, {FIELD: encode_replies([item])})
    finally:
        await admin.aclose()


async def test_a_reply_written_twice_is_passed_on_once(start_worker, llm, settings):
    await start_worker("echo", delay=0.3)
    text = " ".join(f"w{i}" for i in range(8))
    stream = llm.stream_chat_oai(text, delta_mode=True, llm_config={"gen.request_id": "twice"})
    first, _ = await stream.__anext__()
    assert first == "w0 "
    # the worker's first entry again, as a batch retried on a promoted replica would be
    again = reply("twice", 0, ReplyType.DELTA, delta_data("w0 ", ""))
    await _inject(settings, llm.channel.reply_key, again)
    rest = [delta async for delta, _ in stream]
    assert first + "".join(rest) == text


async def test_a_hole_in_an_answer_ends_the_call_with_a_clear_error(start_worker, llm, settings):
    await start_worker("echo", delay=0.3)
    text = " ".join(f"w{i}" for i in range(8))
    stream = llm.stream_chat_oai(text, delta_mode=True, llm_config={"gen.request_id": "hole"})
    first, _ = await stream.__anext__()
    assert first == "w0 "
    # an entry from further on: the ones between were lost with a failed master
    ahead = reply("hole", 5, ReplyType.DELTA, delta_data("w5 ", ""))
    await _inject(settings, llm.channel.reply_key, ahead)
    with pytest.raises(BrokerUnavailableError, match="lost part of its answer.*failover"):
        async for _ in stream:
            pass

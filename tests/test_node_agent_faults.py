"""Node agents under faults: Redis restarting under them, and agents killed.

Everything is real: a redis-server the test stops and starts again on the
same port and data directory, node agent and worker processes, the CLI.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from byzerllm.broker.embedded import is_listening
from byzerllm.broker.settings import BrokerSettings
from tests.redis_server import RedisServer
from tests.test_deploy import Cluster
from tests.waiting import until_sync

pytestmark = pytest.mark.timeout(300)

OUTAGE_LINE = "Redis failed, retrying"
BACK_LINE = "Redis works again"


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A Redis of this test alone whose data survives a restart (AOF in its dir)."""
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always").start()
    yield server
    server.stop()


@pytest.fixture
def cluster(settings, tmp_path) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path)
    yield c
    c.stop()


def deploy(cluster: Cluster, alias: str) -> None:
    result = cluster.cli("deploy", "--pretrained_model_type", "custom/echo", "--model", alias)
    assert result.returncode == 0, result.stderr


def answers(cluster: Cluster, alias: str, text: str) -> bool:
    return cluster.cli("chat", alias, text, timeout=60).stdout.strip() == text


def heartbeat(settings: BrokerSettings, node_id: str) -> float:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return float(client.hget(f"{settings.prefix}:node:{node_id}", "heartbeat") or 0)
    except redis.ConnectionError:
        return 0.0
    finally:
        client.close()


def worker_pids(cluster: Cluster, alias: str) -> list[int]:
    return [w["pid"] for w in cluster.stat(alias)["workers"] if w["ready"]]


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel whether the pid exists at all
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state not in ("Z", "X")


@pytest.mark.parametrize("outage", [3.0, 15.0])
def test_node_agent_rides_out_a_redis_restart(durable_redis, tmp_path, outage):
    settings = BrokerSettings(redis_url=durable_redis.url, prefix="faults")
    cluster = Cluster(settings, tmp_path)
    try:
        agent = cluster.node("n1")
        deploy(cluster, "steady")
        log = tmp_path / "n1.log"

        assert durable_redis.proc is not None
        durable_redis.proc.send_signal(signal.SIGTERM)
        durable_redis.proc.wait(30)
        down = time.monotonic()
        until_sync(lambda: not is_listening("127.0.0.1", durable_redis.port), "Redis to be down")

        def noticed() -> bool:
            assert agent.poll() is None, f"the node agent died:\n{log.read_text()[-3000:]}"
            return OUTAGE_LINE in log.read_text()

        until_sync(noticed, "the agent to notice the outage")
        until_sync(lambda: time.monotonic() - down >= outage, f"a {outage:g}s outage")
        durable_redis.start()  # same port, same data directory
        back = time.time()

        until_sync(lambda: heartbeat(settings, "n1") > back, "the agent to report again")
        assert agent.poll() is None, log.read_text()
        until_sync(lambda: answers(cluster, "steady", "still here"), "a chat answered", 120)
        deploy(cluster, "after_the_outage")
        assert answers(cluster, "after_the_outage", "new one")
        assert agent.poll() is None
        lines = log.read_text().splitlines()
        failed = [line for line in lines if OUTAGE_LINE in line]
        recovered = [line for line in lines if BACK_LINE in line]
        assert 1 <= len(failed) <= 3, failed  # once per outage, not once per retry
        assert 1 <= len(recovered) <= 3, recovered
    finally:
        cluster.stop()


def test_sigkilled_node_leaves_the_node_list(cluster):
    agent = cluster.node("doomed")
    cluster.node("survivor")
    agent.kill()
    agent.wait()

    def listed() -> str:
        result = cluster.cli("node", "list")
        assert result.returncode == 0, result.stderr
        return result.stdout

    until_sync(lambda: "doomed" not in listed(), "the dead node to leave the list", 120)
    assert "survivor" in listed()


def test_restarted_agent_adopts_the_workers_of_its_previous_life(cluster):
    first = cluster.node("n1")
    deploy(cluster, "orphans")
    [orphan] = worker_pids(cluster, "orphans")
    first.kill()
    first.wait()
    assert alive(orphan), "a SIGKILLed agent leaves its worker running"

    again = cluster.node("n1")
    log = cluster.home / "n1.log"
    until_sync(lambda: "adopted worker" in log.read_text(), "the orphan to be adopted")
    node = cluster.cli("node", "list").stdout
    assert "n1" in node
    client = redis.Redis.from_url(cluster.settings.redis_url)
    try:
        until_sync(
            lambda: client.hget(f"{cluster.settings.prefix}:node:n1", "workers") == b"1",
            "the adopted worker to count on the node",
        )
    finally:
        client.close()
    assert worker_pids(cluster, "orphans") == [orphan], "adopted, not replaced"
    assert answers(cluster, "orphans", "adopted")

    os.kill(orphan, signal.SIGKILL)  # the agent supervises it: a crash is restarted

    def replaced() -> list[int]:
        pids = worker_pids(cluster, "orphans")
        return [p for p in pids if p != orphan]

    [replacement] = until_sync(replaced, "the crashed adopted worker to be restarted", 120)
    assert answers(cluster, "orphans", "restarted")

    again.send_signal(signal.SIGTERM)  # and stops it when the agent stops
    again.wait(60)
    until_sync(lambda: not alive(replacement), "the worker to stop with its agent")


def test_a_recorded_pid_that_is_not_a_worker_is_never_signalled(cluster, monkeypatch):
    """The ledger's pid may belong to another process by now: leave that alone."""
    from byzerllm.workers.node_ledger import LedgerEntry, process_start, write_ledger

    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        started = until_sync(lambda: process_start(bystander.pid), "the bystander to run")
        monkeypatch.setenv("BYZERLLM_HOME", str(cluster.home))  # where the agent looks
        ghost = LedgerEntry(
            slot="ghost#1",
            alias="ghost",
            generation=1,
            cpus=0.01,
            gpu_ids=[],
            pid=bystander.pid,
            started=started,
            log_path=str(cluster.home / "ghost.log"),
        )
        write_ledger("n2", [ghost])
        agent = cluster.node("n2")
        log = cluster.home / "n2.log"
        until_sync(lambda: "worker ghost#1 left" in log.read_text(), "the agent to drop it")
        assert bystander.poll() is None, "a process that is no worker was signalled"
        assert agent.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


def test_agent_stopped_while_redis_is_down_still_stops_its_workers(durable_redis, tmp_path):
    settings = BrokerSettings(redis_url=durable_redis.url, prefix="faults")
    cluster = Cluster(settings, tmp_path)
    try:
        agent = cluster.node("n1")
        deploy(cluster, "abandoned")
        [worker] = worker_pids(cluster, "abandoned")
        assert durable_redis.proc is not None
        durable_redis.proc.send_signal(signal.SIGTERM)
        durable_redis.proc.wait(30)
        log = tmp_path / "n1.log"
        until_sync(lambda: OUTAGE_LINE in log.read_text(), "the agent to notice the outage")
        agent.send_signal(signal.SIGTERM)
        agent.wait(120)
        until_sync(lambda: not alive(worker), "the worker to stop with its agent", 120)
    finally:
        cluster.stop()

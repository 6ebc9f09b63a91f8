"""Write access to Redis must not mean code execution or key theft.

What someone who can write to Redis tries here, against real processes: a
pickle on a node agent's job queue (arq's default format), and a deployed
spec changed to send the API key elsewhere. See docs/security.md.
"""

from __future__ import annotations

import json
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from byzerllm.broker import deployments
from byzerllm.broker.connection import connect
from byzerllm.broker.errors import ByzerLLMError, ConfigurationError
from byzerllm.broker.keys import Keys
from byzerllm.broker.secrets import seal
from byzerllm.broker.spec import DeploySpec
from tests.openai_stub import OpenAIStub
from tests.test_deploy import Cluster
from tests.waiting import until_sync

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def cluster(settings, tmp_path) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path)
    yield c
    c.stop()


class _TouchOnLoad:
    """Unpickling this creates ``path``: proof that a pickle ran in the reader."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


def test_a_pickled_job_on_a_node_queue_is_never_run(cluster, sync_redis, settings):
    agent = cluster.node("n1")
    marker = cluster.home / "pickle-ran"
    job_id = f"evil-{uuid.uuid4().hex}"
    job = {
        "t": 1,
        "f": "start_worker",
        "a": ["nothing", 1],
        "k": {},
        "et": int(time.time() * 1000),
        "payload": _TouchOnLoad(marker),
    }
    queue = Keys(settings.prefix).node_queue("n1")
    sync_redis.set(f"arq:job:{job_id}", pickle.dumps(job))
    sync_redis.zadd(queue, {job_id: int(time.time() * 1000)})

    deployed = cluster.cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "ok")
    assert deployed.returncode == 0, deployed.stderr  # a proper job still starts a worker
    assert cluster.cli("chat", "ok", "fine").stdout.strip() == "fine"
    until_sync(lambda: sync_redis.zscore(queue, job_id) is None, "the agent to drop the pickle")
    assert not marker.exists(), "the node agent unpickled a job from Redis"
    assert agent.poll() is None
    assert "deserializing job" in (cluster.home / "n1.log").read_text()


class _Listener:
    """An attacker's HTTP endpoint: records every byte sent to it, answers 401."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.received = bytearray()
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                head = bytearray()
                try:
                    while b"\r\n\r\n" not in head and (data := conn.recv(65536)):
                        head += data
                    self.received += head
                    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    self.received += head

    def close(self) -> None:
        self.sock.close()


def test_a_changed_spec_is_refused_and_the_key_stays_home(cluster, sync_redis, settings):
    secret = "sk-sealed-and-bound-7e2a"
    attacker = _Listener()
    try:
        with OpenAIStub(api_key=secret) as stub:
            agent = cluster.node("n1")
            result = cluster.cli(
                "deploy",
                "--pretrained_model_type",
                "saas/openai",
                "--infer_params",
                f"saas.base_url={stub.base_url}",
                f"saas.api_key={secret}",
                "saas.model=gpt-4o",
                "--model",
                "bound",
            )
            assert result.returncode == 0, result.stderr
            agent.send_signal(signal.SIGTERM)  # its worker leaves with it; the spec stays
            agent.wait(60)

        spec_key = f"{settings.prefix}:{{bound}}:spec"
        params = json.loads(sync_redis.hget(spec_key, "infer_params"))
        params["saas.base_url"] = attacker.url
        sync_redis.hset(
            spec_key, mapping={"infer_params": json.dumps(params), "model_path": "evil-model"}
        )

        log = cluster.home / "tampered-worker.log"
        with open(log, "wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "byzerllm.workers", "--model", "bound"],
                env=cluster.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:

            def ready() -> bool:
                return any(
                    w["ready"] and w["pid"] == worker.pid for w in cluster.stat("bound")["workers"]
                )

            until_sync(lambda: worker.poll() is not None or ready(), "the worker to decide")
            if worker.poll() is None:  # it serves: see where a request takes the key
                cluster.cli("chat", "bound", "where does my key go?")
                leaked = secret.encode() in bytes(attacker.received)
                assert not leaked, (
                    "the worker served the changed spec: the key reached the attacker"
                )
            until_sync(lambda: worker.poll() is not None, "the worker to refuse the spec")
        finally:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
        output = log.read_text()
        assert secret.encode() not in bytes(attacker.received), "the API key reached the attacker"
        assert worker.returncode == 1, output
        assert "'bound'" in output and "changed" in output, output
        assert "infer_params" in output and "model_path" in output, output
        assert secret not in output
    finally:
        attacker.close()


@pytest.fixture
def cluster_key(monkeypatch) -> bytes:
    key = Fernet.generate_key()
    monkeypatch.setenv("BYZERLLM_SECRET_KEY", key.decode())
    return key


async def _store(settings, spec: DeploySpec, generation: int = 1):
    redis_client = await connect(settings)
    keys = Keys(settings.prefix)
    await deployments.save(redis_client, keys, spec, generation=generation, max_waiting=100)
    return redis_client, keys


SPEC = DeploySpec(
    alias="guarded",
    pretrained_model_type="saas/openai",
    model_path="gpt-4o",
    infer_params={"saas.base_url": "https://api.example/v1", "saas.api_key": "sk-x"},
)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pretrained_model_type", "custom/echo"),
        ("model_path", "/tmp/evil"),
        ("infer_params", json.dumps({"saas.base_url": "http://evil/v1"})),
        ("worker_concurrency", "64"),
        ("generation", "7"),
    ],
)
async def test_load_refuses_every_changed_field(settings, cluster_key, field, value):
    client, keys = await _store(settings, SPEC)
    try:
        assert await deployments.load(client, keys, "guarded") == SPEC  # secrets included
        await client.hset(keys.alias("guarded").spec, field, value)
        with pytest.raises(ConfigurationError, match=r"'guarded'.*changed.*" + field):
            await deployments.load(client, keys, "guarded")
    finally:
        await client.aclose()


async def test_load_refuses_a_seal_moved_from_another_alias(settings, cluster_key):
    client, keys = await _store(settings, SPEC)
    other = SPEC.model_copy(update={"alias": "victim"})
    try:
        await deployments.save(client, keys, other, generation=1, max_waiting=100)
        stored = await client.hgetall(keys.alias("guarded").spec)
        stored[b"alias"] = b"victim"
        await client.hset(keys.alias("victim").spec, mapping=stored)
        with pytest.raises(ConfigurationError, match="'victim'.*sealed for 'guarded'"):
            await deployments.load(client, keys, "victim")
    finally:
        await client.aclose()


async def test_load_refuses_specs_without_a_whole_seal(settings, cluster_key):
    client, keys = await _store(settings, SPEC)
    spec_key = keys.alias("guarded").spec
    try:
        await client.hset(spec_key, "sealed", "")
        with pytest.raises(ConfigurationError, match="'guarded'.*no seal"):
            await deployments.load(client, keys, "guarded")
        old = seal({"saas.api_key": "sk-x"})  # what the previous version sealed
        await client.hset(spec_key, "sealed", old)
        with pytest.raises(ConfigurationError, match="'guarded'.*older byzerllm"):
            await deployments.load(client, keys, "guarded")
        await client.hset(spec_key, "sealed", old[:-4] + "AAAA")
        with pytest.raises(ByzerLLMError, match="'guarded'.*cannot be trusted"):
            await deployments.load(client, keys, "guarded")
    finally:
        await client.aclose()


async def test_a_spec_sealed_with_another_cluster_key_is_refused(
    settings, cluster_key, monkeypatch
):
    client, keys = await _store(settings, SPEC)
    monkeypatch.setenv("BYZERLLM_SECRET_KEY", Fernet.generate_key().decode())
    try:
        with pytest.raises(ConfigurationError, match="'guarded'.*same BYZERLLM_SECRET_KEY"):
            await deployments.load(client, keys, "guarded")
    finally:
        await client.aclose()


def test_redis_holds_neither_the_key_nor_a_pickle(cluster, sync_redis, settings):
    """After a deploy, no value in Redis is a pickle (protocol 2+ starts with 0x80)."""
    cluster.node("n1")
    deployed = cluster.cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "scan")
    assert deployed.returncode == 0, deployed.stderr
    for key in sync_redis.scan_iter("*"):
        if sync_redis.type(key) == b"string":
            assert not (sync_redis.get(key) or b"").startswith(b"\x80"), key

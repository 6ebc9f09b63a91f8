"""The control plane end to end: node agents as real processes, deploy, undeploy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.openai_stub import OpenAIStub
from tests.processes import control_plane_env
from tests.waiting import until, until_sync

pytestmark = pytest.mark.timeout(180)


class Cluster:
    """Node agents for one test, and the CLI pointed at them."""

    def __init__(self, settings, home: Path) -> None:
        self.settings = settings
        self.home = home
        self.env = control_plane_env(settings, home)
        self.nodes: list[subprocess.Popen[bytes]] = []

    def node(self, node_id: str, gpus: int = 0, cpus: float = 4) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{node_id}.log", "ab")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "byzerllm.cli.main",
                "node",
                "start",
                "--node_id",
                node_id,
                "--gpus",
                str(gpus),
                "--cpus",
                str(cpus),
            ],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.nodes.append(proc)
        client = redis.Redis.from_url(self.settings.redis_url)

        def reported() -> bool:
            assert proc.poll() is None, (self.home / f"{node_id}.log").read_text()
            return bool(client.hget(f"{self.settings.prefix}:node:{node_id}", "heartbeat"))

        try:
            until_sync(reported, f"node agent {node_id} to report")
        finally:
            client.close()
        return proc

    def cli(
        self, *args: str, timeout: float = 120, entry: str = "byzerllm_cli"
    ) -> subprocess.CompletedProcess[str]:
        code = f"from byzerllm.cli.main import {entry}; {entry}()"
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def stat(self, alias: str) -> dict:
        result = self.cli("stat", "--model", alias)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def stop(self) -> None:
        for proc in self.nodes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.nodes:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def cluster(settings, tmp_path) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path)
    yield c
    c.stop()


def test_deploy_chat_stat_undeploy(cluster, settings, sync_redis):
    cluster.node("n1")
    result = cluster.cli(
        "deploy",
        "--pretrained_model_type",
        "custom/echo",
        "--num_workers",
        "2",
        "--worker_concurrency",
        "4",
        "--infer_params",
        "prefix=echo: ",
        "--model",
        "echo_chat",
    )
    assert result.returncode == 0, result.stderr
    assert "2/2 worker(s) ready" in result.stdout
    chat = cluster.cli("chat", "echo_chat", "hello cluster")
    assert chat.stdout.strip() == "echo: hello cluster"
    view = cluster.stat("echo_chat")
    assert view["total_workers"] == 2 and view["worker_max_concurrency"] == 4
    assert view["deploy_state"] == "ready"
    query = cluster.cli("query", "--model", "echo_chat", "--query", "once")
    assert query.stdout.strip() == "echo: once"
    gone = cluster.cli("undeploy", "--model", "echo_chat")
    assert gone.returncode == 0 and "undeployed" in gone.stdout
    # nothing of the alias is left but run marks, which expire by themselves
    left = [
        key
        for key in sync_redis.scan_iter(f"{settings.prefix}:{{echo_chat}}:*")
        if b":run:" not in key or sync_redis.ttl(key) < 0
    ]
    assert left == []
    after = cluster.cli("chat", "echo_chat", "anyone?")
    assert after.returncode != 0 and "'echo_chat'" in after.stderr


def test_placement_follows_gpu_capacity(cluster, sync_redis, settings):
    cluster.node("cpu_only", gpus=0)
    cluster.node("two_gpus", gpus=2)
    ok = cluster.cli(
        "deploy",
        "--pretrained_model_type",
        "custom/echo",
        "--num_workers",
        "2",
        "--gpus_per_worker",
        "1",
        "--model",
        "gpu_model",
    )
    assert ok.returncode == 0, ok.stderr
    node = sync_redis.hgetall(f"{settings.prefix}:node:two_gpus")
    assert node[b"used_gpus"] == b"2" and node[b"workers"] == b"2"
    assert sync_redis.hget(f"{settings.prefix}:node:cpu_only", "workers") == b"0"
    pinned = sorted(
        sync_redis.hget(f"{settings.prefix}:{{gpu_model}}:worker:{w.decode()}", "gpu_ids")
        for w in sync_redis.smembers(f"{settings.prefix}:{{gpu_model}}:workers")
    )
    assert pinned == [b"0", b"1"], "each worker sees its own GPU"
    full = cluster.cli(
        "deploy",
        "--pretrained_model_type",
        "custom/echo",
        "--gpus_per_worker",
        "1",
        "--model",
        "one_more",
    )
    assert full.returncode != 0
    assert "not enough resources" in full.stderr and "two_gpus: 4 CPUs / 0 GPUs free" in (
        full.stderr.replace("3.98", "4")
    )


def test_deploy_without_node_agent_says_how_to_start_one(cluster):
    result = cluster.cli("deploy", "--pretrained_model_type", "custom/echo", "--model", "x")
    assert result.returncode != 0
    assert "no node agent is alive" in result.stderr and "byzerllm node start" in result.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--pretrained_model_type", "custom/ecko"], ["'custom/ecko'", "custom/echo"]),
        (
            ["--pretrained_model_type", "custom/auto", "--infer_backend", "vlm"],
            ["'vlm'", "custom/auto+vllm"],
        ),
        (
            ["--pretrained_model_type", "custom/echo", "--infer_params", "dellay=0.1"],
            ["'dellay'", "did you mean delay"],
        ),
        (  # the guide's placeholder endpoint, refused by the worker's own check
            [
                "--pretrained_model_type",
                "saas/azure_openai",
                "--infer_params",
                "saas.api_type=azure saas.azure_endpoint=https:/xxx.openai.azure.com/ "
                "saas.api_key=xxx saas.api_version=2024-02-15-preview "
                "saas.azure_deployment=gpt-35-turbo-16k saas.model=gpt-35-turbo-16k",
            ],
            ["saas.azure_endpoint must be a URL"],
        ),
    ],
)
def test_deploy_refuses_what_a_worker_would_before_placing_one(
    cluster, sync_redis, settings, args, expected
):
    cluster.node("n1")
    result = cluster.cli("deploy", *args, "--model", "typo")
    assert result.returncode != 0
    for text in expected:
        assert text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    # nothing was placed or recorded: the next deploy needs no undeploy
    assert not sync_redis.exists(f"{settings.prefix}:{{typo}}:spec")
    assert sync_redis.hget(f"{settings.prefix}:node:n1", "workers") in (None, b"0")


def test_backend_that_cannot_load_fails_the_deploy_with_its_error(cluster):
    cluster.node("n1")
    result = cluster.cli(
        "deploy",
        "--pretrained_model_type",
        "custom/echo",
        "--infer_params",
        "fail_on_start=weights file is truncated",
        "--model",
        "broken",
        "--timeout",
        "120",
    )
    assert result.returncode != 0
    assert "weights file is truncated" in result.stderr
    assert cluster.stat("broken")["deploy_state"] == "degraded"


def test_crashed_worker_is_restarted(cluster, sync_redis, settings):
    cluster.node("n1")
    assert (
        cluster.cli(
            "deploy", "--pretrained_model_type", "custom/echo", "--model", "phoenix"
        ).returncode
        == 0
    )
    [first] = cluster.stat("phoenix")["workers"]
    os.kill(first["pid"], signal.SIGKILL)

    def replaced() -> bool:
        workers = cluster.stat("phoenix")["workers"]
        return bool(workers and workers[0]["pid"] != first["pid"] and workers[0]["ready"])

    until_sync(replaced, "a replacement worker", limit=120)
    assert cluster.cli("chat", "phoenix", "back again").stdout.strip() == "back again"
    # the crash was a one-off: once the replacement serves, its error is cleared
    spec_key = f"{settings.prefix}:{{phoenix}}:spec"

    def cleared() -> bool:
        fields = sync_redis.hgetall(spec_key)
        return fields.get(b"state") == b"ready" and not fields.get(b"last_error")

    until_sync(cleared, "the alias ready with no last error")


def test_redeploy_needs_force_and_force_replaces_without_dropping(cluster, settings, sync_redis):
    cluster.node("n1")
    base = ["deploy", "--pretrained_model_type", "custom/echo", "--model", "rolling"]
    assert cluster.cli(*base, "--infer_params", "prefix=v1 ").returncode == 0
    again = cluster.cli(*base)
    assert again.returncode != 0 and "--force" in again.stderr

    workers = f"{settings.prefix}:{{rolling}}:workers"

    def only_generation_2_left() -> bool:
        generations = {
            sync_redis.hget(f"{settings.prefix}:{{rolling}}:worker:{w.decode()}", "generation")
            for w in sync_redis.smembers(workers)
        }
        return generations == {b"2"}

    async def keep_asking() -> list[str]:
        from byzerllm.client.llm import AsyncByzerLLM

        llm = AsyncByzerLLM(settings=settings, default_model_name="rolling")
        answers = []
        deploy = asyncio.create_task(
            asyncio.to_thread(cluster.cli, *base, "--force", "--infer_params", "prefix=v2 ")
        )
        while not deploy.done():
            answers.append((await llm.chat_oai("x"))[0].output)
        assert deploy.result().returncode == 0, deploy.result().stderr
        await until(only_generation_2_left, "the old worker to drain and leave")
        answers.append((await llm.chat_oai("x"))[0].output)
        await llm.aclose()
        return answers

    answers = asyncio.run(keep_asking())
    assert answers[0] == "v1 x" and answers[-1] == "v2 x"
    assert set(answers) <= {"v1 x", "v2 x"}, "no request failed during the switch"


def test_undeploy_drains_in_flight_and_answers_queued(cluster, settings, sync_redis):
    cluster.node("n1")
    assert (
        cluster.cli(
            "deploy",
            "--pretrained_model_type",
            "custom/echo",
            "--infer_params",
            "delay=2.0",
            "--model",
            "slow",
        ).returncode
        == 0
    )

    requests = f"{settings.prefix}:{{slow}}:req"

    async def scenario() -> tuple[object, object]:
        from byzerllm.client.llm import AsyncByzerLLM

        llm = AsyncByzerLLM(settings=settings, default_model_name="slow")
        # 10 s on the one slot: still running when the undeploy (one CLI call) drains it
        running = asyncio.create_task(llm.chat_oai("a b c d e f"))
        await until(lambda: sync_redis.xpending(requests, "workers")["pending"] == 1, "A taken")
        queued = asyncio.create_task(llm.chat_oai("queued behind"))
        await until(lambda: sync_redis.xlen(requests) == 2, "B queued behind A")
        await asyncio.to_thread(cluster.cli, "undeploy", "--model", "slow")
        results = await asyncio.gather(running, queued, return_exceptions=True)
        await llm.aclose()
        return results[0], results[1]

    finished, queued = asyncio.run(scenario())
    assert finished[0].output == "a b c d e f"  # type: ignore[index]
    assert isinstance(queued, Exception) and "undeployed" in str(queued)


def test_secret_is_sealed_in_redis_and_reaches_the_worker(cluster, sync_redis, settings):
    secret = "sk-known-secret-4f1d"
    with OpenAIStub(api_key=secret) as stub:
        cluster.node("n1")
        result = cluster.cli(
            "deploy",
            "--pretrained_model_type",
            "saas/openai",
            "--infer_params",
            f"saas.base_url={stub.base_url}",
            f"saas.api_key={secret}",
            "saas.model=gpt-4o",
            "--model",
            "sealed",
        )
        assert result.returncode == 0, result.stderr
        assert secret not in result.stdout + result.stderr
        answer = cluster.cli("chat", "sealed", "the key works")
        assert answer.stdout.strip() == "the key works", answer.stderr
        stat = cluster.cli("stat", "--model", "sealed")
        assert secret not in stat.stdout
    for key in sync_redis.scan_iter("*"):
        kind = sync_redis.type(key).decode()
        if kind == "hash":
            blob = b"".join(k + v for k, v in sync_redis.hgetall(key).items())
        elif kind == "stream":
            blob = b"".join(
                b"".join(k + v for k, v in f.items()) for _, f in sync_redis.xrange(key)
            )
        elif kind == "set":
            blob = b"".join(sync_redis.smembers(key))
        elif kind == "zset":
            blob = b"".join(sync_redis.zrange(key, 0, -1))
        elif kind == "string":
            blob = sync_redis.get(key) or b""
        elif kind == "list":
            blob = b"".join(sync_redis.lrange(key, 0, -1))
        else:
            continue
        assert secret.encode() not in blob, key
    for log in cluster.home.rglob("*.log"):
        assert secret not in log.read_text(errors="replace"), log


def test_easy_deploy_known_and_unknown_models(cluster):
    with OpenAIStub(api_key="tok-123") as stub:
        cluster.node("n1")
        unknown = cluster.cli("deploy", "no-such-model", "--token", "t", entry="easy_byzerllm_cli")
        assert unknown.returncode != 0
        assert "deepseek-chat" in unknown.stderr and "byzerllm deploy" in unknown.stderr
        ok = cluster.cli(
            "deploy",
            "deepseek-chat",
            "--token",
            "tok-123",
            "--alias",
            "ds",
            "--base_url",
            stub.base_url,
            entry="easy_byzerllm_cli",
        )
        assert ok.returncode == 0, ok.stderr
        chat = cluster.cli("chat", "ds", "hi deepseek", entry="easy_byzerllm_cli")
        assert chat.stdout.strip() == "hi deepseek"
        assert stub.last_request["model"] == "deepseek-chat"
        gone = cluster.cli("undeploy", "ds", entry="easy_byzerllm_cli")
        assert "undeployed" in gone.stdout

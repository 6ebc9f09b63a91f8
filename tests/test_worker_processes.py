"""How worker processes start: their own entry point, no secret on a command line,
and a node agent's failed start that reaches ``deploy`` at once."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.process import spawn_worker, wait_ready
from tests.test_deploy import Cluster

pytestmark = pytest.mark.timeout(180)


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


async def test_a_worker_runs_from_its_own_entry_with_the_spec_on_stdin(settings, llm):
    secret = "sk-never-on-a-command-line-42"
    spec = DeploySpec(
        alias="echo", pretrained_model_type="custom/echo", infer_params={"saas.api_key": secret}
    )
    worker = spawn_worker(spec, settings)
    try:
        await wait_ready(settings, worker, 60)
        command = _cmdline(worker.pid)
        assert "-m byzerllm.workers --model echo --spec-stdin" in command
        assert secret not in command and "byzerllm.cli" not in command
        [r] = await llm.chat_oai("hello worker")
        assert r.output == "hello worker"
    finally:
        worker.stop(30)
    worker.log_path.unlink()  # passed: its log is not needed


def test_the_worker_entry_names_a_missing_deployment(settings):
    env = {"BYZERLLM_REDIS_URL": settings.redis_url, "BYZERLLM_PREFIX": settings.prefix}
    result = subprocess.run(
        [sys.executable, "-m", "byzerllm.workers", "--model", "nobody_home"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "'nobody_home'" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def cluster(settings, tmp_path):
    c = Cluster(settings, tmp_path)
    yield c
    c.stop()


def test_a_node_agent_that_cannot_start_a_worker_fails_the_deploy_at_once(cluster):
    cluster.node("n1")
    # the agent writes each worker's log under BYZERLLM_HOME/logs: make that impossible
    logs = cluster.home / "logs"
    shutil.rmtree(logs)
    logs.write_text("not a folder")
    result = cluster.cli(
        "deploy", "--pretrained_model_type", "custom/echo", "--model", "doomed", timeout=120
    )
    assert result.returncode != 0
    assert "could not start a worker of 'doomed'" in result.stderr, result.stderr
    assert "NotADirectoryError" in result.stderr, result.stderr  # the cause, not a timeout

"""Real processes of a deployment for tests on other Redis set-ups (Sentinel, Cluster):
echo workers started directly, and a node agent with the CLI beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.process import WorkerProcess, spawn_worker, wait_ready

# quick liveness, so that a dead worker's requests move on within seconds
FAST_WORKER = ["--heartbeat_interval", "0.2", "--heartbeat_ttl", "1.0", "--claim_idle", "1.5"]


def control_plane_env(settings: BrokerSettings, home: Path) -> dict[str, str]:
    """The environment of node agents and CLI calls of one test: its Redis and prefix,
    a home of its own, and a fresh cluster key."""
    return {
        **os.environ,
        "BYZERLLM_REDIS_URL": settings.redis_url,
        "BYZERLLM_PREFIX": settings.prefix,
        "BYZERLLM_HOME": str(home),
        "BYZERLLM_SECRET_KEY": Fernet.generate_key().decode(),
        "PYTHONUNBUFFERED": "1",
    }


async def start_echo_workers(
    settings: BrokerSettings, started: list[WorkerProcess], alias: str, n: int, *params: str
) -> None:
    spec = DeploySpec(
        alias=alias,
        pretrained_model_type="custom/echo",
        worker_concurrency=4,
        infer_params=dict(p.split("=", 1) for p in params),
    )
    for _ in range(n):
        started.append(spawn_worker(spec, settings, FAST_WORKER))
    for worker in started[-n:]:
        await wait_ready(settings, worker, 120)


class NodeAgent:
    """``byzerllm node start`` (node ``n1``) on the settings' Redis, and the CLI beside it."""

    def __init__(self, settings: BrokerSettings, home: Path) -> None:
        self.home = home
        self.env = control_plane_env(settings, home)
        self.log = home / "node.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "byzerllm.cli.main", "node", "start", "--node_id", "n1"]
                + ["--cpus", "4", "--gpus", "0"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        code = "from byzerllm.cli.main import byzerllm_cli; byzerllm_cli()"
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()

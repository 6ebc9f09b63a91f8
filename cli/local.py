"""The embedded defaults: a local Redis and a local node agent, as daemons.

With no ``--redis_url`` / ``BYZERLLM_REDIS_URL`` and nothing listening on
127.0.0.1:6379, commands that need a cluster start an embedded Redis, and a
node agent on this host when none is alive, so one machine needs nothing else.
``byzerllm local status|stop`` lists and stops them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from byzerllm.broker.connection import connect
from byzerllm.broker.embedded import (
    data_dir,
    embedded_url,
    ensure_redis,
    is_listening,
    stop_embedded,
)
from byzerllm.broker.errors import BrokerUnavailableError
from byzerllm.broker.keys import Keys
from byzerllm.broker.nodes import list_nodes
from byzerllm.broker.settings import BrokerSettings, ensure_home_dir, home_dir


def node_pidfile() -> Path:
    return home_dir() / "node.pid"


def _pid_alive(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    try:  # a child of this process that exited stays a zombie until reaped
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return None
    except ChildProcessError:
        pass  # not our child: kill(0) said enough
    return pid


def start_local_node(settings: BrokerSettings) -> int:
    """A detached ``byzerllm node start`` for this host; its pid."""
    log = open(ensure_home_dir() / "node.log", "ab")
    env = {
        **os.environ,
        "BYZERLLM_REDIS_URL": settings.redis_url,
        "BYZERLLM_PREFIX": settings.prefix,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "byzerllm.cli.main", "node", "start"],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    node_pidfile().write_text(str(proc.pid))
    return proc.pid


async def ensure_cluster(
    redis_url: str | None, need_node: bool = True, default_url: str | None = None
) -> BrokerSettings:
    """Settings for the configured Redis, starting the embedded defaults if none is."""
    configured = redis_url or os.environ.get("BYZERLLM_REDIS_URL")
    settings = BrokerSettings.from_env(ensure_redis(redis_url, default_url))
    if configured or not need_node:
        return settings
    keys = Keys(settings.prefix)
    redis = await connect(settings)
    try:
        if not await list_nodes(redis, keys):
            start_local_node(settings)
            deadline = time.monotonic() + 30
            while not await list_nodes(redis, keys):
                if time.monotonic() > deadline:
                    raise BrokerUnavailableError(
                        f"the local node agent did not start; see {home_dir() / 'node.log'}"
                    )
                await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    return settings


def status() -> dict[str, str]:
    redis_pid = _pid_alive(data_dir() / "redis.pid")
    node_pid = _pid_alive(node_pidfile())
    url = embedded_url()
    parts = urlsplit(url)
    if redis_pid:
        redis_state = f"running (pid {redis_pid}, data {data_dir()})"
    elif is_listening(parts.hostname or "127.0.0.1", parts.port or 6379):
        redis_state = "not ours, but a Redis listens there"
    else:
        redis_state = "stopped"
    node_state = (
        f"running (pid {node_pid}, log {home_dir() / 'node.log'})" if node_pid else "stopped"
    )
    return {"redis": redis_state, "node agent": node_state, "redis_url": url}


def stop() -> list[str]:
    stopped = []
    node_pid = _pid_alive(node_pidfile())
    if node_pid:
        os.kill(node_pid, 15)
        for _ in range(600):
            if _pid_alive(node_pidfile()) is None:
                break
            time.sleep(0.1)
        stopped.append(f"node agent (pid {node_pid})")
    if stop_embedded():
        stopped.append("embedded redis")
    return stopped

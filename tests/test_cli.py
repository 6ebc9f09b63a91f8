"""The CLI as a user runs it: real processes against the test Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def byzerllm(worker_procs, *args: str, entry: str = "byzerllm_cli", timeout: float = 30):
    code = f"from byzerllm.cli.main import {entry}; {entry}()"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=worker_procs.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_stat_prints_the_guide_fields(worker_procs):
    worker_procs.start("echo_stat", concurrency=3)
    worker_procs.start("echo_stat", concurrency=3)
    result = byzerllm(worker_procs, "stat", "--model", "echo_stat")
    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    assert view["total_workers"] == 2
    assert view["idle_workers"] == 2 and view["busy_workers"] == 0
    assert view["load_balance_strategy"] == "lru"
    assert view["worker_max_concurrency"] == 3
    assert view["state"] == [3, 3]
    assert view["total_requests"] == [0, 0]
    assert all(t.endswith("s") for t in view["workers_last_work_time"])
    assert {w["ready"] for w in view["workers"]} == {True}


def test_chat_streams_the_answer(worker_procs):
    worker_procs.start("echo_chat", "prefix=echo: ")
    result = byzerllm(worker_procs, "chat", "echo_chat", "hello from the cli")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "echo: hello from the cli"
    easy = byzerllm(worker_procs, "chat", "echo_chat", "and from easy", entry="easy_byzerllm_cli")
    assert easy.stdout.strip() == "echo: and from easy"
    stat = json.loads(byzerllm(worker_procs, "stat", "--model", "echo_chat").stdout)
    assert stat["total_requests"] == [2]


def test_stat_table_lists_aliases(worker_procs):
    worker_procs.start("alias_a")
    worker_procs.start("alias_b")
    result = byzerllm(worker_procs, "stat")
    assert result.returncode == 0, result.stderr
    assert "alias_a" in result.stdout and "alias_b" in result.stdout


def test_chat_with_unknown_alias_fails_with_its_name(worker_procs):
    result = byzerllm(worker_procs, "chat", "missing_alias", "hi")
    assert result.returncode != 0
    assert "'missing_alias'" in result.stderr


@pytest.mark.parametrize(
    "params, needle",
    [
        (["--infer_params", "novalue"], "expected key=value"),
        (["--pretrained_model_type", "custom/nonexistent"], "no backend for pretrained_model_type"),
    ],
)
def test_worker_bad_input_exits_with_reason(worker_procs, params, needle):
    result = byzerllm(worker_procs, "worker", "--model", "bad", *params)
    assert result.returncode != 0
    assert needle in result.stderr


def test_worker_backend_load_failure_is_reported(worker_procs):
    result = byzerllm(
        worker_procs,
        "worker",
        "--model",
        "broken",
        "--pretrained_model_type",
        "custom/echo",
        "--infer_params",
        "fail_on_start=model file is corrupt",
    )
    assert result.returncode != 0
    assert "model file is corrupt" in result.stderr


def test_secret_params_are_masked_in_redis(worker_procs, sync_redis, settings):
    worker_procs.start("secretive", "saas.api_key=sk-very-secret-123", "reply=ok")
    for key in sync_redis.scan_iter(f"{settings.prefix}:*"):
        kind = sync_redis.type(key)
        if kind == b"hash":
            blob = b"".join(k + v for k, v in sync_redis.hgetall(key).items())
            assert b"sk-very-secret-123" not in blob, key
    spec = sync_redis.hgetall(f"{settings.prefix}:{{secretive}}:spec")
    assert b"******" in spec[b"infer_params"]

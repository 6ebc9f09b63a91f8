"""``byzerllm node start`` with a wrong password says so, without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def guarded_redis():
    server = RedisServer("--requirepass", "right-password").start()
    yield server
    server.stop()


def test_node_start_with_a_wrong_password_is_a_clean_error(guarded_redis, tmp_path):
    url = f"redis://:wrong-password@127.0.0.1:{guarded_redis.port}/0"
    env = {**os.environ, "BYZERLLM_HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "byzerllm.cli.main", "node", "start", "--redis_url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "rejected the credentials" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "wrong-password" not in result.stderr

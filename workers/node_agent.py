"""The node agent: one per host, starting and supervising worker processes.

It is an arq worker on its own queue (``P:node:N:queue``): ``deploy``
enqueues ``start_worker`` jobs there. The agent reports host, CPUs, GPUs and
what its workers use in ``P:node:N``, pins GPUs with CUDA_VISIBLE_DEVICES,
restarts a crashed worker with exponential backoff, and marks the alias
degraded (with the worker's last output as ``last_error``) when a worker keeps
crashing. Workers that exit cleanly (drained by undeploy or a forced
re-deploy) are not restarted. Stopping the agent drains its workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from arq import Worker as ArqWorker
from arq.worker import func

from byzerllm.broker import deployments
from byzerllm.broker.connection import connect
from byzerllm.broker.errors import NodeAgentError
from byzerllm.broker.keys import Keys
from byzerllm.broker.nodes import NodeState, arq_settings, forget_node, report_node
from byzerllm.broker.settings import BrokerSettings, home_dir
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.process import WorkerProcess, spawn_worker

log = logging.getLogger(__name__)

CRASH_LIMIT = 3  # crashes within CRASH_WINDOW that mark an alias degraded
CRASH_WINDOW = 120.0


def detect_gpus() -> int:
    """GPUs nvidia-smi lists; 0 where there is none."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return 0
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


@dataclass
class Child:
    slot: str
    alias: str
    generation: int
    cpus: float
    gpu_ids: list[int]
    process: WorkerProcess
    crashes: list[float] = field(default_factory=list)
    restart_at: float = 0.0


class NodeAgent:
    def __init__(
        self,
        settings: BrokerSettings,
        *,
        cpus: float | None = None,
        gpus: int | None = None,
        node_id: str | None = None,
        worker_args: list[str] | None = None,
    ) -> None:
        self.settings = settings
        self.keys = Keys(settings.prefix)
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}"
        self.cpus = float(cpus if cpus is not None else os.cpu_count() or 1)
        self.gpus = gpus if gpus is not None else detect_gpus()
        self.worker_args = worker_args or []
        self.children: dict[str, Child] = {}
        self.log_dir = home_dir() / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)

    # -- capacity ----------------------------------------------------------------

    def used(self) -> tuple[float, list[int]]:
        cpus = sum(c.cpus for c in self.children.values())
        gpus = sorted(g for c in self.children.values() for g in c.gpu_ids)
        return cpus, gpus

    async def report(self) -> None:
        used_cpus, used_gpus = self.used()
        node = NodeState(
            node_id=self.node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            cpus=self.cpus,
            gpus=self.gpus,
            used_cpus=used_cpus,
            used_gpus=len(used_gpus),
            workers=len(self.children),
            heartbeat=time.time(),
        )
        await report_node(self._redis, self.keys, node)

    # -- jobs ----------------------------------------------------------------------

    async def start_worker(self, ctx: dict[str, Any], alias: str, generation: int) -> str:
        """arq job: start one worker of ``alias``. A failure is recorded on the
        deployment (state ``failed`` with the cause), where ``deploy`` is
        waiting for it, and is not retried."""
        try:
            return await self._start_worker(alias, generation)
        except Exception as exc:
            cause = exc if isinstance(exc, NodeAgentError) else f"{type(exc).__name__}: {exc}"
            message = f"node {self.node_id} could not start a worker of {alias!r}: {cause}"
            log.error("%s", message)
            if await deployments.info(self._redis, self.keys, alias):
                await deployments.set_state(
                    self._redis, self.keys, alias, deployments.FAILED, message
                )
            raise NodeAgentError(message) from None

    async def _start_worker(self, alias: str, generation: int) -> str:
        spec = await deployments.load(self._redis, self.keys, alias)
        if spec is None:
            raise NodeAgentError(f"no deployment {alias!r} to start a worker for")
        gpu_ids = self._take_gpus(spec)
        slot = f"{alias}#{uuid.uuid4().hex[:8]}"
        child = Child(
            slot, alias, generation, spec.cpus_per_worker, gpu_ids, self._spawn(spec, gpu_ids, slot)
        )
        self.children[slot] = child
        await self.report()
        log.info("started worker %s (pid %d, gpus %s)", slot, child.process.pid, gpu_ids)
        return slot

    def _take_gpus(self, spec: DeploySpec) -> list[int]:
        want = int(spec.gpus_per_worker + 0.999)
        used_cpus, used = self.used()
        free = [g for g in range(self.gpus) if g not in used]
        if len(free) < want or self.cpus - used_cpus < spec.cpus_per_worker:
            raise NodeAgentError(
                f"node {self.node_id} cannot fit a worker of {spec.alias!r}: needs "
                f"{spec.cpus_per_worker:g} CPUs / {want} GPUs, has "
                f"{self.cpus - used_cpus:g} CPUs / {len(free)} GPUs free"
            )
        return free[:want]

    def _spawn(self, spec: DeploySpec, gpu_ids: list[int], slot: str) -> WorkerProcess:
        env_gpus = ",".join(str(g) for g in gpu_ids)
        log_path = self.log_dir / f"{slot.replace('#', '-').replace('/', '_')}.log"
        return spawn_worker(
            spec,
            self.settings,
            self.worker_args,
            log_path=log_path,
            extra_env={"CUDA_VISIBLE_DEVICES": env_gpus},
            from_redis=True,
        )

    # -- supervision ------------------------------------------------------------------

    async def supervise_once(self) -> None:
        now = time.time()
        for slot, child in list(self.children.items()):
            code = child.process.proc.poll()
            if code is None:
                continue
            info = await deployments.info(self._redis, self.keys, child.alias)
            current = (
                info is not None
                and info.get("state") != deployments.UNDEPLOYING
                and int(info.get("generation", "0")) == child.generation
            )
            if code == 0 or not current:
                log.info("worker %s left (exit %s)", slot, code)
                del self.children[slot]
                continue
            await self._restart(child, code, now)
        await self.report()

    async def _restart(self, child: Child, code: int, now: float) -> None:
        if child.restart_at == 0.0:  # first sight of this crash
            child.crashes = [t for t in child.crashes if now - t < CRASH_WINDOW] + [now]
            delay = min(30.0, 2.0 ** (len(child.crashes) - 1))
            child.restart_at = now + delay
            error = child.process.log_tail()
            log.warning("worker %s crashed (exit %s); restart in %.0fs", child.slot, code, delay)
            if len(child.crashes) >= CRASH_LIMIT:
                await deployments.set_state(
                    self._redis,
                    self.keys,
                    child.alias,
                    deployments.DEGRADED,
                    f"worker on {self.node_id} crashed {len(child.crashes)} times; last "
                    f"output: {error}",
                )
            else:
                await deployments.set_state(
                    self._redis, self.keys, child.alias, None, f"exit {code}: {error}"
                )
        if now >= child.restart_at:
            spec = await deployments.load(self._redis, self.keys, child.alias)
            if spec is not None:
                child.process = self._spawn(spec, child.gpu_ids, child.slot)
                child.restart_at = 0.0

    async def _supervise_loop(self) -> None:
        while True:
            try:
                await self.supervise_once()
            except Exception as exc:  # keep supervising through Redis blips
                log.warning("supervision round failed: %s", exc)
            await asyncio.sleep(0.5)

    # -- lifecycle --------------------------------------------------------------------

    async def _startup(self, ctx: dict[str, Any]) -> None:
        self._redis = await connect(self.settings)
        await self.report()
        self._supervisor = asyncio.create_task(self._supervise_loop())

    async def _shutdown(self, ctx: dict[str, Any]) -> None:
        self._supervisor.cancel()
        for child in self.children.values():
            child.process.proc.terminate()
        for child in self.children.values():
            await asyncio.to_thread(child.process.stop, 40.0)
        await forget_node(self._redis, self.keys, self.node_id)
        await self._redis.aclose()

    def arq_worker(self) -> ArqWorker:
        return ArqWorker(
            functions=[func(self.start_worker, name="start_worker")],
            redis_settings=arq_settings(self.settings),
            queue_name=self.keys.node_queue(self.node_id),
            on_startup=self._startup,
            on_shutdown=self._shutdown,
            handle_signals=True,
            max_jobs=16,
            keep_result=300,
            poll_delay=0.2,
        )

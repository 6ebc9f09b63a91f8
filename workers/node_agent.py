"""The node agent: one per host, starting and supervising worker processes.

It is an arq worker on its own queue (``P:node:{N}:queue``): ``deploy``
enqueues ``start_worker`` jobs there. The agent reports host, CPUs, GPUs and
what its workers use in ``P:node:N``, pins GPUs with CUDA_VISIBLE_DEVICES,
restarts a crashed worker with exponential backoff, and marks the alias
degraded (with the worker's last output as ``last_error``) when a worker keeps
crashing. Workers that exit cleanly (drained by undeploy or a forced
re-deploy) are not restarted. Stopping the agent drains its workers.

The agent outlives Redis outages (a restart, a failover): it keeps
supervising its workers, says once that Redis is gone and once that it is
back, and reports again. An agent started again under the same node id
adopts the workers its previous life left running (see ``node_ledger``).
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
from pathlib import Path
from typing import TYPE_CHECKING, Any

from byzerllm.broker import deployments, state
from byzerllm.broker.connection import OutageLog, connect, redis_errors
from byzerllm.broker.errors import BrokerUnavailableError, NodeAgentError
from byzerllm.broker.keys import Keys
from byzerllm.broker.nodes import NodeState, forget_node, job_worker, report_node
from byzerllm.broker.settings import BrokerSettings, ensure_home_dir
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.node_ledger import (
    AdoptedProcess,
    LedgerEntry,
    adoptable,
    process_start,
    read_ledger,
    remove_ledger,
    write_ledger,
)
from byzerllm.workers.process import WorkerProcess, spawn_worker

if TYPE_CHECKING:
    from arq import Worker as ArqWorker

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
    """One worker of this node: started by this agent (``process``) or left
    running by its previous life and adopted (``adopted``)."""

    slot: str
    alias: str
    generation: int
    cpus: float
    gpu_ids: list[int]
    log_path: Path
    process: WorkerProcess | None = None
    adopted: AdoptedProcess | None = None
    started: str = ""  # the process' start time, recorded in the ledger
    crashes: list[float] = field(default_factory=list)
    restart_at: float = 0.0

    @property
    def pid(self) -> int:
        if self.process is not None:
            return self.process.pid
        return self.adopted.pid if self.adopted is not None else 0

    def poll(self) -> int | None:
        if self.process is not None:
            return self.process.proc.poll()
        return self.adopted.poll() if self.adopted is not None else -1

    def terminate(self) -> None:
        if self.process is not None and self.process.proc.poll() is None:
            self.process.proc.terminate()
        elif self.adopted is not None:
            self.adopted.terminate()

    def stop(self, timeout: float) -> None:
        if self.process is not None:
            self.process.stop(timeout)
        elif self.adopted is not None:
            self.adopted.stop(timeout)

    def log_tail(self, limit: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace").strip()[-limit:]
        except OSError:
            return ""

    def run(self, process: WorkerProcess) -> None:
        self.process, self.adopted = process, None
        self.started = process_start(process.pid) or ""

    def entry(self) -> LedgerEntry:
        return LedgerEntry(
            slot=self.slot,
            alias=self.alias,
            generation=self.generation,
            cpus=self.cpus,
            gpu_ids=list(self.gpu_ids),
            pid=self.pid,
            started=self.started,
            log_path=str(self.log_path),
            crashes=list(self.crashes),
        )


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
        self.log_dir = ensure_home_dir("logs")
        self.outage = OutageLog(log, f"node agent {self.node_id}: Redis")
        self._recorded: list[LedgerEntry] | None = None

    # -- capacity ----------------------------------------------------------------

    def used(self) -> tuple[float, list[int]]:
        cpus = sum(c.cpus for c in self.children.values())
        gpus = sorted(g for c in self.children.values() for g in c.gpu_ids)
        return cpus, gpus

    async def report(self) -> None:
        self._record()
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

    def _record(self) -> None:
        """Write the ledger when the set of workers changed (even with Redis down)."""
        entries = [child.entry() for child in self.children.values()]
        if entries != self._recorded:
            write_ledger(self.node_id, entries)
            self._recorded = entries

    def _adopt(self) -> None:
        """Take over the workers the previous agent of this node id left.

        One still running as that worker is supervised as ours; one that is
        gone (or whose pid now belongs to another process, which is never
        signalled) counts as crashed, so it is started again if its deployment
        still wants it."""
        for entry in read_ledger(self.node_id):
            handle = adoptable(entry)
            child = Child(
                entry.slot,
                entry.alias,
                entry.generation,
                entry.cpus,
                list(entry.gpu_ids),
                Path(entry.log_path),
                adopted=handle or AdoptedProcess(entry.pid, None),
                started=entry.started if handle else "",
                crashes=list(entry.crashes),
            )
            self.children[entry.slot] = child
            if handle:
                log.info(
                    "adopted worker %s (pid %d) of this node's last agent", child.slot, child.pid
                )
            else:
                log.info("worker %s of this node's last agent is gone", child.slot)

    # -- jobs ----------------------------------------------------------------------

    async def start_worker(self, ctx: dict[str, Any], alias: str, generation: int) -> str:
        """arq job: start one worker of ``alias``. A failure is recorded on the
        deployment (state ``failed`` with the cause), where ``deploy`` is
        waiting for it, and is not retried."""
        if not isinstance(alias, str) or type(generation) is not int:
            raise NodeAgentError(
                f"malformed start_worker job (alias {alias!r}, generation {generation!r}): "
                "ignored; jobs come from `byzerllm deploy`"
            )
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
        log_path = self.log_dir / f"{slot.replace('#', '-').replace('/', '_')}.log"
        child = Child(slot, alias, generation, spec.cpus_per_worker, gpu_ids, log_path)
        child.run(self._spawn(spec, gpu_ids, log_path))
        self.children[slot] = child
        await self.report()
        log.info("started worker %s (pid %d, gpus %s)", slot, child.pid, gpu_ids)
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

    def _spawn(self, spec: DeploySpec, gpu_ids: list[int], log_path: Path) -> WorkerProcess:
        env_gpus = ",".join(str(g) for g in gpu_ids)
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
            code = child.poll()
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
        await self._clear_recovered()
        await self.report()

    async def _clear_recovered(self) -> None:
        """An alias marked degraded (or carrying a crash's last error) whose workers
        all serve again is ready again: the mark is for a problem, not a history."""
        for alias in {c.alias for c in self.children.values() if c.crashes}:
            info = await deployments.info(self._redis, self.keys, alias)
            if not info or not (
                info.get("state") == deployments.DEGRADED or info.get("last_error")
            ):
                continue
            generation = int(info.get("generation", "0"))
            wanted = int(info.get("num_workers", "1"))
            if await state.ready_workers(self._redis, self.keys, alias, generation) >= wanted:
                await deployments.set_state(self._redis, self.keys, alias, deployments.READY, "")
                log.info("workers of %s serve again: state ready", alias)

    async def _restart(self, child: Child, code: int, now: float) -> None:
        if child.restart_at == 0.0:  # first sight of this crash
            child.crashes = [t for t in child.crashes if now - t < CRASH_WINDOW] + [now]
            delay = min(30.0, 2.0 ** (len(child.crashes) - 1))
            child.restart_at = now + delay
            error = child.log_tail()
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
                child.run(self._spawn(spec, child.gpu_ids, child.log_path))
                child.restart_at = 0.0

    async def _supervise_loop(self) -> None:
        while True:
            try:
                with redis_errors(self.settings):
                    await self.supervise_once()
            except BrokerUnavailableError as exc:  # Redis restarting: keep supervising
                self.outage.failed(exc)
            except Exception as exc:
                log.warning("supervision round failed: %s", exc)
            else:
                self.outage.recovered()
            await asyncio.sleep(0.5)

    # -- lifecycle --------------------------------------------------------------------

    async def _startup(self, ctx: dict[str, Any]) -> None:
        self._redis = await connect(self.settings)
        self._adopt()
        await self.report()
        self._supervisor = asyncio.create_task(self._supervise_loop())

    async def _shutdown(self, ctx: dict[str, Any]) -> None:
        supervisor = getattr(self, "_supervisor", None)  # None when startup failed
        if supervisor is not None:
            supervisor.cancel()
        for child in self.children.values():
            child.terminate()
        for child in self.children.values():
            await asyncio.to_thread(child.stop, 40.0)
        self.children.clear()
        remove_ledger(self.node_id)
        try:
            with redis_errors(self.settings):
                await forget_node(self._redis, self.keys, self.node_id)
        except BrokerUnavailableError as exc:
            log.warning("node %s stays listed until its hash expires: %s", self.node_id, exc)
        await self._redis.aclose()

    def arq_worker(self) -> ArqWorker:
        return job_worker(
            self.settings,
            self.keys,
            self.node_id,
            start_worker=self.start_worker,
            on_startup=self._startup,
            on_shutdown=self._shutdown,
            outage=self.outage,
        )

"""What a node agent's workers are, kept on local disk, so a restarted agent
finds the workers of its previous life.

A SIGKILLed agent leaves its workers running (they are separate processes,
reparented to init). An agent started again with the same node id reads the
ledger, checks that each recorded pid is still the same process (its start
time) and still a byzerllm worker of the recorded alias (its command line),
and adopts it: supervises it, counts its CPUs and GPUs, and stops it when
the agent stops. Nothing here is read from Redis: a pid there could be
written by anyone with write access, and this ledger decides which processes
the agent may signal.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from byzerllm.broker.settings import ensure_home_dir, home_dir


@dataclass
class LedgerEntry:
    slot: str
    alias: str
    generation: int
    cpus: float
    gpu_ids: list[int]
    pid: int
    started: str  # the process' start time as the kernel counts it (pid reuse check)
    log_path: str
    crashes: list[float] = field(default_factory=list)


def ledger_path(node_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node_id)
    return home_dir() / "nodes" / f"{safe}.json"


def read_ledger(node_id: str) -> list[LedgerEntry]:
    """The workers the last agent of ``node_id`` on this host recorded; [] if none."""
    try:
        data = json.loads(ledger_path(node_id).read_text("utf-8"))
        return [LedgerEntry(**entry) for entry in data["workers"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_ledger(node_id: str, entries: list[LedgerEntry]) -> None:
    """Replace the ledger at once (write and rename), readable by this user only."""
    ensure_home_dir("nodes")
    path = ledger_path(node_id)
    temporary = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"agent_pid": os.getpid(), "workers": [asdict(e) for e in entries]}, handle)
    os.replace(temporary, path)


def remove_ledger(node_id: str) -> None:
    ledger_path(node_id).unlink(missing_ok=True)


def process_start(pid: int) -> str | None:
    """The start time of a live (not zombie) process, None if there is none.

    Read from /proc (Linux); elsewhere from psutil when installed. Where neither
    is available no process can be recognized, so none is ever adopted.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if Path("/proc/self/stat").exists():
            return None
        return _psutil_start(pid)
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (comm)"
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _psutil_start(pid: int) -> str | None:
    try:
        import psutil  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return str(process.create_time())
    except psutil.Error:
        return None


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        return [part.decode(errors="replace") for part in raw.split(b"\0") if part]
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return []
    try:
        return list(psutil.Process(pid).cmdline())
    except psutil.Error:
        return []


def is_worker_of(pid: int, alias: str) -> bool:
    """Whether ``pid`` runs ``python -m byzerllm.workers --model <alias>``."""
    argv = command_line(pid)
    for i, part in enumerate(argv[:-1]):
        if part == "-m" and argv[i + 1] == "byzerllm.workers":
            rest = argv[i + 2 :]
            return any(rest[j : j + 2] == ["--model", alias] for j in range(len(rest) - 1))
    return False


class AdoptedProcess:
    """A worker of the previous agent: not our child, so watched by pid and
    start time (its exit status is lost with its parent)."""

    def __init__(self, pid: int, started: str | None) -> None:
        """``started`` None: the process was already gone (or not ours) when found."""
        self.pid = pid
        self.started = started

    def poll(self) -> int | None:
        """None while it runs; -1 once it is gone (its exit status is unknown)."""
        if self.started is None or process_start(self.pid) != self.started:
            return -1
        return None

    def terminate(self) -> None:
        self.signal(signal.SIGTERM)

    def signal(self, signum: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, signum)
            except OSError:
                pass

    def stop(self, timeout: float) -> int:
        """SIGTERM (the worker drains), then SIGKILL after ``timeout`` seconds."""
        self.terminate()
        if not self._gone_within(timeout):
            self.signal(signal.SIGKILL)
            self._gone_within(10.0)
        return -1

    def _gone_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def adoptable(entry: LedgerEntry) -> AdoptedProcess | None:
    """The recorded worker if it still runs as that worker; None otherwise."""
    started = process_start(entry.pid)
    if started is None or started != entry.started or not is_worker_of(entry.pid, entry.alias):
        return None
    return AdoptedProcess(entry.pid, started)

"""CPU per call of each process, one call at a time and 32 at once, direct and via the broker.

One call at a time, the processes on a request's path mostly run one after
the other, so its latency is close to the sum of their CPU: the SDK's
blocking ``OpenAI`` straight to the stub has two (caller, stub), ``ByzerLLM``
through the broker four (caller, Redis, a ``saas/openai`` worker, stub).
This prints, for each, the CPU per call of every process (``/proc``; the
caller's with ``time.process_time``, its background loop thread included),
one call at a time and with 32 threads calling, and the ratios between the
two clients measured in the same run.

    python -m benchmarks.sequential_cpu [--quick]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

from openai import OpenAI

from benchmarks.harness import cpu_seconds, workers
from benchmarks.overhead import (
    MESSAGES,
    SDK_MESSAGES,
    start_stub,
    stub_spec,
    sync_throughput,
)
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.sync import ByzerLLM
from tests.redis_server import RedisServer, free_port

PROCESSES = ("caller", "worker", "redis", "stub")


@dataclass
class CpuPerCall:
    """Microseconds of CPU per call, by process."""

    by_process: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.by_process.values())


def measure(call: Callable[[], object], n: int, pids: dict[str, int], threads: int) -> CpuPerCall:
    """CPU per call of each process over ``n`` calls (``threads`` at once; 1: one by one)."""
    before = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
    own = time.process_time()
    if threads == 1:
        for _ in range(n):
            call()
    else:
        sync_throughput(call, n, threads)
    own = time.process_time() - own
    after = {name: cpu_seconds(pid) or 0.0 for name, pid in pids.items()}
    spent = {"caller": own, **{name: after[name] - before[name] for name in pids}}
    return CpuPerCall({name: spent.get(name, 0.0) / n * 1e6 for name in PROCESSES})


def row(name: str, cpu: CpuPerCall) -> str:
    cells = " | ".join(f"{cpu.by_process[p]:.0f}" for p in PROCESSES)
    return f"{name} | {cells} | {cpu.total:.0f}"


def compare(
    settings: BrokerSettings, base_url: str, pids: dict[str, int], args: argparse.Namespace
) -> None:
    """Both clients, round after round, one at a time and then 32 at once."""
    n_seq, n_load = (500, 2000) if args.quick else (2000, 6000)
    direct = OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    llm = ByzerLLM(settings=settings)
    llm.setup_default_model_name(stub_spec(base_url).alias)

    def direct_call() -> None:
        direct.chat.completions.create(model="gpt-4o", messages=SDK_MESSAGES)

    def broker_call() -> None:
        llm.chat_oai(MESSAGES)

    for call in (direct_call, broker_call):  # warm up
        measure(call, 200, pids, 1)
    print("CPU per call, µs: " + " | ".join(PROCESSES) + " | all")
    for i in range(args.rounds):
        for threads, n in ((1, n_seq), (32, n_load)):
            d = measure(direct_call, n, pids, threads)
            b = measure(broker_call, n, pids, threads)
            how = "one at a time" if threads == 1 else f"{threads} threads"
            print(row(f"round {i + 1}, {how}, OpenAI direct", d))
            print(row(f"round {i + 1}, {how}, ByzerLLM", b))
            print(f"  ByzerLLM / direct, all processes: {b.total / d.total:.2f}x")
    llm.close()  # before Redis stops, or its reader reports the outage
    direct.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, noisier figures")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    port = free_port()
    stub = start_stub(port)
    server = RedisServer().start()
    assert server.proc is not None
    settings = BrokerSettings(redis_url=server.url, prefix="bench")
    try:
        with workers(settings, stub_spec(f"http://127.0.0.1:{port}/v1"), 1) as [worker]:
            pids = {"worker": worker.pid, "redis": server.proc.pid, "stub": stub.pid}
            compare(settings, f"http://127.0.0.1:{port}/v1", pids, args)
    finally:
        server.stop()
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()

"""What the broker adds to a call, against calling the same server directly.

A fast OpenAI-compatible stub runs on loopback. The same requests go (a)
straight to it with the openai SDK and (b) through byzerllm: client -> Redis
-> a ``saas/openai`` worker (same SDK) -> stub -> back. Printed: p50/p99 of
sequential calls, throughput at 32 concurrent calls, first streamed chunk,
and echo-backend throughput through one alias served by 2 worker processes;
for the async client (``AsyncByzerLLM`` against ``AsyncOpenAI``) and for the
sync facade the guide's users call (``ByzerLLM`` from plain threads, against
the SDK's ``OpenAI``). Sequential calls and first chunks alternate between
the direct client and ours in blocks of 50 calls, so that a slow minute on a
shared machine weighs on both alike; throughput runs one after the other.

    python -m benchmarks.overhead [--quick]
    python -m benchmarks.overhead --echo-only 3     # the echo measure alone, 3 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from openai.types.chat import ChatCompletionMessageParam
from rich.console import Console
from rich.table import Table

from benchmarks.harness import (
    CollectorTime,
    Latencies,
    cpu_seconds,
    private_redis,
    throughput,
    workers,
)
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client.llm import AsyncByzerLLM
from tests.redis_server import free_port

PROMPT = "say something short and useful please"
MESSAGES = [{"role": "user", "content": PROMPT}]  # byzerllm's clients
SDK_MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
console = Console(width=150)  # the table stays one line per measure


def start_stub(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.openai_stub", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if "listening" not in line:
        raise RuntimeError(f"stub did not start: {line}")
    return proc


def stub_spec(base_url: str, alias: str = "bench_openai", api_key: str = "sk-bench") -> DeploySpec:
    """A ``saas/openai`` deployment of the stub's ``gpt-4o``, as every benchmark serves it."""
    return DeploySpec(
        alias=alias,
        pretrained_model_type="saas/openai",
        worker_concurrency=256,
        infer_params={
            "saas.base_url": base_url,
            "saas.api_key": api_key,
            "saas.model": "gpt-4o",
            "saas.max_retries": 0,
        },
    )


# Sequential calls run in blocks of this many, the clients taking turns (ABBA):
# within a block a client runs as it would alone (alternating call by call keeps
# every process colder and slows both by 0.3-0.7 ms here), while a slow minute
# of this shared machine still weighs on all of them.
BLOCK = 50


def block_order(n: int, clients: int) -> list[tuple[int, int]]:
    """(client, calls) turns for ``n`` calls each, in blocks, alternating who leads."""
    turns: list[tuple[int, int]] = []
    for i, start in enumerate(range(0, n, BLOCK)):
        size = min(BLOCK, n - start)
        order = range(clients) if i % 2 == 0 else reversed(range(clients))
        turns.extend((k, size) for k in order)
    return turns


async def alternating(calls: list[Callable[..., Awaitable[object]]], n: int) -> list[Latencies]:
    """Latencies of ``n`` sequential calls of each, in alternating blocks."""
    samples: list[list[float]] = [[] for _ in calls]
    for k, size in block_order(n, len(calls)):
        for _ in range(size):
            start = time.perf_counter()
            measured = await calls[k]()
            elapsed = measured if isinstance(measured, float) else time.perf_counter() - start
            samples[k].append(elapsed)
    return [Latencies(s) for s in samples]


def alternating_sync(calls: list[Callable[[], float | None]], n: int) -> list[Latencies]:
    """:func:`alternating` for blocking calls."""
    samples: list[list[float]] = [[] for _ in calls]
    for k, size in block_order(n, len(calls)):
        for _ in range(size):
            start = time.perf_counter()
            measured = calls[k]()
            samples[k].append(measured if measured is not None else time.perf_counter() - start)
    return [Latencies(s) for s in samples]


@dataclass
class AsyncClient:
    """One client under test: a whole-answer call and a streamed call that returns
    the seconds to its first text."""

    call: Callable[[int], Awaitable[object]]
    first: Callable[[], Awaitable[float]]
    close: Callable[[], Awaitable[object]]


def openai_client(base_url: str, api_key: str = "sk-bench") -> AsyncClient:
    """``AsyncOpenAI`` at ``base_url``: the stub itself, or a gateway in front of it."""
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0)

    async def call(_: int = 0) -> None:
        await client.chat.completions.create(model="gpt-4o", messages=SDK_MESSAGES)

    async def first() -> float:
        start = time.perf_counter()
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=SDK_MESSAGES, stream=True
        )
        seen = 0.0
        async for chunk in stream:
            if not seen and chunk.choices and chunk.choices[0].delta.content:
                seen = time.perf_counter() - start
        return seen

    return AsyncClient(call, first, client.close)


def byzerllm_client(settings: BrokerSettings, alias: str) -> AsyncClient:
    """``AsyncByzerLLM`` through the broker to ``alias``' workers."""
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)

    async def call(_: int = 0) -> None:
        await llm.chat_oai(MESSAGES)

    async def first() -> float:
        start = time.perf_counter()
        seen = 0.0
        async for text, _meta in llm.stream_chat_oai(MESSAGES, delta_mode=True):
            if not seen and text:
                seen = time.perf_counter() - start
        return seen

    return AsyncClient(call, first, llm.aclose)


async def measure_clients(
    clients: dict[str, AsyncClient], n_seq: int, n_tp: int
) -> dict[str, dict[str, Any]]:
    """Sequential latency and first chunks of every client in alternating blocks (the
    same minutes weigh on all of them), then each one's throughput at 32 in flight."""
    for client in clients.values():
        await throughput(client.call, 200, 8)  # warm up connections and code paths
    seq = await alternating([c.call for c in clients.values()], n_seq)
    first = await alternating([c.first for c in clients.values()], n_seq // 2)
    results = {}
    for i, (name, client) in enumerate(clients.items()):
        tp = await throughput(client.call, n_tp, 32)
        results[name] = {"seq": seq[i], "first": first[i], "tp": tp}
    for client in clients.values():
        await client.close()
    return results


async def measure_async(
    base_url: str, settings: BrokerSettings, alias: str, n_seq: int, n_tp: int
) -> dict[str, dict[str, Any]]:
    """``AsyncOpenAI`` straight to the stub against ``AsyncByzerLLM`` through the broker."""
    clients = {
        "direct async": openai_client(base_url),
        "async client": byzerllm_client(settings, alias),
    }
    return await measure_clients(clients, n_seq, n_tp)


def sync_throughput(call: Callable[[], object], n: int, threads: int) -> float:
    """Calls per second from ``threads`` threads calling until ``n`` are done."""
    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        for future in [pool.submit(call) for _ in range(n)]:
            future.result()
        return n / (time.perf_counter() - start)


def measure_sync(
    base_url: str, settings: BrokerSettings, alias: str, n_seq: int, n_tp: int
) -> dict[str, dict[str, Any]]:
    """The SDK's ``OpenAI`` straight to the stub against ``byzerllm.ByzerLLM``, as the
    guide's users call it: from plain threads."""
    from openai import OpenAI

    from byzerllm.client.sync import ByzerLLM

    client = OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    llm = ByzerLLM(settings=settings)
    llm.setup_default_model_name(alias)

    def direct_call() -> None:
        client.chat.completions.create(model="gpt-4o", messages=SDK_MESSAGES)

    def direct_first() -> float:
        start = time.perf_counter()
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=SDK_MESSAGES,
            stream=True,
        )
        first = 0.0
        for chunk in stream:
            if not first and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        return first

    def broker_call() -> None:
        llm.chat_oai(MESSAGES)

    def broker_first() -> float:
        start = time.perf_counter()
        first = 0.0
        for text, _meta in llm.stream_chat_oai(MESSAGES, delta_mode=True):
            if not first and text:
                first = time.perf_counter() - start
        return first

    sync_throughput(direct_call, 200, 8)
    sync_throughput(broker_call, 200, 8)
    seq = alternating_sync([direct_call, broker_call], n_seq)
    first = alternating_sync([direct_first, broker_first], n_seq // 2)
    results = {
        "direct sync": {
            "seq": seq[0],
            "first": first[0],
            "tp": sync_throughput(direct_call, n_tp, 32),
        },
        "ByzerLLM (sync)": {
            "seq": seq[1],
            "first": first[1],
            "tp": sync_throughput(broker_call, n_tp, 32),
        },
    }
    client.close()
    llm.close()  # before the benchmark's Redis stops, or its reader reports the outage
    return results


@dataclass
class EchoResult:
    """Echo throughput, and the CPU each process spent per request."""

    rps: float
    client_us: float
    gc_us: float  # of the client's: in the cyclic garbage collector
    workers_us: list[float]


async def measure_echo(
    settings: BrokerSettings, alias: str, n: int, worker_pids: list[int]
) -> EchoResult:
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)

    async def call(i: int) -> None:
        [r] = await llm.chat_oai(f"q{i}")
        assert r.output == f"q{i}"

    await throughput(call, 1000, 256)
    before = [cpu_seconds(pid) or 0.0 for pid in worker_pids]
    cpu = time.process_time()
    with CollectorTime() as collector:
        rps = await throughput(call, n, 512)
    cpu = time.process_time() - cpu
    after = [cpu_seconds(pid) or 0.0 for pid in worker_pids]
    await llm.aclose()
    return EchoResult(
        rps,
        cpu / n * 1e6,
        collector.seconds / n * 1e6,
        [(b - a) / n * 1e6 for a, b in zip(before, after, strict=True)],
    )


def run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def report(results: dict[str, dict[str, Any]], echo: EchoResult) -> None:
    """Each byzerllm client against the direct SDK client of its kind (async, sync)."""
    table = Table(title="byzerllm broker overhead (same stub, same openai SDK)")
    pairs = [("async client", "direct async"), ("ByzerLLM (sync)", "direct sync")]
    table.add_column("measure")
    for name in results:
        table.add_column(name)
    for name, _ in pairs:
        table.add_column(f"{name} vs direct")
    table.add_column("target")

    def row(label: str, cell: Callable[[dict[str, Any]], str], vs: Callable[..., str], target: str):
        compared = [vs(results[ours], results[theirs]) for ours, theirs in pairs]
        table.add_row(label, *(cell(r) for r in results.values()), *compared, target)

    row(
        "p50 latency, sequential (ms)",
        lambda r: f"{r['seq'].p50:.2f}",
        lambda o, d: f"{o['seq'].p50 - d['seq'].p50:+.2f} ms",
        "added < 0.5 ms",
    )
    row(
        "p99 latency, sequential (ms)",
        lambda r: f"{r['seq'].p99:.2f}",
        lambda o, d: f"{o['seq'].p99 - d['seq'].p99:+.2f} ms",
        "",
    )
    row(
        "throughput, 32 in flight (req/s)",
        lambda r: f"{r['tp']:.0f}",
        lambda o, d: f"{o['tp'] / d['tp']:.2f}x",
        ">= 1.0x",
    )
    row(
        "first streamed chunk, p50 (ms)",
        lambda r: f"{r['first'].p50:.2f}",
        lambda o, d: f"{o['first'].p50 - d['first'].p50:+.2f} ms",
        "added < 1 ms",
    )
    console.print(table)
    report_echo(echo)


def report_echo(echo: EchoResult) -> None:
    workers_us = " + ".join(f"{us:.0f}" for us in echo.workers_us)
    console.print(
        f"echo backend, 1 alias, 2 worker processes: {echo.rps:.0f} req/s; CPU per request: "
        f"client {echo.client_us:.0f} µs (cyclic garbage collector {echo.gc_us:.0f} µs), "
        f"workers {workers_us} µs"
    )


def echo_only(settings: BrokerSettings, n: int, rounds: int) -> list[EchoResult]:
    """The echo measure alone, ``rounds`` times on the same workers."""
    echo = DeploySpec(
        alias="bench_echo", pretrained_model_type="custom/echo", worker_concurrency=512
    )
    with workers(settings, echo, 2) as procs:
        pids = [p.pid for p in procs]
        return [run(measure_echo(settings, echo.alias, n, pids)) for _ in range(rounds)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, noisier figures")
    parser.add_argument(
        "--echo-only", type=int, metavar="ROUNDS", help="only the echo measure, ROUNDS times"
    )
    args = parser.parse_args(argv)
    n_seq, n_tp, n_echo = (300, 2000, 10000) if args.quick else (1000, 6000, 30000)
    if args.echo_only:
        with private_redis() as settings:
            for result in echo_only(settings, n_echo, args.echo_only):
                report_echo(result)
        return
    port = free_port()
    stub = start_stub(port)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        with private_redis() as settings:
            console.print(f"stub at {base_url}, Redis at {settings.redis_url}")
            spec = stub_spec(base_url)
            with workers(settings, spec, 1):
                by_kind = run(measure_async(base_url, settings, spec.alias, n_seq, n_tp))
                by_kind.update(measure_sync(base_url, settings, spec.alias, n_seq, n_tp))
            order = ("direct async", "direct sync", "async client", "ByzerLLM (sync)")
            results = {name: by_kind[name] for name in order}
            [echo_result] = echo_only(settings, n_echo, 1)
        report(results, echo_result)
    finally:
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()

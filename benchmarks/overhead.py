"""What the broker adds to a call, against calling the same server directly.

A fast OpenAI-compatible stub runs on loopback. The same requests go (a)
straight to it with the openai SDK and (b) through byzerllm: client -> Redis
-> a ``saas/openai`` worker (same SDK) -> stub -> back. Printed: p50/p99 of
sequential calls, throughput at 32 concurrent calls, first streamed chunk,
and echo-backend throughput through one alias served by 2 worker processes.

    python -m benchmarks.overhead [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.harness import Latencies, private_redis, sequential, throughput, workers
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client.llm import AsyncByzerLLM
from tests.redis_server import free_port

MESSAGES = [{"role": "user", "content": "say something short and useful please"}]
console = Console()


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


async def measure_direct(base_url: str, n_seq: int, n_tp: int) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)

    async def call(_: int = 0) -> None:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]

    async def first_chunk() -> float:
        start = time.perf_counter()
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        first = 0.0
        async for chunk in stream:
            if not first and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        return first

    await throughput(call, 200, 8)  # warm up connections and code paths
    result = {
        "seq": await sequential(call, n_seq),
        "tp": await throughput(call, n_tp, 32),
        "first": await sequential(first_chunk, n_seq // 2),
    }
    await client.close()
    return result


async def measure_broker(
    settings: BrokerSettings, alias: str, n_seq: int, n_tp: int
) -> dict[str, Any]:
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)

    async def call(_: int = 0) -> None:
        await llm.chat_oai(MESSAGES)

    async def first_chunk() -> float:
        start = time.perf_counter()
        first = 0.0
        async for text, _meta in llm.stream_chat_oai(MESSAGES, delta_mode=True):
            if not first and text:
                first = time.perf_counter() - start
        return first

    await throughput(call, 200, 8)
    result = {
        "seq": await sequential(call, n_seq),
        "tp": await throughput(call, n_tp, 32),
        "first": await sequential(first_chunk, n_seq // 2),
    }
    await llm.aclose()
    return result


async def measure_echo(settings: BrokerSettings, alias: str, n: int) -> float:
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)

    async def call(i: int) -> None:
        [r] = await llm.chat_oai(f"q{i}")
        assert r.output == f"q{i}"

    await throughput(call, 1000, 256)
    rps = await throughput(call, n, 512)
    await llm.aclose()
    return rps


def run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def report(direct: dict[str, Any], broker: dict[str, Any], echo_rps: float) -> None:
    d_seq: Latencies = direct["seq"]
    b_seq: Latencies = broker["seq"]
    table = Table(title="byzerllm broker overhead (same stub, same openai SDK)")
    for col in ("measure", "direct", "via broker", "ratio / added", "target"):
        table.add_column(col)
    added = b_seq.p50 - d_seq.p50
    table.add_row(
        "p50 latency, sequential (ms)",
        f"{d_seq.p50:.2f}",
        f"{b_seq.p50:.2f}",
        f"+{added:.2f} ms",
        "added < 1 ms",
    )
    table.add_row(
        "p99 latency, sequential (ms)",
        f"{d_seq.p99:.2f}",
        f"{b_seq.p99:.2f}",
        f"+{b_seq.p99 - d_seq.p99:.2f} ms",
        "",
    )
    table.add_row(
        "throughput, 32 concurrent (req/s)",
        f"{direct['tp']:.0f}",
        f"{broker['tp']:.0f}",
        f"{broker['tp'] / direct['tp']:.2f}x",
        ">= 0.9x",
    )
    table.add_row(
        "first streamed chunk, p50 (ms)",
        f"{direct['first'].p50:.2f}",
        f"{broker['first'].p50:.2f}",
        f"+{broker['first'].p50 - direct['first'].p50:.2f} ms",
        "< 3 ms",
    )
    table.add_row("echo backend, 1 alias, 2 workers (req/s)", "", f"{echo_rps:.0f}", "", ">= 5000")
    console.print(table)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, noisier figures")
    args = parser.parse_args(argv)
    n_seq, n_tp, n_echo = (300, 2000, 10000) if args.quick else (1000, 6000, 30000)
    port = free_port()
    stub = start_stub(port)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        with private_redis() as settings:
            console.print(f"stub at {base_url}, Redis at {settings.redis_url}")
            direct = run(measure_direct(base_url, n_seq, n_tp))
            spec = DeploySpec(
                alias="bench_openai",
                pretrained_model_type="saas/openai",
                worker_concurrency=256,
                infer_params={
                    "saas.base_url": base_url,
                    "saas.api_key": "sk-bench",
                    "saas.model": "gpt-4o",
                    "saas.max_retries": 0,
                },
            )
            with workers(settings, spec, 1):
                broker = run(measure_broker(settings, spec.alias, n_seq, n_tp))
            echo = DeploySpec(
                alias="bench_echo", pretrained_model_type="custom/echo", worker_concurrency=512
            )
            with workers(settings, echo, 2):
                echo_rps = run(measure_echo(settings, echo.alias, n_echo))
        report(direct, broker, echo_rps)
    finally:
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()

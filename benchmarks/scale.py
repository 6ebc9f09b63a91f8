"""Many streams in flight at once: correctness, Redis cost per request, flat memory.

Client processes (each one ``AsyncByzerLLM``, so one reply stream and one
reader per process) keep streaming requests in flight against one alias
served by echo worker processes. Every answer is checked word for word.
Printed: Redis commands and memory per request and per in-flight request,
first-chunk latency under that load, and Redis memory after each block of
requests, which must stay flat (nothing leaks per request).

    python -m benchmarks.scale                      # 10 clients x 1,000 in flight, 100,000 requests
    python -m benchmarks.scale --quick              # 4 clients x 250 in flight, 10,000 requests
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import threading
import time
from typing import Any

import redis

from benchmarks.harness import private_redis, workers
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec

ALIAS = "scale_echo"


def _client(settings_json: str, in_flight: int, total: int, out: Any) -> None:
    """One client process: ``total`` streamed requests, ``in_flight`` at a time."""
    settings = BrokerSettings.model_validate_json(settings_json)

    async def run() -> dict[str, Any]:
        from byzerllm.client.llm import AsyncByzerLLM

        llm = AsyncByzerLLM(settings=settings, default_model_name=ALIAS)
        first_chunks: list[float] = []
        wrong = 0
        numbers = iter(range(total))

        async def lane() -> None:
            nonlocal wrong
            for i in numbers:
                question = f"stream number {i} of this client"
                start = time.perf_counter()
                pieces = []
                async for text, _ in llm.stream_chat_oai(question, delta_mode=True):
                    if not pieces:
                        first_chunks.append(time.perf_counter() - start)
                    pieces.append(text)
                wrong += "".join(pieces) != question

        await asyncio.gather(*(lane() for _ in range(in_flight)))
        await llm.aclose()
        return {"first_chunks": first_chunks, "wrong": wrong}

    out.put(json.dumps(asyncio.run(run())))


def _redis_figures(url: str) -> tuple[int, int]:
    """(commands processed so far, memory used in bytes) of the server."""
    client = redis.Redis.from_url(url)
    try:
        stats, memory = client.info("commandstats"), client.info("memory")
        commands = sum(int(v["calls"]) for v in stats.values())
        return commands, int(memory["used_memory"])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--in-flight", type=int, default=1000, help="per client process")
    parser.add_argument("--requests", type=int, default=100_000, help="in all")
    parser.add_argument("--blocks", type=int, default=10, help="memory is read after each")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.clients, args.in_flight, args.requests, args.blocks = 4, 250, 10_000, 4
    spec = DeploySpec(
        alias=ALIAS,
        pretrained_model_type="custom/echo",
        worker_concurrency=max(256, args.clients * args.in_flight // args.workers),
        infer_params={"chunks": 4, "delay": 0.01},
    )
    per_block = args.requests // args.blocks
    per_client = per_block // args.clients
    context = multiprocessing.get_context("spawn")
    with private_redis() as base:
        settings = base.model_copy(update={"max_waiting": 1_000_000})
        with workers(settings, spec, args.workers):
            commands0, memory0 = _redis_figures(settings.redis_url)
            first_chunks: list[float] = []
            wrong = 0
            memory_after = []
            started = time.perf_counter()
            peak = [memory0]
            sampling = threading.Event()

            def sample() -> None:  # Redis memory while requests are in flight
                while not sampling.wait(0.25):
                    peak[0] = max(peak[0], _redis_figures(settings.redis_url)[1])

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            for _ in range(args.blocks):
                queue = context.Queue()
                procs = [
                    context.Process(
                        target=_client,
                        args=(settings.model_dump_json(), args.in_flight, per_client, queue),
                    )
                    for _ in range(args.clients)
                ]
                for proc in procs:
                    proc.start()
                for _ in procs:
                    result = json.loads(queue.get())
                    first_chunks += result["first_chunks"]
                    wrong += result["wrong"]
                for proc in procs:
                    proc.join()
                memory_after.append(_redis_figures(settings.redis_url)[1])
            elapsed = time.perf_counter() - started
            sampling.set()
            sampler.join()
            commands1, _ = _redis_figures(settings.redis_url)
    done = per_client * args.clients * args.blocks
    first_chunks.sort()
    in_flight = args.clients * args.in_flight
    print(f"{done:,} streamed requests, {in_flight:,} in flight over {args.workers} echo workers")
    print(f"wrong answers: {wrong}")
    print(f"throughput: {done / elapsed:,.0f} requests/s")
    print(f"Redis commands per request: {(commands1 - commands0) / done:.2f}")
    print(
        f"first chunk p50 {statistics.median(first_chunks) * 1000:.1f} ms, "
        f"p99 {first_chunks[int(0.99 * (len(first_chunks) - 1))] * 1000:.1f} ms"
    )
    print(f"Redis memory before: {memory0 / 1e6:.2f} MB, peak under load {peak[0] / 1e6:.2f} MB")
    print(f"memory per in-flight request (peak): {(peak[0] - memory0) / in_flight:,.0f} bytes")
    for i, memory in enumerate(memory_after, 1):
        print(f"  after {i * per_client * args.clients:>9,} requests: {memory / 1e6:.2f} MB")
    growth = (memory_after[-1] - memory_after[0]) / max(1, done - per_client * args.clients)
    print(f"memory growth per request after the first block: {growth:.1f} bytes")
    if wrong:
        raise SystemExit(f"{wrong} answers were wrong")


if __name__ == "__main__":
    main()

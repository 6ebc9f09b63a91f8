"""``byzerllm quickstart``: the first thing a new user runs.

It needs nothing but this package: it starts the embedded Redis when none is
configured or running, serves an alias from a worker process, then asks it a
question twice, once whole and once streamed, and leaves Redis running for
the next command.
"""

from __future__ import annotations

import time

from rich.console import Console

from byzerllm.broker.embedded import ensure_redis
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.workers.process import spawn_worker, wait_ready

QUESTION = "Hello! Which alias am I talking to?"


async def run_quickstart(redis_url: str | None, alias: str, out: Console) -> None:
    started = time.perf_counter()
    settings = BrokerSettings.from_env(ensure_redis(redis_url))
    out.print(f"[bold]1.[/bold] Redis at {settings.safe_url}")
    spec = DeploySpec(
        alias=alias,
        pretrained_model_type="custom/echo",
        infer_params={"prefix": f"[{alias}] you said: ", "delay": 0.05},
    )
    worker = spawn_worker(spec, settings)
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)
    try:
        await wait_ready(settings, worker)
        out.print(f"[bold]2.[/bold] worker serving {alias!r} ({spec.pretrained_model_type})")
        [answer] = await llm.chat_oai([{"role": "user", "content": QUESTION}])
        out.print("[bold]3.[/bold] chat_oai -> ", end="")
        out.print(answer.output, markup=False, highlight=False)
        out.print("[bold]4.[/bold] stream_chat_oai -> ", end="")
        async for delta, _meta in llm.stream_chat_oai(QUESTION, delta_mode=True):
            out.print(delta, end="", markup=False, highlight=False)
        out.print()
        out.print(f"done in {time.perf_counter() - started:.1f}s")
    finally:
        await llm.aclose()
        worker.stop()

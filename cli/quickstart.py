"""``byzerllm quickstart``: the first thing a new user runs.

It needs nothing but this package: with no Redis configured it starts the
embedded Redis and a local node agent (both stay running; see
``byzerllm local status``), deploys a model under an alias through them,
and talks to it twice: once whole, once streamed.
"""

from __future__ import annotations

import time

from rich.console import Console

from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.local import ensure_cluster
from byzerllm.client import deploy as deploying
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.prompt import prompt

QUESTION = "Hello! Which alias am I talking to?"


@prompt()  # the docstring is the body
def greet(name: str) -> str:  # type: ignore[empty-body]
    """
    Hello {{ name }}, say hello back!
    """


async def run_quickstart(redis_url: str | None, alias: str, out: Console) -> None:
    started = time.perf_counter()
    settings = await ensure_cluster(redis_url)
    out.print(f"[bold]1.[/bold] Redis at {settings.safe_url}")
    spec = DeploySpec(
        alias=alias,
        pretrained_model_type="custom/echo",
        worker_concurrency=8,
        infer_params={"prefix": f"[{alias}] you said: ", "delay": 0.05},
    )
    await deploying.deploy(settings, spec, force=True, timeout=120)
    out.print(f"[bold]2.[/bold] deployed {alias!r} ({spec.pretrained_model_type})")
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)
    try:
        [answer] = await llm.chat_oai([{"role": "user", "content": QUESTION}])
        out.print("[bold]3.[/bold] chat_oai -> ", end="")
        out.print(answer.output, markup=False, highlight=False)
        greeting = await greet.with_llm(llm).arun("byzerllm")
        out.print("[bold]4.[/bold] prompt function -> ", end="")
        out.print(greeting, markup=False, highlight=False)
        out.print("[bold]5.[/bold] stream_chat_oai -> ", end="")
        async for delta, _meta in llm.stream_chat_oai(QUESTION, delta_mode=True):
            out.print(delta, end="", markup=False, highlight=False)
        out.print()
    finally:
        await llm.aclose()
    out.print(
        f"done in {time.perf_counter() - started:.1f}s; `byzerllm stat --model {alias}` "
        "shows it, `byzerllm local stop` stops the local services"
    )

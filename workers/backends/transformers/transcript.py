"""Whisper's segments as the transcription JSON the guide shows callers parsing.

The shape is OpenAI's ``verbose_json`` (what ``saas/openai`` with
``whisper-1`` returns), so code written against one deployment reads the
other: ``text``, ``task``, ``language`` (a name, e.g. ``english``),
``duration``, ``segments`` (id, seek, start, end, text, tokens,
temperature, avg_logprob, compression_ratio) and ``words`` (word, start,
end) when the model can time words. ``json``, ``text``, ``srt`` and
``vtt`` are the other response formats OpenAI offers, made from the same
segments.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from byzerllm.broker.errors import ConfigurationError

RESPONSE_FORMATS = ("verbose_json", "json", "text", "srt", "vtt")
# languages written without spaces: every complete character group is a word
_UNSPACED = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
_PUNCTUATION = "\"'“”‘’¿([{-.,!?:;)]}、。，！？：；「」『』（）《》…"


@dataclass(slots=True)
class Segment:
    start: float
    end: float
    tokens: list[int]  # as generated, timestamp tokens included
    text_tokens: list[int]
    token_times: list[float] = field(default_factory=list)  # one per token, if timed
    seek: int = 0
    avg_logprob: float | None = None


@dataclass(slots=True)
class Transcript:
    task: str
    language: str  # the language's name, e.g. "english"
    duration: float
    temperature: float
    segments: list[Segment]
    words_wanted: bool = True


def render(
    t: Transcript,
    response_format: str,
    decode: Callable[[list[int]], str],
    token_text: Callable[[int], str],
    language_code: str,
) -> str:
    """The transcription in the requested response format (verbose_json by default)."""
    if response_format not in RESPONSE_FORMATS:
        raise ConfigurationError(
            f"response_format {response_format!r} is not supported; use one of "
            f"{', '.join(RESPONSE_FORMATS)}"
        )
    texts = [decode(s.text_tokens) for s in t.segments]
    text = "".join(texts).strip()
    if response_format == "text":
        return text
    if response_format == "json":
        return json.dumps({"text": text}, ensure_ascii=False)
    if response_format in ("srt", "vtt"):
        return _subtitles(t.segments, texts, response_format)
    out: dict[str, Any] = {
        "text": text,
        "task": t.task,
        "language": t.language,
        "duration": round(t.duration, 3),
        "segments": [_segment(i, s, texts[i], t) for i, s in enumerate(t.segments)],
    }
    if t.words_wanted and any(s.token_times for s in t.segments):
        unspaced = language_code in _UNSPACED
        out["words"] = [
            w for s in t.segments for w in _words(s, decode, token_text, unspaced, t.duration)
        ]
    return json.dumps(out, ensure_ascii=False)


def _segment(i: int, s: Segment, text: str, t: Transcript) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": i,
        "seek": s.seek,
        "start": _clamp(s.start, t.duration),
        "end": _clamp(s.end, t.duration),
        "text": text,
        "tokens": s.tokens,
        "temperature": t.temperature,
        "compression_ratio": compression_ratio(text),
    }
    if s.avg_logprob is not None:
        data["avg_logprob"] = s.avg_logprob
    return data


def compression_ratio(text: str) -> float:
    """Whisper's repetition signal: how well the text compresses."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def _clamp(value: float, duration: float) -> float:
    return round(min(max(float(value), 0.0), duration), 3)


def _words(
    s: Segment,
    decode: Callable[[list[int]], str],
    token_text: Callable[[int], str],
    unspaced: bool,
    duration: float,
) -> list[dict[str, Any]]:
    """Words with times: tokens grouped at spaces (or per character), timed by their tokens."""
    if not s.token_times:
        return []
    text_ids = set(s.text_tokens)
    text_positions = [i for i, tok in enumerate(s.tokens) if tok in text_ids]
    groups: list[list[int]] = []  # positions in s.tokens
    for pos in text_positions:
        piece = token_text(s.tokens[pos])
        if unspaced:  # a new word once the last one decodes to whole characters
            starts = not groups or "\ufffd" not in decode([s.tokens[p] for p in groups[-1]])
        else:
            starts = not groups or piece[:1] in ("Ġ", "▁", " ")
        if starts:
            groups.append([pos])
        else:
            groups[-1].append(pos)
    words = []
    for group in groups:
        word = decode([s.tokens[p] for p in group]).strip().strip(_PUNCTUATION)
        if not word:
            continue
        start = _time_at(s, group[0], duration)
        end = _time_at(s, group[-1] + 1, duration) if group[-1] + 1 < len(s.tokens) else s.end
        words.append({"word": word, "start": start, "end": _clamp(max(end, start), duration)})
    return words


def _time_at(s: Segment, position: int, duration: float) -> float:
    times: Sequence[float] = s.token_times
    return _clamp(times[min(position, len(times) - 1)], duration)


def _subtitles(segments: list[Segment], texts: list[str], kind: str) -> str:
    blocks = ["WEBVTT\n"] if kind == "vtt" else []
    sep = "." if kind == "vtt" else ","
    for i, (s, text) in enumerate(zip(segments, texts, strict=True), start=1):
        span = f"{_stamp(s.start, sep)} --> {_stamp(s.end, sep)}"
        blocks.append(
            f"{span}\n{text.strip()}\n" if kind == "vtt" else f"{i}\n{span}\n{text.strip()}\n"
        )
    return "\n".join(blocks)


def _stamp(seconds: float, sep: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{sep}{millis:03d}"

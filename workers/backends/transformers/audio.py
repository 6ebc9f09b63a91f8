"""Audio bytes to the 16 kHz mono float samples Whisper listens to.

WAV is read with the standard library (``wave``) and resampled with numpy,
so the common case needs no ffmpeg. Other containers and codecs (mp3, m4a,
ogg, flac, webm...) are handed to ``ffmpeg`` when it is on the PATH; when
it is not, the error says which formats work and how to convert. The bytes
decide, not the declared type: a WAV sent as ``audio/mpeg`` still reads.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from dataclasses import dataclass
from typing import Any

from byzerllm.broker.errors import ConfigurationError

SAMPLE_RATE = 16_000
_FFMPEG_FORMATS = "mp3, m4a, ogg, flac, webm"


@dataclass(frozen=True, slots=True)
class Samples:
    data: Any  # numpy float32 array, mono, SAMPLE_RATE
    duration: float  # seconds, from the source's own frame count and rate


def supported_formats() -> str:
    if shutil.which("ffmpeg"):
        return f"wav (PCM) natively, and {_FFMPEG_FORMATS} through ffmpeg"
    return (
        f"wav (PCM 8/16/24/32-bit); install ffmpeg on the worker host to also read "
        f"{_FFMPEG_FORMATS}, or convert first: ffmpeg -i in.mp3 -ar 16000 -ac 1 out.wav"
    )


def decode(data: bytes, declared: str = "") -> Samples:
    """The audio as Whisper's input; ConfigurationError naming the supported formats."""
    if not data:
        raise ConfigurationError("the audio is empty; send a non-empty wav file")
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        try:
            return _read_wav(data)
        except (wave.Error, EOFError, ValueError) as exc:
            if not shutil.which("ffmpeg"):
                raise ConfigurationError(
                    f"cannot read this wav file ({exc}); supported formats: {supported_formats()}"
                ) from None
    if shutil.which("ffmpeg"):
        return _read_with_ffmpeg(data, declared)
    kind = f"{declared!r} audio" if declared and declared != "wav" else "this payload"
    raise ConfigurationError(
        f"cannot decode {kind}: it is not a wav file (no RIFF/WAVE header) and ffmpeg is not "
        f"installed; supported formats: {supported_formats()}"
    )


def _read_wav(data: bytes) -> Samples:
    import numpy as np

    with wave.open(io.BytesIO(data)) as wav:
        channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
        frames = wav.getnframes()
        raw = wav.readframes(frames)
    if frames == 0 or not raw:
        raise ConfigurationError("the wav file holds no samples")
    if width == 1:  # 8-bit wav is unsigned
        samples = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        samples = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:  # 24-bit: widen each little-endian triple to int32
        triples = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        samples = (np.where(ints >= 1 << 23, ints - (1 << 24), ints)).astype(np.float32) / 2**23
    elif width == 4:
        samples = np.frombuffer(raw, "<i4").astype(np.float32) / 2**31
    else:
        raise ValueError(f"{8 * width}-bit samples are not supported")
    samples = samples[: len(samples) - len(samples) % channels].reshape(-1, channels).mean(axis=1)
    return Samples(resample(samples, rate), len(samples) / rate)


def resample(samples: Any, rate: int) -> Any:
    """To SAMPLE_RATE by FFT (band-limited: no aliasing from 44.1 or 48 kHz sources)."""
    import numpy as np

    samples = np.asarray(samples, dtype=np.float32)
    if rate == SAMPLE_RATE or len(samples) == 0:
        return samples
    target = max(1, round(len(samples) * SAMPLE_RATE / rate))
    spectrum = np.fft.rfft(samples)
    keep = target // 2 + 1
    if keep <= len(spectrum):
        spectrum = spectrum[:keep]
    else:
        spectrum = np.concatenate([spectrum, np.zeros(keep - len(spectrum), spectrum.dtype)])
    out = np.fft.irfft(spectrum, n=target) * (target / len(samples))
    return out.astype(np.float32)


def _read_with_ffmpeg(data: bytes, declared: str) -> Samples:
    import numpy as np

    cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", "pipe:0"]
    cmd += ["-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    try:
        proc = subprocess.run(cmd, input=data, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigurationError(f"ffmpeg could not decode the audio: {exc}") from None
    if proc.returncode != 0 or not proc.stdout:
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise ConfigurationError(
            f"cannot decode {declared or 'the'} audio: ffmpeg says {reason[0]}; "
            f"supported formats: {supported_formats()}"
        )
    samples = np.frombuffer(proc.stdout, np.float32)
    return Samples(samples, len(samples) / SAMPLE_RATE)

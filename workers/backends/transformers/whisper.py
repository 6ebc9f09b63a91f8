"""``custom/whisper``: speech-to-text with a local Whisper model.

Asked exactly like the ``saas/openai`` ``whisper-1`` deployment: the audio
is in the last user message (``{"audio": "data:audio/wav;base64,..."}``,
an ``<_audio_>`` tag from a prompt function's ``AudioPath``, or an
``input_audio`` part), and the answer is the verbose JSON text the guide
parses, with segment and word times. A request may add OpenAI's
``language``, ``prompt``, ``temperature``, ``response_format`` and
``timestamp_granularities``.

One transcription runs at a time per worker (a lock): a Whisper pass uses
every core or the GPU. A cancelled request stops the model between tokens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from byzerllm.broker.errors import BackendError, BackendLoadError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Chunk
from byzerllm.workers.backends.transformers import audio, whisper_generate
from byzerllm.workers.backends.transformers.common import (
    TransformersBackend,
    TransformersOptions,
    load_error,
    load_kwargs,
    require_files,
    run_stoppable,
)
from byzerllm.workers.backends.transformers.transcript import render
from byzerllm.workers.llm_config import number
from byzerllm.workers.media import audio_of, media_request

_WHAT = "Whisper model"
_HOW = (
    'send the last user message as {"audio": "data:audio/wav;base64,..."} '
    "or <_audio_>data:audio/wav;base64,...</_audio_>"
)


class WhisperOptions(TransformersOptions):
    # the language of the audio (code or name); unset: detected per request
    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    # time words (needs alignment heads in generation_config.json; costs a little)
    word_timestamps: bool = True


class WhisperBackend(TransformersBackend):
    what: ClassVar[str] = _WHAT
    Options = WhisperOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})
    options: WhisperOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._processor: Any = None
        self._lock = asyncio.Lock()
        self._can_time_words = False

    async def start(self) -> None:
        torch, transformers, folder = self._prepare()
        if self.options.language:
            whisper_generate.language_code(self.options.language)  # fail at start, not per call
        await asyncio.to_thread(self._load, torch, transformers, folder)

    def _load(self, torch: Any, transformers: Any, folder: Path) -> None:
        require_files(folder, self.spec.alias, "config.json")
        kwargs = load_kwargs(torch, transformers, self.options, self._device)
        try:
            processor = transformers.WhisperProcessor.from_pretrained(folder, local_files_only=True)
            model = transformers.WhisperForConditionalGeneration.from_pretrained(folder, **kwargs)
            model.to(self._device)
        except (OSError, ValueError, RuntimeError, ImportError, KeyError, TypeError) as exc:
            raise load_error(self.spec.alias, folder, exc) from exc
        gen_config = model.generation_config
        if getattr(gen_config, "no_timestamps_token_id", None) is None:
            raise BackendLoadError(
                f"{self.spec.alias}: {folder}/generation_config.json lacks Whisper's timestamp "
                "settings (no_timestamps_token_id, lang_to_id...); copy generation_config.json "
                "from the Whisper model this one was fine-tuned from"
            )
        self._can_time_words = bool(getattr(gen_config, "alignment_heads", None))
        self._processor, self._model = processor, model.eval()

    async def aclose(self) -> None:
        self._model = self._processor = None

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "support_stream": False, "device": self._device}

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        if self._model is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        content = request.conversations[-1].get("content") if request.conversations else None
        media = media_request(content)
        sound = audio_of(media) if media is not None else None
        if media is None or sound is None:
            raise ConfigurationError(f"{self.spec.alias} transcribes audio: {_HOW}")
        response_format = str(media.get("response_format") or "verbose_json")
        req = self._request(media)
        samples = await asyncio.to_thread(audio.decode, sound.data, sound.format)
        stop = threading.Event()

        def run() -> tuple[Any, str]:
            return whisper_generate.transcribe(
                self._model, self._processor, samples.data, samples.duration, req, stop
            )

        async with self._lock:
            transcript, language = await run_stoppable(run, stop)
        tok = self._processor.tokenizer
        text = render(
            transcript,
            response_format,
            decode=lambda ids: tok.decode(ids, skip_special_tokens=True),
            token_text=lambda t: str(tok.convert_ids_to_tokens(t)),
            language_code=language,
        )
        generated = sum(len(s.text_tokens) for s in transcript.segments)
        yield Chunk(text=text, input_tokens=0, output_tokens=generated, finish_reason="stop")

    def _request(self, media: dict[str, Any]) -> whisper_generate.TranscriptionRequest:
        """The OpenAI-style parameters of one request, over the deployment's defaults."""
        language = media.get("language") or self.options.language
        granularities = media.get("timestamp_granularities") or ["word", "segment"]
        if isinstance(granularities, str):
            granularities = [granularities]
        temperature = media.get("temperature")
        task = str(media.get("task") or self.options.task)
        if task not in ("transcribe", "translate"):
            raise ConfigurationError(f"task {task!r} is not transcribe or translate")
        return whisper_generate.TranscriptionRequest(
            task=task,
            language=whisper_generate.language_code(str(language)) if language else None,
            temperature=number("temperature", temperature, float) if temperature else 0.0,
            prompt=str(media["prompt"]) if media.get("prompt") else None,
            words=self.options.word_timestamps and self._can_time_words and "word" in granularities,
        )

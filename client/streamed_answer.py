"""What a streamed chat has given its caller so far, and what each reply adds.

After a worker failure the answer comes again: from a worker that continues
the text the caller has (it re-sends that text first), or from one that
starts over. Text the caller already has is never given twice, and an
attempt that says something else restarts the answer instead of being
spliced onto it.

Speech (a text-to-speech alias) streams audio, not text: each delta's bytes
are given as they come, delta mode or not, as the original byzerllm did; an
attempt that starts over after a worker failure starts the audio again, and
its first piece says so (``extra_info["restarted"]``).
"""

from __future__ import annotations

from typing import Any

from byzerllm.client.types import SingleOutputMeta

Item = tuple[str | bytes, SingleOutputMeta]


def _agree(one: str, other: str) -> bool:
    """Whether one text extends the other: the same answer, further along or not."""
    return one.startswith(other) or other.startswith(one)


class StreamedAnswer:
    def __init__(self, delta_mode: bool) -> None:
        self.delta_mode = delta_mode
        self.text = self.reasoning = ""  # the current attempt's, as it arrives
        self.shown = self.shown_reasoning = ""  # what the caller has
        self.restarts = 0
        self.audio_given = False  # the caller has audio (of any attempt)
        self.audio_in_attempt = False  # ... of the current attempt

    def new_attempt(self) -> None:
        self.text = self.reasoning = ""
        self.audio_in_attempt = False

    def add(self, data: dict[str, Any]) -> Item | None:
        """The item to yield for a delta reply, or None when it adds nothing."""
        audio = data.get("audio")
        if isinstance(audio, bytes) and audio:
            return self._add_audio(audio)
        self.text += data.get("text", "")
        self.reasoning += data.get("reasoning", "")
        text, reasoning = self.text, self.reasoning
        if not (_agree(text, self.shown) and _agree(reasoning, self.shown_reasoning)):
            self.shown, self.shown_reasoning = text, reasoning
            self.restarts += 1
            restarted = {"restarted": True, "attempt": self.restarts}
            return text, SingleOutputMeta(reasoning_content=reasoning, extra_info=restarted)
        if len(text) <= len(self.shown) and len(reasoning) <= len(self.shown_reasoning):
            return None  # empty, or what the caller already has
        out, out_reasoning = text, reasoning
        if self.delta_mode:
            out, out_reasoning = text[len(self.shown) :], reasoning[len(self.shown_reasoning) :]
        self.shown, self.shown_reasoning = text, reasoning
        return out, SingleOutputMeta(reasoning_content=out_reasoning)

    def _add_audio(self, audio: bytes) -> Item:
        extra: dict[str, Any] = {}
        if self.audio_given and not self.audio_in_attempt:
            self.restarts += 1
            extra = {"restarted": True, "attempt": self.restarts}
        self.audio_given = self.audio_in_attempt = True
        return audio, SingleOutputMeta(extra_info=extra)

    def end(self, meta: dict[str, Any]) -> Item:
        """The last item: usage counts, and (non-delta mode) the whole answer shown;
        after audio, no bytes (the pieces were the answer)."""
        shown: str | bytes = "" if self.delta_mode else self.shown
        return (
            b"" if self.audio_given else shown,
            SingleOutputMeta(
                input_tokens_count=int(meta.get("input_tokens_count", 0)),
                generated_tokens_count=int(meta.get("generated_tokens_count", 0)),
                reasoning_content="" if self.delta_mode else self.shown_reasoning,
                finish_reason=meta.get("finish_reason"),
                first_token_time=float(meta.get("first_token_time", 0.0)),
                extra_info=meta,
            ),
        )

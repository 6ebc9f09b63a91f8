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

A native tool choice streams as fragments (``SingleOutputMeta.tool_calls``).
Fragments of a call cannot be matched with those of another attempt (each
attempt's call has its own id), so an attempt that streams tool calls after
the caller has some restarts the answer: that item carries the attempt's text
and calls so far.
"""

from __future__ import annotations

from typing import Any

from byzerllm.broker.messages import fold_tool_call_fragments
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
        self.calls: list[dict[str, Any]] = []  # the current attempt's tool calls so far
        self.calls_given = False  # the caller has tool calls ...
        self.calls_stale = False  # ... of an earlier attempt

    def new_attempt(self) -> None:
        self.text = self.reasoning = ""
        self.audio_in_attempt = False
        self.calls = []
        self.calls_stale = self.calls_given

    def add(self, data: dict[str, Any]) -> Item | None:
        """The item to yield for a delta reply, or None when it adds nothing."""
        audio = data.get("audio")
        if isinstance(audio, bytes) and audio:
            return self._add_audio(audio)
        self.text += data.get("text", "")
        self.reasoning += data.get("reasoning", "")
        fragments = [f for f in data.get("tool_calls") or () if isinstance(f, dict)]
        fold_tool_call_fragments(self.calls, fragments)
        text, reasoning = self.text, self.reasoning
        if (fragments and self.calls_stale) or not (
            _agree(text, self.shown) and _agree(reasoning, self.shown_reasoning)
        ):
            self.shown, self.shown_reasoning = text, reasoning
            self.calls_given, self.calls_stale = bool(self.calls), False
            self.restarts += 1
            restarted = {"restarted": True, "attempt": self.restarts}
            return text, SingleOutputMeta(
                reasoning_content=reasoning, extra_info=restarted, tool_calls=self._calls()
            )
        grew = len(text) > len(self.shown) or len(reasoning) > len(self.shown_reasoning)
        if not (grew or fragments):
            return None  # empty, or what the caller already has
        out, out_reasoning = text, reasoning
        if self.delta_mode:
            out, out_reasoning = text[len(self.shown) :], reasoning[len(self.shown_reasoning) :]
        self.shown, self.shown_reasoning = text, reasoning
        self.calls_given = self.calls_given or bool(fragments)
        calls = [dict(f) for f in fragments] if self.delta_mode else self._calls()
        return out, SingleOutputMeta(reasoning_content=out_reasoning, tool_calls=calls)

    def _calls(self) -> list[dict[str, Any]]:
        return [dict(call) for call in self.calls]

    def _add_audio(self, audio: bytes) -> Item:
        extra: dict[str, Any] = {}
        if self.audio_given and not self.audio_in_attempt:
            self.restarts += 1
            extra = {"restarted": True, "attempt": self.restarts}
        self.audio_given = self.audio_in_attempt = True
        return audio, SingleOutputMeta(extra_info=extra)

    def end(self, meta: dict[str, Any], tool_calls: list[dict[str, Any]] | None = None) -> Item:
        """The last item: usage counts, and (non-delta mode) the whole answer shown;
        after audio, no bytes (the pieces were the answer). A native tool choice
        is in ``extra_info["tool_calls"]`` as ``chat_oai`` gives it (arguments parsed)."""
        shown: str | bytes = "" if self.delta_mode else self.shown
        return (
            b"" if self.audio_given else shown,
            SingleOutputMeta(
                input_tokens_count=int(meta.get("input_tokens_count", 0)),
                generated_tokens_count=int(meta.get("generated_tokens_count", 0)),
                reasoning_content="" if self.delta_mode else self.shown_reasoning,
                finish_reason=meta.get("finish_reason"),
                first_token_time=float(meta.get("first_token_time", 0.0)),
                extra_info={**meta, "tool_calls": tool_calls} if tool_calls else meta,
                tool_calls=[] if self.delta_mode else self._calls(),
            ),
        )

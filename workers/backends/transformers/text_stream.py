"""Generated token ids to text deltas, cut at the first stop string.

A model produces tokens, a client wants text: one token can be half of a
multi-byte character, and a stop string (``gen.stop``) can span several
tokens. So the whole answer is decoded again on every token (cheap next to
a forward pass), text that may still turn into a stop string is held back,
and nothing after a stop string is ever sent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

_INCOMPLETE = "\ufffd"  # what a decoder yields for the first bytes of a split character


class TextAssembler:
    """Feed token ids, get the text to send now; ``stopped`` once a stop string appeared."""

    def __init__(self, decode: Callable[[list[int]], str], stops: Iterable[str] = ()) -> None:
        self._decode = decode
        self._stops = [s for s in stops if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._ids: list[int] = []
        self._sent = 0  # characters of the decoded answer already handed out
        self.stopped = False

    @property
    def token_count(self) -> int:
        return len(self._ids)

    def feed(self, ids: Iterable[int]) -> str:
        if self.stopped:
            return ""
        self._ids.extend(ids)
        text = self._decode(self._ids)
        if text.endswith(_INCOMPLETE):
            return ""
        return self._release(text, final=False)

    def finish(self) -> str:
        """The held-back rest, once generation ended."""
        if self.stopped:
            return ""
        return self._release(self._decode(self._ids), final=True)

    def _release(self, text: str, final: bool) -> str:
        start = max(0, self._sent - self._hold)
        found = [i for i in (text.find(s, start) for s in self._stops) if i != -1]
        if found:
            self.stopped = True
            end = max(min(found), self._sent)
        else:
            end = len(text) if final else len(text) - self._stop_prefix_len(text)
        if end <= self._sent:
            return ""
        piece, self._sent = text[self._sent : end], end
        return piece

    def _stop_prefix_len(self, text: str) -> int:
        """Length of the longest end of ``text`` that starts some stop string."""
        for size in range(min(self._hold, len(text)), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stops):
                return size
        return 0

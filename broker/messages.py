"""Message shapes on the streams, and their msgpack codec.

A request stream entry has one field ``m``: a msgpack map of :class:`Request`.
A reply stream entry has one field ``m``: a msgpack array of :class:`Reply`
maps, because a worker flushes everything it has for one client in a single
XADD. Each shape carries a version ``v`` so that old and new processes can
tell each other apart during a rolling upgrade.
"""

from __future__ import annotations

import re
import time
import uuid
from enum import StrEnum
from typing import Any, Final, Literal

import msgpack
from pydantic import BaseModel, ConfigDict, ValidationError

from byzerllm.broker.errors import ConfigurationError, ProtocolError

VERSION: Final = 1
FIELD = b"m"


class RequestKind(StrEnum):
    CHAT = "chat"
    EMBED = "embed"
    RERANK = "rerank"
    META = "meta"


class ReplyType(StrEnum):
    DELTA = "delta"  # data: {"text", "reasoning"}, + "audio", "tool_calls" (delta_data)
    END = "end"  # data: {"output": ..., "meta": {...}}; the last entry of a request
    ERROR = "error"  # data: {"type", "message", "retryable"}; also the last entry
    RETRY = "retry"  # data: {"attempt": n}; a new worker starts the request again


FINAL_TYPES = frozenset({ReplyType.END, ReplyType.ERROR})


_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


class Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = VERSION
    id: str
    alias: str
    kind: RequestKind
    payload: dict[str, Any]
    reply_to: str
    deadline: float | None = None
    attempt: int = 0
    created: float
    # a copy a client sent again after a Redis failover lost the request: run it only
    # if no worker runs or ran it (the run marks of broker/run_marks.py)
    resent: bool = False

    @classmethod
    def new(
        cls,
        alias: str,
        kind: RequestKind,
        payload: dict[str, Any],
        reply_to: str,
        timeout: float | None,
        request_id: str | None = None,
    ) -> Request:
        """A fresh request due ``timeout`` seconds from now (None: never), with a new
        id unless the caller chose one (to abort it by that id)."""
        now = time.time()
        if request_id is not None and not _REQUEST_ID.fullmatch(request_id):
            raise ConfigurationError(
                f"request id {request_id[:80]!r} is not usable: use 1-128 letters, digits, "
                "'-' or '_' (e.g. a uuid4 hex)"
            )
        return cls(
            id=request_id or uuid.uuid4().hex,
            alias=alias,
            kind=kind,
            payload=payload,
            reply_to=reply_to,
            deadline=now + timeout if timeout else None,
            created=now,
        )


class Reply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    v: Literal[1] = VERSION
    rid: str
    seq: int
    type: ReplyType
    attempt: int = 0
    data: dict[str, Any]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_request(request: Request) -> bytes:
    """The request's msgpack bytes; a value msgpack cannot carry is the caller's error."""
    try:
        # the fields as they are (validated when the model was built): model_dump would
        # walk the whole payload again, and dict(request) goes through pydantic's
        # __iter__; a model without extras keeps exactly its fields in __dict__
        return pack(request.__dict__)
    except UnicodeEncodeError as exc:
        raise ConfigurationError(
            f"the request for {request.alias!r} holds text that is not valid Unicode "
            f"({exc.reason} at {exc.object[max(0, exc.start - 20) : exc.end + 20]!r}); "
            "clean the text (e.g. text.encode('utf-8', 'replace').decode())"
        ) from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigurationError(
            f"the request for {request.alias!r} holds a value that cannot be sent ({exc}); "
            "send JSON-like data: str, numbers, bool, None, lists and dicts"
        ) from None


def decode_request(fields: dict[bytes, bytes]) -> Request:
    """Parse a request entry; any defect raises ProtocolError with the reason."""
    raw = fields.get(FIELD)
    if raw is None:
        raise ProtocolError(f"request entry has no {FIELD.decode()!r} field: {list(fields)[:5]}")
    try:
        data = msgpack.unpackb(raw, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"request entry is not msgpack: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"request entry is a {type(data).__name__}, not a map")
    if data.get("v") != VERSION:
        raise ProtocolError(f"request entry has version {data.get('v')!r}, expected {VERSION}")
    try:
        return Request.model_validate(data)
    except ValidationError as exc:
        raise ProtocolError(f"invalid request entry: {_short(exc)}") from None


def encode_replies(replies: list[dict[str, Any]]) -> bytes:
    return pack(replies)


def decode_replies(fields: dict[bytes, bytes]) -> list[Reply]:
    raw = fields.get(FIELD)
    if raw is None:
        raise ProtocolError(f"reply entry has no {FIELD.decode()!r} field")
    try:
        items = msgpack.unpackb(raw, raw=False)
    except Exception as exc:
        raise ProtocolError(f"reply entry is not msgpack: {exc}") from None
    if not isinstance(items, list):
        raise ProtocolError(f"reply entry is a {type(items).__name__}, not an array")
    try:
        return [Reply.model_validate(item) for item in items]
    except ValidationError as exc:
        raise ProtocolError(f"invalid reply entry: {_short(exc)}") from None


def reply(
    rid: str, seq: int, type_: ReplyType, data: dict[str, Any], attempt: int = 0
) -> dict[str, Any]:
    """A reply as the plain dict that goes on the wire (validated by the reader)."""
    return {
        "v": VERSION,
        "rid": rid,
        "seq": seq,
        "type": type_.value,
        "attempt": attempt,
        "data": data,
    }


def delta_data(
    text: str,
    reasoning: str,
    audio: bytes = b"",
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A DELTA reply's data. Speech (text-to-speech) streams its audio as ``audio``,
    raw bytes (msgpack's bin type, so no base64 on the wire); deltas of one
    request that are merged before they are sent join their audio bytes in order.

    A native tool choice streams as ``tool_calls``: fragments
    ``{"index", "id"?, "name"?, "arguments"?}`` in the order the vendor sent
    them, the first of a call with its id and name, later ones with pieces of
    its arguments' JSON text (see :func:`join_tool_call_fragments`)."""
    data: dict[str, Any] = {"text": text, "reasoning": reasoning}
    if audio:
        data["audio"] = audio
    if tool_calls:
        data["tool_calls"] = [dict(f) for f in tool_calls]
    return data


def join_tool_call_fragments(into: list[dict[str, Any]], fragments: list[dict[str, Any]]) -> None:
    """Append ``fragments`` to ``into`` in order, where a fragment that only adds
    arguments to the call of the fragment before it joins that one's arguments:
    what merging deltas does, so a fragment is never lost or reordered."""
    for fragment in fragments:
        last = into[-1] if into else None
        if (
            last is not None
            and last.get("index") == fragment.get("index")
            and fragment.keys() <= {"index", "arguments"}
        ):
            last["arguments"] = str(last.get("arguments") or "") + str(
                fragment.get("arguments") or ""
            )
        else:
            into.append(dict(fragment))


def fold_tool_call_fragments(calls: list[dict[str, Any]], fragments: list[dict[str, Any]]) -> None:
    """The calls so far (``{"index", "id", "name", "arguments"}``, arguments as
    text) with ``fragments`` added: a fragment's index picks its call, an id or
    name sets it, arguments are appended."""
    for fragment in fragments:
        index = fragment.get("index", 0)
        call = next((c for c in reversed(calls) if c["index"] == index), None)
        if call is None:
            call = {"index": index, "id": "", "name": "", "arguments": ""}
            calls.append(call)
        for key in ("id", "name"):
            if fragment.get(key):
                call[key] = str(fragment[key])
        call["arguments"] += str(fragment.get("arguments") or "")


def _short(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])


class ChatPayload(BaseModel):
    """What a chat request asks for; ``stream`` selects delta replies."""

    model_config = ConfigDict(extra="ignore")

    conversations: list[dict[str, Any]]
    llm_config: dict[str, Any] = {}
    stream: bool = False
    extra_request_params: dict[str, Any] = {}
    # Function calling: JSON descriptions ({name, description, parameters}) for
    # backends that call tools natively, and the same tools described in the
    # text of the last message for those that do not; the worker picks one, so
    # the client needs no round trip to learn what the alias can do.
    tools: list[dict[str, Any]] = []
    tool_choice: str | None = None
    tools_prompt: str | None = None
    # Set by the client when it asks again after a worker failed mid-stream: the
    # answer text it already holds. A backend that can continue an answer
    # (prefix completion) goes on from it; one that cannot answers anew and the
    # client says the answer restarted.
    continue_from: str = ""

    def with_tools_in_prompt(self) -> ChatPayload:
        """The request for a backend without native tools: the last message
        becomes the prompt that describes them."""
        if not self.tools:
            return self
        conversations = list(self.conversations)
        if self.tools_prompt is not None and conversations:
            conversations[-1] = {**conversations[-1], "content": self.tools_prompt}
        return self.model_copy(
            update={"conversations": conversations, "tools": [], "tool_choice": None}
        )


class EmbedPayload(BaseModel):
    model_config = ConfigDict(extra="ignore")

    texts: list[str]
    llm_config: dict[str, Any] = {}


class RerankPayload(BaseModel):
    """A rerank request: one query scored against each document, as a cross-encoder
    scores (query, document) pairs. One query per request is what rerank APIs take
    and what lets a worker batch the pairs; a client with pairs of several queries
    sends one request per query. The END reply's output holds one float per
    document, in the documents' order."""

    model_config = ConfigDict(extra="ignore")

    query: str
    documents: list[str]
    llm_config: dict[str, Any] = {}

"""AWS Bedrock runtime (``InvokeModel`` and ``InvokeModelWithResponseStream``) for boto3 to call.

The body of ``anthropic.*`` models is the Anthropic Messages body, answered
by the same rules as :mod:`tests.stubs.anthropic_stub`. Streams use AWS's
binary event-stream framing (``application/vnd.amazon.eventstream``): each
frame has a prelude (total and header lengths, CRC32), typed headers
(``:event-type: chunk``...), a JSON payload ``{"bytes": base64(event)}`` and
a CRC32 of the whole, so boto3's real decoder reads it. Errors are AWS JSON
errors: ``x-amzn-ErrorType`` names the exception, the body holds ``message``.
The request's SigV4 ``Authorization`` must carry the expected access key id.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from tests.stubs.anthropic_stub import answer, tool_use_events, tool_use_for
from tests.stubs.server import Received, Reply, StubServer, json_reply

MODELS = ("anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic.claude-3-haiku-20240307-v1:0")
_FORCED = {
    429: ("ThrottlingException", "Too many requests, please wait before trying again."),
    500: ("InternalServerException", "The server encountered an internal error."),
    503: ("ServiceUnavailableException", "Service is currently unavailable."),
}


def aws_error(status: int, kind: str, message: str) -> Reply:
    return json_reply(
        status,
        {"message": message},
        {"x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"},
    )


def _header(name: str, value: str) -> bytes:
    raw_name, raw_value = name.encode(), value.encode()
    return (
        struct.pack("!B", len(raw_name))
        + raw_name
        + struct.pack("!BH", 7, len(raw_value))
        + raw_value
    )


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude, prelude CRC, headers, payload, message CRC."""
    head = b"".join(_header(k, v) for k, v in headers.items())
    total = 12 + len(head) + len(payload) + 4
    prelude = struct.pack("!II", total, len(head))
    prelude += struct.pack("!I", binascii.crc32(prelude) & 0xFFFFFFFF)
    message = prelude + head + payload
    return message + struct.pack("!I", binascii.crc32(message) & 0xFFFFFFFF)


def chunk_frame(event: dict[str, Any]) -> bytes:
    payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
    headers = {
        ":event-type": "chunk",
        ":content-type": "application/json",
        ":message-type": "event",
    }
    return event_frame(headers, payload.encode())


def exception_frame(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return event_frame(headers, json.dumps({"message": message}).encode())


class BedrockStub(StubServer):
    def __init__(self, access_key: str, *, chunk_delay: float = 0.0) -> None:
        super().__init__()
        self.access_key = access_key
        self.chunk_delay = chunk_delay

    def forced_reply(self, status: int) -> Reply:
        kind, message = _FORCED.get(status, ("InternalServerException", f"stub error {status}"))
        return aws_error(status, kind, message)

    def answer(self, request: Received) -> Reply:
        if f"Credential={self.access_key}/" not in request.headers.get("authorization", ""):
            self.received.append(request)
            return aws_error(
                403,
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        return super().answer(request)

    def reply(self, request: Received) -> Reply:
        parts = request.path.split("/")
        if request.method != "POST" or len(parts) != 4 or parts[1] != "model":
            return aws_error(404, "UnknownOperationException", "Unknown operation")
        model, action = unquote(parts[2]), parts[3]
        if model not in MODELS:
            return aws_error(
                400, "ValidationException", "The provided model identifier is invalid."
            )
        body = request.json()
        if body.get("anthropic_version") != "bedrock-2023-05-31":
            return aws_error(400, "ValidationException", "invalid anthropic_version")
        if "model" in body:
            return aws_error(
                400,
                "ValidationException",
                "Malformed input request: extraneous key [model] is not permitted",
            )
        if "TOO_LONG" in json.dumps(body["messages"]):
            return aws_error(400, "ValidationException", "Input is too long for requested model.")
        text, stop_reason, prompt = answer(body)
        tool_use = tool_use_for(body) if body.get("tools") else None
        if action == "invoke":
            content: list[dict[str, Any]] = [{"type": "text", "text": text}]
            if tool_use is not None:
                content, stop_reason = [tool_use], "tool_use"
            message = {
                "id": "msg_bdrk_stub",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": content,
                "stop_reason": stop_reason,
                "stop_sequence": None,
                "usage": {"input_tokens": prompt, "output_tokens": len(text.split())},
            }
            return json_reply(200, message)
        if action == "invoke-with-response-stream":
            return Reply(
                200,
                self._frames(model, text, stop_reason, prompt, "FAIL_MID_STREAM" in text, tool_use),
                {"content-type": "application/vnd.amazon.eventstream"},
                self.chunk_delay,
            )
        return aws_error(404, "UnknownOperationException", f"Unknown operation {action}")

    def _frames(
        self,
        model: str,
        text: str,
        stop_reason: str,
        prompt: int,
        fail: bool,
        tool_use: dict[str, Any] | None = None,
    ) -> Iterator[bytes]:
        """The stream of events; with ``tool_use``, that block alone (as ``invoke``
        answers it), its input in pieces."""
        start = {
            "id": "msg_bdrk_stub",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1},
        }
        yield chunk_frame({"type": "message_start", "message": start})
        if tool_use is not None:
            for event in tool_use_events(tool_use, 0):
                yield chunk_frame(event)
            text, stop_reason = "", "tool_use"
        else:
            yield chunk_frame(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
        words = text.split(" ") if tool_use is None else []
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            yield chunk_frame(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                }
            )
            if fail:
                yield exception_frame("modelStreamErrorException", "Model stream failed midway.")
                return
        if tool_use is None:
            yield chunk_frame({"type": "content_block_stop", "index": 0})
        yield chunk_frame(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": {"output_tokens": len(text.split())},
            }
        )
        metrics = {
            "inputTokenCount": prompt,
            "outputTokenCount": len(text.split()),
            "invocationLatency": 1,
            "firstByteLatency": 1,
        }
        yield chunk_frame({"type": "message_stop", "amazon-bedrock-invocationMetrics": metrics})

"""Volcengine TTS (``POST /api/v1/tts``) and Azure Speech TTS (``POST /cognitiveservices/v1``).

Both "synthesize" deterministic bytes, so tests can check what reached the
vendor by decoding the audio: Volcengine answers ``<encoding>|<voice_type>|<text>``
base64 in ``data`` with ``code: 3000``; Azure answers
``<output format>|<voice>|<text>`` after parsing the SSML body. Forced
failures send ``retry-after-ms: 1`` the way a vendor's Retry-After would.
Azure sends its audio chunked in ``pieces`` parts when that is set, holding
all but the first until ``gate`` (a threading.Event) is set, if there is one.
"""

from __future__ import annotations

import base64
import json
import threading
import xml.etree.ElementTree as ET

from tests.stubs.server import Received, Reply, StubServer, gated, json_reply

_SSML = "{http://www.w3.org/2001/10/synthesis}"


class VolcengineStub(StubServer):
    def __init__(self, token: str, app_id: str) -> None:
        super().__init__()
        self.token, self.app_id = token, app_id

    def forced_reply(self, status: int) -> Reply:
        body = {"reqid": "", "code": 3005 if status >= 500 else 3003, "message": "server busy"}
        return json_reply(status, body, {"retry-after-ms": "1"})

    def reply(self, request: Received) -> Reply:
        if request.method != "POST" or request.path != "/api/v1/tts":
            return json_reply(404, {"code": 3001, "message": "not found"})
        body = request.json()
        reqid = body["request"]["reqid"]
        if (
            request.headers.get("authorization") != f"Bearer;{self.token}"
            or body["app"]["token"] != self.token
        ):
            message = "authenticate request: load grant: requested grant not found"
            return json_reply(401, {"reqid": reqid, "code": 3001, "message": message})
        if body["app"]["appid"] != self.app_id or body["app"]["cluster"] != "volcano_tts":
            return json_reply(
                400, {"reqid": reqid, "code": 3001, "message": "invalid appid or cluster"}
            )
        text = body["request"]["text"]
        if len(text) > 1024:
            return json_reply(200, {"reqid": reqid, "code": 3010, "message": "text too long"})
        audio = f"{body['audio']['encoding']}|{body['audio']['voice_type']}|{text}".encode()
        answer = {
            "reqid": reqid,
            "code": 3000,
            "operation": "query",
            "message": "Success",
            "sequence": -1,
            "data": base64.b64encode(audio).decode(),
            "addition": {"duration": "1000"},
        }
        return json_reply(200, answer)


class AzureSpeechStub(StubServer):
    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.pieces = 0
        self.gate: threading.Event | None = None

    def forced_reply(self, status: int) -> Reply:
        return Reply(status, b"", {"retry-after-ms": "1"})

    def answer(self, request: Received) -> Reply:
        if request.headers.get("ocp-apim-subscription-key") != self.key:
            self.received.append(request)
            message = (
                "Access denied due to invalid subscription key or wrong API endpoint. Make "
                "sure to provide a valid key for an active subscription and use a correct "
                "regional API endpoint for your resource."
            )
            return json_reply(401, {"error": {"code": "401", "message": message}})
        return super().answer(request)

    def reply(self, request: Received) -> Reply:
        if request.method != "POST" or request.path != "/cognitiveservices/v1":
            return Reply(404, b"")
        if request.headers.get("content-type") != "application/ssml+xml":
            return Reply(415, b"")
        output = request.headers.get("x-microsoft-outputformat", "")
        try:
            root = ET.fromstring(request.body)
        except ET.ParseError:
            return Reply(400, b"")
        voice = root.find(f"{_SSML}voice")
        if root.tag != f"{_SSML}speak" or voice is None:
            return Reply(400, b"")
        text = "".join(voice.itertext())
        audio = f"{output}|{voice.get('name')}|{text}".encode()
        if self.pieces > 1:
            size = -(-len(audio) // self.pieces)
            parts = [audio[i : i + size] for i in range(0, len(audio), size)]
            body = gated(parts, self.gate, 1) if self.gate is not None else parts
            return Reply(200, body, {"content-type": "audio/mpeg"})
        return Reply(200, audio, {"content-type": "audio/mpeg"})


def decode(output: str) -> str:
    return base64.b64decode(output).decode()


def dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False)

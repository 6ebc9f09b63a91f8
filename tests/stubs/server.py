"""The server half every vendor stub shares: stdlib HTTP/1.1 on a thread, replies from a method.

A vendor stub subclasses :class:`StubServer` and implements ``reply``; this
module deals with sockets, keep-alive, chunked streaming with pacing, the
record of what was received, and forced failures (``fail_next(429, 500)``)
so each stub only speaks its vendor's wire format.
"""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass(slots=True)
class Received:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass(slots=True)
class Reply:
    """``body`` bytes are sent whole; an iterable is sent chunked, ``delay`` seconds apart."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def json_reply(status: int, obj: Any, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status, json.dumps(obj).encode(), {"content-type": "application/json", **(headers or {})}
    )


class StubServer:
    """Subclasses implement ``reply(request)``; ``forced_reply(status)`` shapes forced errors."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.fail_always: int | None = None
        self._forced: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- knobs ---------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def request_count(self) -> int:
        return len(self.received)

    @property
    def last(self) -> Received:
        return self.received[-1]

    def fail_next(self, *statuses: int) -> None:
        self._forced.extend(statuses)

    # -- to implement --------------------------------------------------------------------

    def reply(self, request: Received) -> Reply:
        raise NotImplementedError

    def forced_reply(self, status: int) -> Reply:
        return json_reply(status, {"message": f"forced {status}"})

    # -- serving -------------------------------------------------------------------------

    def answer(self, request: Received) -> Reply:
        with self._lock:
            self.received.append(request)
            status = self._forced.popleft() if self._forced else self.fail_always
        if status:
            return self.forced_reply(status)
        return self.reply(request)

    def start(self) -> StubServer:
        stub = self

        class Handler(_Handler):
            server_stub = stub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_stub: StubServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet in tests
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        request = Received(
            self.command,
            parts.path,
            parse_qs(parts.query),
            {k.lower(): v for k, v in self.headers.items()},
            body,
        )
        self._send(self.server_stub.answer(request))

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def _send(self, reply: Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, bytes | bytearray):
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for i, piece in enumerate(reply.body):
                if i and reply.delay:
                    time.sleep(reply.delay)
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):  # the client left mid-stream
            self.close_connection = True


def gated(events: Iterable[bytes], gate: threading.Event, held_from: int) -> Iterator[bytes]:
    """The events before ``held_from`` at once, the rest only after ``gate`` is set
    (or a minute has passed): a vendor stream that waits for the test."""
    for i, event in enumerate(events):
        if i == held_from:
            gate.wait(60)
        yield event


async def first_then_rest(stream: Any, gate: threading.Event) -> tuple[str, list[str]]:
    """The first delta of a client stream whose vendor waits at ``gate``, then the rest.

    The vendor sends the rest only after the client saw the first piece, so a
    backend that buffered the stream would never yield it.
    """
    first, _ = await asyncio.wait_for(stream.__anext__(), 60)
    gate.set()
    return first, [t async for t, _ in stream]

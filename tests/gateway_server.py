"""``byzerllm serve`` for tests: the app on uvicorn in a thread of its own, on a free
port, and the keys the gateway tests share (their fixtures: tests/conftest.py)."""

from __future__ import annotations

import threading
from typing import Any

import uvicorn

from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.gateway import create_app
from tests.redis_server import free_port
from tests.waiting import until_sync

KEY = "sk-gateway-test-0123456789"
STUB_KEY = "sk-stub-0123456789"
ADD_TOOL = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}


class Gateway:
    """The gateway app served by uvicorn in a thread of its own (its own event loop)."""

    def __init__(self, settings: BrokerSettings, master_key: str | None = KEY, **kw: Any):
        self.port = free_port()
        app = create_app(settings, master_key=master_key, **kw)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> Gateway:
        self.thread.start()
        until_sync(
            lambda: self.server.started or not self.thread.is_alive(), "the gateway to listen"
        )
        assert self.server.started, "the gateway did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

"""``byzerllm serve``: an OpenAI-compatible HTTP gateway over the deployed aliases.

Needs the ``serve`` extra (``pip install 'byzerllm[serve]'``)::

    from byzerllm.client.gateway import create_app   # an ASGI app (Starlette)
    app = create_app(master_key="...")               # settings from the environment

See docs/gateway.md.
"""

from __future__ import annotations

from typing import Any

__all__ = ["check_bind", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # imported on use: the CLI checks the bind address without Starlette installed
    if name == "create_app":
        from byzerllm.client.gateway.app import create_app

        return create_app
    if name in ("check_bind", "serve"):
        from byzerllm.client.gateway import server

        return getattr(server, name)
    raise AttributeError(name)

"""Guide samples run as written against real worker processes of the echo backend.

``serve("deepseek_chat", rules=[...])`` starts a ``byzerllm worker`` for the
alias whose echo backend answers by script rules ({"match": regex on the
last user message, "reply": text}), so samples get answers shaped like a
model's: JSON, tool choices, code, marker-delimited rounds. The samples'
``ByzerLLM.from_default_model(...)`` finds Redis through BYZERLLM_REDIS_URL
and BYZERLLM_PREFIX, as a user's environment would.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def guide_env(settings, monkeypatch) -> None:
    monkeypatch.setenv("BYZERLLM_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("BYZERLLM_PREFIX", settings.prefix)


@pytest.fixture
def serve(worker_procs, guide_env, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a worker process for an alias: ``serve("deepseek_chat", rules=[...], "k=v")``."""
    count = 0

    def start(
        alias: str = "deepseek_chat", *params: str, rules: list[dict[str, str]] | None = None
    ):
        nonlocal count
        args = list(params)
        if rules is not None:
            count += 1
            path = tmp_path / f"script-{alias}-{count}.json"
            path.write_text(json.dumps(rules, ensure_ascii=False), "utf-8")
            args.append(f"script={path}")
        return worker_procs.start(alias, *args, concurrency=4)

    yield start

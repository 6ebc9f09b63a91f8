"""Limits hold where they are set, and their errors name the setting."""

from __future__ import annotations

import asyncio

import pytest

from byzerllm import OverloadedError, RequestTooLargeError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.llm import AsyncByzerLLM


async def test_workers_refuse_requests_above_their_own_limit(start_worker, settings, llm):
    small = settings.model_copy(update={"max_request_bytes": 2000})
    await start_worker("echo", settings_=small)
    big = "x" * 5000  # under the client's limit, over the worker's
    with pytest.raises(RequestTooLargeError, match="BYZERLLM_MAX_REQUEST_BYTES where the workers"):
        await llm.chat_oai(big)
    [r] = await llm.chat_oai("small enough")
    assert r.output == "small enough"


async def test_the_overload_error_names_the_setting(start_worker, redis_server):
    settings = BrokerSettings(redis_url=redis_server.url, prefix="limits", max_waiting=2)
    await start_worker("echo", concurrency=1, delay=0.5, chunks=2, settings_=settings)
    client = AsyncByzerLLM(settings=settings, default_model_name="echo")
    results = await asyncio.gather(
        *(client.chat_oai(f"q {i}") for i in range(6)), return_exceptions=True
    )
    refused = [r for r in results if isinstance(r, OverloadedError)]
    assert refused and "BYZERLLM_MAX_WAITING where the alias is deployed" in str(refused[0])
    await client.aclose()

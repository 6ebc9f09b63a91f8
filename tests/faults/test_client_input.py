"""Bad input to the client is a ConfigurationError that names the value and the fix."""

from __future__ import annotations

import datetime

import pytest

from byzerllm import ConfigurationError
from byzerllm.client.llm import AsyncByzerLLM


async def test_llm_config_that_is_not_a_dict(start_worker, llm):
    await start_worker("echo")
    with pytest.raises(ConfigurationError, match=r"llm_config must be a dict.*str 'max_length=5'"):
        await llm.chat_oai("hi", llm_config="max_length=5")


def test_a_request_timeout_that_is_not_seconds(settings):
    with pytest.raises(ConfigurationError, match=r"request_timeout='soon' is not a number"):
        AsyncByzerLLM(settings=settings, request_timeout="soon")


async def test_a_request_timeout_in_llm_config_that_is_not_seconds(start_worker, llm):
    await start_worker("echo")
    with pytest.raises(ConfigurationError, match=r"request_timeout='later'"):
        await llm.chat_oai("hi", llm_config={"request_timeout": "later"})


async def test_a_value_msgpack_cannot_carry(start_worker, llm):
    await start_worker("echo")
    with pytest.raises(ConfigurationError, match=r"cannot be sent.*datetime.*JSON-like"):
        await llm.chat_oai([{"role": "user", "content": "hi", "when": datetime.date.today()}])


async def test_a_lone_surrogate_in_the_text(start_worker, llm):
    await start_worker("echo")
    with pytest.raises(ConfigurationError, match=r"not valid Unicode"):
        await llm.chat_oai("broken \ud800 text")
    [r] = await llm.chat_oai("fine text")  # the client goes on
    assert r.output == "fine text"

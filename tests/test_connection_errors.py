"""Bad Redis settings give errors that name the problem and the fix."""

from __future__ import annotations

import pytest

from byzerllm import BrokerUnavailableError, ConfigurationError, ModelNotFoundError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.llm import AsyncByzerLLM
from tests.redis_server import RedisServer, free_port


async def test_refused_connection_names_url_and_fix():
    url = f"redis://127.0.0.1:{free_port()}/0"
    client = AsyncByzerLLM(url, default_model_name="echo")
    with pytest.raises(BrokerUnavailableError) as info:
        await client.chat_oai("hi")
    assert url in str(info.value)
    assert "BYZERLLM_REDIS_URL" in str(info.value)


async def test_password_never_appears_in_errors():
    url = f"redis://alice:s3cr3t-pw@127.0.0.1:{free_port()}/0"
    client = AsyncByzerLLM(url, default_model_name="echo")
    with pytest.raises(BrokerUnavailableError) as info:
        await client.chat_oai("hi")
    assert "s3cr3t-pw" not in str(info.value)
    assert "alice:****@" in str(info.value)


@pytest.fixture(scope="module")
def guarded_redis():
    """A server that wants a password, as compose.yaml runs it."""
    server = RedisServer("--requirepass", "right-password").start()
    yield server
    server.stop()


@pytest.mark.parametrize("auth", [":wrong@", "nobody:wrong@", ""])
async def test_wrong_password_is_reported_as_credentials(guarded_redis, auth):
    url = f"redis://{auth}127.0.0.1:{guarded_redis.port}/0"
    client = AsyncByzerLLM(url, default_model_name="echo")
    with pytest.raises(BrokerUnavailableError, match="rejected the credentials") as info:
        await client.chat_oai("hi")
    assert "wrong" not in str(info.value)  # the password is masked
    assert "--redis_url" in str(info.value)  # and the fix is named
    await client.aclose()


async def test_right_password_is_accepted(guarded_redis):
    url = f"redis://:right-password@127.0.0.1:{guarded_redis.port}/0"
    client = AsyncByzerLLM(url, default_model_name="echo")
    with pytest.raises(ModelNotFoundError):  # connected and asked: nothing is deployed there
        await client.chat_oai("hi")
    await client.aclose()


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://127.0.0.1:6379", "scheme must be one of"),
        ("redis://127.0.0.1:notaport/0", "bad Redis URL"),
        ("redis:///0", "no host"),
    ],
)
def test_bad_url_is_a_configuration_error(url, expected):
    with pytest.raises(ConfigurationError, match=expected):
        BrokerSettings(redis_url=url)


def test_env_url_is_used(monkeypatch):
    monkeypatch.setenv("BYZERLLM_REDIS_URL", "rediss://user:pw@redis.example:6380/2")
    settings = BrokerSettings.from_env()
    assert settings.redis_url.startswith("rediss://")
    assert settings.safe_url == "rediss://user:****@redis.example:6380/2"


def test_explicit_url_wins_over_env(monkeypatch):
    monkeypatch.setenv("BYZERLLM_REDIS_URL", "redis://a:1/0")
    assert BrokerSettings.from_env("redis://b:2/0").redis_url == "redis://b:2/0"


def test_no_model_configured_says_how_to_set_one():
    client = AsyncByzerLLM("redis://127.0.0.1:1/0")
    with pytest.raises(ConfigurationError, match="setup_default_model_name"):
        client._model(None)

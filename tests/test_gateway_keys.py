"""API keys of the gateway: ``byzerllm keys`` makes them, ``byzerllm serve`` checks them.

Everything is real: the test Redis, ``byzerllm worker`` processes (custom/echo),
the gateway (uvicorn in a thread, or ``byzerllm serve`` processes), the
``byzerllm keys`` command as a process, and the ``openai`` SDK as the client.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

from click.testing import CliRunner  # noqa: E402

from byzerllm.broker.api_keys import day_of, digest_of  # noqa: E402
from byzerllm.broker.keys import Keys  # noqa: E402
from byzerllm.broker.settings import BrokerSettings  # noqa: E402
from byzerllm.cli.main import byzerllm_cli  # noqa: E402
from tests.gateway_server import Gateway as ServedGateway  # noqa: E402
from tests.redis_server import free_port  # noqa: E402
from tests.waiting import until_sync  # noqa: E402

MASTER = "sk-master-for-the-key-tests-0123456789"
CLI = "from byzerllm.cli.main import byzerllm_cli; byzerllm_cli()"


def Gateway(settings: BrokerSettings, master_key: str | None = MASTER) -> ServedGateway:
    """A gateway served in a thread, with these tests' master key by default."""
    return ServedGateway(settings, master_key)


def env_of(settings: BrokerSettings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "BYZERLLM_MASTER_KEY"}
    env.update(
        BYZERLLM_REDIS_URL=settings.redis_url,
        BYZERLLM_PREFIX=settings.prefix,
        PYTHONUNBUFFERED="1",
        COLUMNS="250",  # rich tables on one line per row
        **extra,
    )
    return env


def keys_cli(settings: BrokerSettings, *args: str) -> subprocess.CompletedProcess[str]:
    """``byzerllm keys ARGS`` as a process; fails the test when it fails."""
    done = subprocess.run(
        [sys.executable, "-c", CLI, "keys", *args],
        env=env_of(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def create_key(settings: BrokerSettings, name: str, *options: str) -> str:
    done = keys_cli(settings, "create", "--name", name, *options)
    key = done.stdout.strip()
    assert re.fullmatch(r"sk-byz-[A-Za-z0-9_-]{43}", key), done.stdout
    assert "shown this once" in done.stderr
    return key


def sdk(base_url: str, key: str) -> Any:
    return openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def usage_of(sync_redis: redis.Redis, settings: BrokerSettings, key: str) -> dict[str, int]:
    """Today's usage hash of the key, as Redis holds it."""
    name = Keys(settings.prefix).api_key(digest_of(key)).usage(day_of(time.time()))
    return {k.decode(): int(v) for k, v in sync_redis.hgetall(name).items()}


def _counts(usage: dict[str, int]) -> tuple[int, int, int]:
    """Requests, refusals and output tokens (a word each for the echo backend)."""
    return usage.get("requests", 0), usage.get("rate_limited", 0), usage.get("output_tokens", 0)


def table_row(output: str, first: str) -> list[str]:
    """The cells of the rich table row that starts with ``first``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃|]", line) if c.strip()]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row for {first!r} in:\n{output}")


def everything_in_redis(sync_redis: redis.Redis) -> bytes:
    """Every key name and value in the server, as one blob."""
    parts: list[bytes] = []
    for name in sync_redis.scan_iter(count=1000):
        parts.append(name)
        kind = sync_redis.type(name).decode()
        if kind == "string":
            parts.append(sync_redis.get(name) or b"")
        elif kind == "hash":
            parts += [b for kv in sync_redis.hgetall(name).items() for b in kv]
        elif kind == "set":
            parts += list(sync_redis.smembers(name))
        elif kind == "zset":
            parts += list(sync_redis.zrange(name, 0, -1))
        elif kind == "list":
            parts += list(sync_redis.lrange(name, 0, -1))
        elif kind == "stream":
            for _id, fields in sync_redis.xrange(name):
                parts += [b for kv in fields.items() for b in kv]
    return b"\n".join(parts)


@pytest.fixture
def echo(worker_procs: Any) -> Any:
    return worker_procs.start("echo", concurrency=4)


# -- a key made by the command works, and is kept only as a hash -----------------------


def test_created_key_works_and_is_kept_only_as_a_hash(settings, worker_procs, sync_redis):
    worker_procs.start("echo", concurrency=2)
    worker_procs.start("broken", "fail_with=the vendor is down")
    key = create_key(settings, "team-a", "--aliases", "echo,broken")

    with Gateway(settings) as gw:
        client = sdk(gw.base_url, key)
        whole = client.chat.completions.create(model="echo", messages=user("one two three"))
        assert whole.choices[0].message.content == "one two three"
        chunks = list(
            client.chat.completions.create(
                model="echo",
                messages=user("four five"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
            "four five"
        )
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="broken", messages=user("x"))
        assert failed.value.status_code == 502
        client.close()
        streamed = chunks[-1].usage
        expected = {
            "requests": 3,
            "input_tokens": whole.usage.prompt_tokens + streamed.prompt_tokens,
            "output_tokens": whole.usage.completion_tokens + streamed.completion_tokens,
            "errors": 1,
        }
        assert expected["input_tokens"] == 5 and expected["output_tokens"] == 5
        until_sync(
            lambda: usage_of(sync_redis, settings, key) == expected,
            "the usage of the three requests to be written",
        )

    listing = keys_cli(settings, "list")
    row = table_row(listing.stdout, "team-a")
    assert row[1] == key[:11] + "…" and row[2] == "echo, broken" and row[-1] == "active"
    assert key not in listing.stdout + listing.stderr
    assert key[11:] not in listing.stdout, "only the hint of the key is shown"

    used = keys_cli(settings, "usage", "--name", "team-a")
    assert table_row(used.stdout, "team-a") == [
        "team-a",
        day_of(time.time()),
        "3",
        "5",
        "5",
        "1",
        "0",
    ]

    stored = everything_in_redis(sync_redis)
    assert digest_of(key).encode() in stored, "the scan sees the key's records"
    assert key[7:].encode() not in stored and key[11:].encode() not in stored


# -- refused keys ----------------------------------------------------------------------


def test_revoked_or_unknown_key_gets_401_without_echoing_it(settings, echo):
    key = create_key(settings, "leaver")
    unknown = "sk-byz-" + "A" * 43
    with Gateway(settings) as gw, Gateway(settings, master_key=None) as open_gw:
        client = sdk(gw.base_url, key)
        assert client.chat.completions.create(model="echo", messages=user("hi")).choices
        done = keys_cli(settings, "revoke", "leaver")
        assert "revoked" in done.stderr
        with pytest.raises(openai.AuthenticationError) as revoked:
            client.chat.completions.create(model="echo", messages=user("hi"))
        client.close()
        assert "'leaver' was revoked" in revoked.value.message
        assert revoked.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError) as stranger:
            sdk(gw.base_url, unknown).chat.completions.create(model="echo", messages=user("x"))
        for refused in (revoked, stranger):
            assert key not in refused.value.message and unknown not in refused.value.message
            assert key[7:15] not in str(refused.value.body)

        # without a master key no key is required, but a key that is presented is checked
        with pytest.raises(openai.AuthenticationError):
            sdk(open_gw.base_url, key).chat.completions.create(model="echo", messages=user("x"))
        anonymous = sdk(open_gw.base_url, "anything")
        assert anonymous.chat.completions.create(model="echo", messages=user("ok")).choices
        anonymous.close()

    again = keys_cli(settings, "list")
    assert table_row(again.stdout, "leaver")[-1].startswith("revoked")


def test_key_without_the_alias_gets_403(settings, worker_procs, sync_redis):
    worker_procs.start("echo")
    worker_procs.start("other")
    key = create_key(settings, "only-echo", "--aliases", "echo")
    with Gateway(settings) as gw:
        client = sdk(gw.base_url, key)
        with pytest.raises(openai.PermissionDeniedError) as denied:
            client.chat.completions.create(model="other", messages=user("x"))
        assert denied.value.code == "model_not_allowed"
        assert "'only-echo' may not use the model 'other'" in denied.value.message
        assert [m.id for m in client.models.list()] == ["echo"]
        master = sdk(gw.base_url, MASTER)
        assert sorted(m.id for m in master.models.list()) == ["echo", "other"]
        master.close()
        client.close()
    assert usage_of(sync_redis, settings, key) == {}, "a refused request is not counted"


def test_over_rpm_is_429_with_retry_after(settings, echo, sync_redis):
    key = create_key(settings, "two-a-minute", "--rpm", "2")
    with Gateway(settings) as gw:
        client = sdk(gw.base_url, key)
        for i in range(2):
            client.chat.completions.create(model="echo", messages=user(f"q {i}"))
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="echo", messages=user("q3"))
        client.close()
    err = limited.value
    assert err.code == "rate_limit_exceeded"
    assert "'two-a-minute' reached its limit of 2 requests per minute" in err.message
    retry_after = int(err.response.headers["retry-after"])
    assert 1 <= retry_after <= 60
    assert f"frees up in {retry_after} s" in err.message
    until_sync(
        lambda: _counts(usage_of(sync_redis, settings, key)) == (2, 1, 4),
        "the refusal to be counted",
    )


def test_over_tpm_is_refused_after_the_tokens_are_counted(settings, echo, sync_redis):
    key = create_key(settings, "few-tokens", "--tpm", "10")
    with Gateway(settings) as gw:
        client = sdk(gw.base_url, key)
        # streamed: the tokens come from the stream's tail
        stream = client.chat.completions.create(
            model="echo", messages=user("one two three four five six"), stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        until_sync(
            lambda: usage_of(sync_redis, settings, key).get("output_tokens") == 6,
            "the stream's tokens to be counted",
        )
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="echo", messages=user("more"))
        client.close()
    assert "its limit of 10 tokens per minute" in limited.value.message
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60


# -- limits across replicas, and nothing of a key in the logs --------------------------


def _serve(settings: BrokerSettings, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CLI, "serve", "--port", str(port)],
        env=env_of(settings, BYZERLLM_MASTER_KEY=MASTER),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _answers(url: str) -> bool:
    try:
        return bool(httpx2.get(url, timeout=5).status_code == 200)
    except httpx2.TransportError:
        return False


class Replicas:
    """``byzerllm serve`` processes over one Redis, their output read when they stop."""

    def __init__(self, settings: BrokerSettings, count: int) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.procs = [_serve(settings, port) for port in self.ports]
        self.output: str | None = None

    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.ports]

    def stop(self) -> str:
        if self.output is None:
            for proc in self.procs:
                proc.terminate()
            self.output = "\n".join(proc.communicate(timeout=60)[0] for proc in self.procs)
        return self.output


@pytest.fixture
def replicas(settings: BrokerSettings) -> Iterator[Replicas]:
    started = Replicas(settings, 2)
    try:
        live = [url + "/health/live" for url in started.urls()]
        until_sync(lambda: all(_answers(url) for url in live), "byzerllm serve to listen")
        yield started
    finally:
        started.stop()


def test_limits_hold_across_replicas_and_no_key_reaches_a_log(settings, echo, replicas):
    key = create_key(settings, "shared", "--rpm", "3")
    revoked = create_key(settings, "gone")
    keys_cli(settings, "revoke", "gone")
    prompt = "a-private-prompt-4711"
    a, b = (sdk(url + "/v1", key) for url in replicas.urls())
    for client in (a, b, a):
        reply = client.chat.completions.create(model="echo", messages=user(prompt))
        assert reply.choices[0].message.content == prompt
    for client in (b, a):  # the three requests count on both replicas
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="echo", messages=user(prompt))
    with pytest.raises(openai.AuthenticationError):
        sdk(replicas.urls()[1] + "/v1", revoked).chat.completions.create(
            model="echo", messages=user(prompt)
        )
    a.close()
    b.close()

    output = replicas.stop()
    assert output.count("POST /v1/chat/completions") == 6, "the access logs are on: read"
    for secret in (key, revoked, key[7:15], revoked[7:15], prompt):
        assert secret not in output


# -- the command's answers to bad input --------------------------------------------------


def _invoke(settings: BrokerSettings, *args: str) -> Any:
    env = {"BYZERLLM_REDIS_URL": settings.redis_url, "BYZERLLM_PREFIX": settings.prefix}
    return CliRunner().invoke(byzerllm_cli, ["keys", *args], env=env)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "--name", "x", "--rpm", "-1"], "rpm must be 0 (no limit)"),
        (["create", "--name", "x", "--tpm", "-5"], "got -5"),
        (["create", "--name", " "], "the key name is empty"),
        (["create", "--name", "two words"], "bad key name 'two words'"),
        (["create", "--name", "x", "--aliases", "a b"], "bad model alias 'a b'"),
        (["revoke", "ghost"], "no API key is named 'ghost'; known names: taken"),
        (["usage", "--name", "ghost"], "no API key is named 'ghost'"),
        (["usage", "--days", "0"], "days must be 1 or more, got 0"),
        (["delete", "ghost"], "no API key is named 'ghost'; known names: taken"),
        (["delete", "taken"], "the API key 'taken' is active; revoke it first"),
        (["create", "--name", "taken"], "an API key named 'taken' exists already"),
    ],
)
def test_bad_input_is_named_with_the_fix(settings, args, message):
    assert _invoke(settings, "create", "--name", "taken").exit_code == 0
    result = _invoke(settings, *args)
    assert result.exit_code != 0
    assert message in result.output, result.output


def test_a_deleted_key_leaves_nothing_in_redis_and_frees_its_name(settings, sync_redis):
    key = create_key(settings, "temp")
    digest = digest_of(key).encode()
    ak = Keys(settings.prefix).api_key(digest_of(key))
    for day in (time.time(), time.time() - 86400 * 300):  # today's usage, and an old day's
        sync_redis.hset(ak.usage(day_of(day)), "requests", 3)
    assert digest in everything_in_redis(sync_redis)
    keys_cli(settings, "revoke", "temp")
    done = keys_cli(settings, "delete", "temp")
    assert "API key 'temp' deleted" in done.stderr
    assert digest not in everything_in_redis(sync_redis), "no record, usage or name is left"
    assert "temp" not in keys_cli(settings, "list").stdout
    assert create_key(settings, "temp") != key, "the name is free for a new key"


# -- the limits' window, at chosen times ------------------------------------------------


@pytest.fixture
async def store(settings: BrokerSettings) -> Any:
    from byzerllm.broker.api_keys import ApiKeys
    from byzerllm.broker.connection import connect

    client = await connect(settings)
    yield ApiKeys(client, Keys(settings.prefix))
    await client.aclose()


async def test_the_window_slides_by_the_second_across_minutes(store):
    key, _ = await store.create("sliding", rpm=2, tpm=100)
    digest = digest_of(key)
    start = 60 * 29_000_000 + 50  # second 50 of a minute
    assert (await store.admit(digest, "echo", now=start)).outcome == "admitted"
    assert (await store.admit(digest, "echo", now=start + 5)).outcome == "admitted"
    # the next minute has begun, but both requests are within the last 60 s
    refused = await store.admit(digest, "echo", now=start + 30)
    assert (refused.outcome, refused.limit_kind, refused.limit) == ("limited", "rpm", 2)
    assert refused.retry_after == 30, "the first request leaves the window at start + 60"
    assert (await store.admit(digest, "echo", now=start + 60)).outcome == "admitted"
    refused = await store.admit(digest, "echo", now=start + 61)
    assert refused.retry_after == 4, "then the second leaves it, at start + 65"

    await store.record(
        digest, input_tokens=70, output_tokens=30, error=False, count_tokens=True, now=start + 70
    )
    by_tokens = await store.admit(digest, "echo", now=start + 125)
    assert (by_tokens.limit_kind, by_tokens.retry_after) == ("tpm", 5)
    assert (await store.admit(digest, "echo", now=start + 130)).outcome == "admitted"


async def test_concurrent_requests_get_exactly_the_limit(store):
    key, _ = await store.create("burst", rpm=5)
    verdicts = await asyncio.gather(*(store.admit(digest_of(key), "echo") for _ in range(40)))
    assert sorted(v.outcome for v in verdicts).count("admitted") == 5
    assert all(v.outcome in ("admitted", "limited") for v in verdicts)

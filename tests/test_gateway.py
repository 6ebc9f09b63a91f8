"""``byzerllm serve``: OpenAI's HTTP API over the aliases, driven by real clients.

The gateway runs for real (uvicorn on a free port, in a thread, or the
``byzerllm serve`` command as a process) against the test Redis and real
workers: ``custom/echo``, and ``saas/openai`` in front of the OpenAI stub
where a vendor's native features (tool calls, reasoning, response_format)
are needed. Clients are the ``openai`` SDK (sync and async) and plain HTTP.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")

from byzerllm.broker.settings import BrokerSettings  # noqa: E402
from tests.gateway_server import ADD_TOOL, KEY, STUB_KEY, Gateway  # noqa: E402
from tests.openai_stub import OpenAIStub  # noqa: E402
from tests.redis_server import free_port  # noqa: E402
from tests.waiting import until, until_sync  # noqa: E402


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    with OpenAIStub(api_key=STUB_KEY) as server:
        yield server


async def gpt(start_worker: Any, stub: OpenAIStub, alias: str = "gpt", model: str = "gpt-4o"):
    return await start_worker(
        alias,
        model_type="saas/openai",
        **{"saas.base_url": stub.base_url, "saas.api_key": STUB_KEY, "saas.model": model},
    )


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return dict(body["error"])


# -- the openai SDK -------------------------------------------------------------------


def test_sync_sdk_chat_stream_and_models(settings, worker_procs, gateway):
    worker_procs.start("echo", "prefix=echo: ", concurrency=2)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    try:
        reply = client.chat.completions.create(model="echo", messages=user("hello gateway"))
        choice = reply.choices[0]
        assert choice.message.role == "assistant"
        assert choice.message.content == "echo: hello gateway"
        assert choice.finish_reason == "stop"
        assert reply.model == "echo" and reply.object == "chat.completion"
        assert reply.id.startswith("chatcmpl-")
        assert reply.usage.prompt_tokens == 2 and reply.usage.completion_tokens > 0

        chunks = list(
            client.chat.completions.create(
                model="echo",
                messages=user("one two three four"),
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "echo: one two three four"
        assert chunks[0].choices[0].delta.role == "assistant"
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 4
        assert len({c.id for c in chunks}) == 1

        assert [m.id for m in client.models.list()] == ["echo"]
        assert client.models.retrieve("echo").owned_by == "byzerllm"
    finally:
        client.close()


async def test_async_sdk_streams_as_the_worker_generates(start_worker, aclient):
    await start_worker("words", chunks=4)
    stream = await aclient.chat.completions.create(
        model="words", messages=user("abcdefgh"), stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices]
    assert "".join(p or "" for p in pieces) == "abcdefgh"
    assert pieces[0] == "", "the first event carries the role"


async def test_content_parts_and_the_developer_role(start_worker, aclient):
    await start_worker("echo")
    reply = await aclient.chat.completions.create(
        model="echo",
        messages=[
            {"role": "developer", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "parts work"}]},
        ],
    )
    assert reply.choices[0].message.content == "parts work"


async def test_sampling_settings_reach_the_vendor(start_worker, stub, aclient):
    await gpt(start_worker, stub)
    reply = await aclient.chat.completions.create(
        model="gpt",
        messages=user("one two three four five"),
        max_tokens=2,
        temperature=0.3,
        top_p=0.9,
        seed=7,
        stop=["END"],
        presence_penalty=0.5,
    )
    assert reply.choices[0].message.content == "one two"
    assert reply.choices[0].finish_reason == "length"
    sent = stub.last_request
    assert sent["model"] == "gpt-4o", "the alias' own model name goes to the vendor"
    assert sent["max_tokens"] == 2 and sent["temperature"] == 0.3 and sent["top_p"] == 0.9
    assert sent["stop"] == ["END"] and sent["seed"] == 7 and sent["presence_penalty"] == 0.5

    await aclient.chat.completions.create(
        model="gpt", messages=user("a b c"), max_completion_tokens=1
    )
    assert stub.last_request["max_tokens"] == 1


async def test_stop_and_max_tokens_reach_the_echo_backend(start_worker, aclient):
    await start_worker("echo")
    reply = await aclient.chat.completions.create(
        model="echo", messages=user("keep this STOP not this"), stop="STOP"
    )
    assert reply.choices[0].message.content == "keep this "
    reply = await aclient.chat.completions.create(
        model="echo", messages=user("abcdefgh"), max_tokens=3
    )
    assert reply.choices[0].message.content == "abc"  # echo counts characters


async def test_reasoning_content_in_messages_and_deltas(start_worker, stub, aclient):
    await gpt(start_worker, stub, "thinker", model="deepseek-reasoner")
    reply = await aclient.chat.completions.create(model="thinker", messages=user("why"))
    message = reply.choices[0].message
    assert message.content == "why"
    assert message.reasoning_content == "The user said: why"

    stream = await aclient.chat.completions.create(
        model="thinker", messages=user("why not"), stream=True
    )
    thinking, text = "", ""
    async for chunk in stream:
        if chunk.choices:
            delta = chunk.choices[0].delta
            thinking += getattr(delta, "reasoning_content", None) or ""
            text += delta.content or ""
    assert thinking == "The user said: why not" and text == "why not"


async def test_native_tool_calls_whole_and_streamed(start_worker, stub, aclient):
    await gpt(start_worker, stub)
    question = user('please add {"a": 2, "b": 3}')
    reply = await aclient.chat.completions.create(model="gpt", messages=question, tools=[ADD_TOOL])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.id == "call_stub1" and call.type == "function"
    assert call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 2, "b": 3}
    sent = stub.last_request
    assert sent["tools"] == [ADD_TOOL], "the schema goes to the vendor as it came"
    assert sent["messages"] == question, "no tool description stuffed into the prompt"

    stream = await aclient.chat.completions.create(
        model="gpt",
        messages=user("what now?"),
        tools=[ADD_TOOL],
        tool_choice={"type": "function", "function": {"name": "add"}},
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict[str, str]] = {}
    finish, usage = None, None
    async for chunk in stream:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += delta.id or ""
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
    assert stub.last_request["tool_choice"] == {"type": "function", "function": {"name": "add"}}
    assert calls == {0: {"id": "call_stub1", "name": "add", "arguments": "{}"}}
    assert finish == "tool_calls" and usage is not None


async def test_tools_described_in_the_prompt_for_other_backends(start_worker, aclient):
    """echo cannot call tools: it reads them in its prompt and answers the JSON choice."""
    choice_text = json.dumps(
        {"tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}]}
    )
    await start_worker("local", reply=f"```json\n{choice_text}\n```")
    reply = await aclient.chat.completions.create(
        model="local", messages=user("add one and two"), tools=[ADD_TOOL]
    )
    [call] = reply.choices[0].message.tool_calls
    assert call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 1, "b": 2}
    assert call.id.startswith("call_")
    assert reply.choices[0].finish_reason == "tool_calls"


async def test_response_format_json(start_worker, stub, aclient):
    await start_worker("chatty", reply='Sure!\n```json\n{"city": "Paris"}\n```\nAnything else?')
    reply = await aclient.chat.completions.create(
        model="chatty",
        messages=user("capital of France as JSON"),
        response_format={"type": "json_object"},
    )
    assert json.loads(reply.choices[0].message.content) == {"city": "Paris"}

    stream = await aclient.chat.completions.create(
        model="chatty",
        messages=user("capital of France as JSON"),
        response_format={"type": "json_object"},
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert json.loads(text) == {"city": "Paris"}

    await gpt(start_worker, stub)
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "city",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    await aclient.chat.completions.create(
        model="gpt", messages=user("capital of France"), response_format=schema
    )
    assert stub.last_request["response_format"] == schema, "OpenAI enforces it natively"
    assert stub.last_request["messages"] == user("capital of France")


async def test_legacy_completions(start_worker, aclient):
    await start_worker("echo", prefix="> ")
    reply = await aclient.completions.create(model="echo", prompt="say this")
    assert reply.choices[0].text == "> say this"
    assert reply.object == "text_completion" and reply.choices[0].finish_reason == "stop"
    stream = await aclient.completions.create(model="echo", prompt="say that", stream=True)
    assert "".join([c.choices[0].text async for c in stream if c.choices]) == "> say that"
    reply = await aclient.completions.create(model="echo", prompt=["one", "two"], echo=True)
    assert [c.text for c in reply.choices] == ["one> one", "two> two"]


async def test_embeddings_floats_and_base64(start_worker, llm, aclient):
    await start_worker("echo", dim=8)
    texts = ["first text", "second"]
    expected = [r.output for r in await llm.emb("echo", texts)]
    # the SDK asks for base64 float32 unless told otherwise
    reply = await aclient.embeddings.create(model="echo", input=texts)
    assert [d.index for d in reply.data] == [0, 1]
    for got, want in zip(reply.data, expected, strict=True):
        assert got.embedding == pytest.approx(want, rel=1e-6)
    reply = await aclient.embeddings.create(
        model="echo", input="first text", encoding_format="float"
    )
    assert reply.data[0].embedding == expected[0]
    assert reply.usage.prompt_tokens == 2 and reply.model == "echo"


async def test_models_lists_aliases_with_live_workers(start_worker, settings, aclient):
    await start_worker("b_alias")
    worker = await start_worker("a_alias")
    assert [m.id async for m in aclient.models.list()] == ["a_alias", "b_alias"]
    worker.stop()

    async def listed() -> list[str]:
        return [m.id async for m in aclient.models.list()]

    await until(lambda: _eq(listed(), ["b_alias"]), "a_alias to leave the list")
    with pytest.raises(openai.NotFoundError):
        await aclient.models.retrieve("a_alias")


async def _eq(value: Any, expected: Any) -> bool:
    return await value == expected


# -- health -------------------------------------------------------------------------


async def test_health_live_and_ready(gateway):
    async with httpx2.AsyncClient() as client:  # no key: probes are not authenticated
        live = await client.get(gateway.url("/health/live"))
        ready = await client.get(gateway.url("/health/ready"))
    assert live.status_code == 200 and ready.status_code == 200
    assert ready.json() == {"status": "ready"}


def test_ready_is_503_while_redis_is_unreachable():
    dead = BrokerSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", prefix="nowhere")
    with Gateway(dead) as gw, httpx2.Client() as client:
        assert client.get(gw.url("/health/live")).status_code == 200
        ready = client.get(gw.url("/health/ready"))
        assert ready.status_code == 503
        assert "127.0.0.1" in error_of(ready)["message"]


# -- errors, in OpenAI's shape ---------------------------------------------------------


async def test_malformed_and_invalid_bodies_name_the_parameter(start_worker, http):
    await start_worker("echo")
    chat = "/v1/chat/completions"
    bad = await http.post(chat, content=b'{"model": "echo", "messages": [', headers=_json())
    assert bad.status_code == 400
    assert "not valid JSON" in error_of(bad)["message"]

    missing = await http.post(chat, json={"model": "echo"})
    assert missing.status_code == 400
    err = error_of(missing)
    assert err["param"] == "messages" and '"role": "user"' in err["message"]

    hot = await http.post(chat, json={"model": "echo", "messages": user("x"), "temperature": "hot"})
    assert hot.status_code == 400 and error_of(hot)["param"] == "temperature"

    role = await http.post(chat, json={"model": "echo", "messages": [{"role": "wizard"}]})
    assert role.status_code == 400 and error_of(role)["param"] == "messages[0].role"

    two = await http.post(chat, json={"model": "echo", "messages": user("x"), "n": 2})
    assert two.status_code == 400
    err = error_of(two)
    assert err["param"] == "n" and "n=1" in err["message"]

    empty = await http.post("/v1/embeddings", json={"model": "echo", "input": []})
    assert empty.status_code == 400 and error_of(empty)["param"] == "input"

    nowhere = await http.post("/v1/nothing", json={})
    assert nowhere.status_code == 404 and error_of(nowhere)["code"] == "not_found"


def test_oversized_body_is_413_before_it_is_read(redis_server, settings):
    small = BrokerSettings(
        redis_url=redis_server.url, prefix=settings.prefix, max_request_bytes=1000
    )
    body = {"model": "echo", "messages": user("x" * 2000)}
    headers = {"Authorization": f"Bearer {KEY}"}
    with Gateway(small) as gw, httpx2.Client(headers=headers) as client:
        reply = client.post(gw.url("/v1/chat/completions"), json=body)
    assert reply.status_code == 413
    err = error_of(reply)
    assert err["code"] == "request_too_large" and "BYZERLLM_MAX_REQUEST_BYTES" in err["message"]


async def test_unknown_alias_is_404(start_worker, http):
    await start_worker("echo")
    for path, body in (
        ("/v1/chat/completions", {"messages": user("x")}),
        ("/v1/completions", {"prompt": "x"}),
        ("/v1/embeddings", {"input": "x"}),
    ):
        reply = await http.post(path, json={"model": "no_such_alias", **body})
        assert reply.status_code == 404, path
        err = error_of(reply)
        assert err["code"] == "model_not_found" and err["param"] == "model"
        assert "'no_such_alias'" in err["message"]
    streamed = await http.post(
        "/v1/chat/completions",
        json={"model": "no_such_alias", "messages": user("x"), "stream": True},
    )
    assert streamed.status_code == 404, "a stream that cannot start gets its status too"


async def test_wrong_or_missing_key_is_401(start_worker, gateway):
    await start_worker("echo")
    async with httpx2.AsyncClient(base_url=gateway.url("")) as client:
        body = {"model": "echo", "messages": user("x")}
        none = await client.post("/v1/chat/completions", json=body)
        wrong = await client.post(
            "/v1/chat/completions", json=body, headers={"Authorization": "Bearer sk-wrong"}
        )
        models = await client.get("/v1/models")
    for reply in (none, wrong, models):
        assert reply.status_code == 401
        assert error_of(reply)["code"] == "invalid_api_key"
    sdk = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await sdk.chat.completions.create(model="echo", messages=user("x"))
    await sdk.close()


async def test_no_live_worker_is_503(start_worker, aclient, sync_redis, keys):
    worker = await start_worker("lonely")
    worker.stop()
    alive = keys.alias("lonely").alive
    await until(lambda: sync_redis.zscore(alive, worker.worker_id) is None, "sign off")
    with pytest.raises(openai.InternalServerError) as caught:
        await aclient.chat.completions.create(model="lonely", messages=user("x"))
    assert caught.value.status_code == 503
    assert caught.value.response.headers["retry-after"] == "1"
    assert "'lonely'" in caught.value.message


async def test_overload_is_429_with_retry_after(start_worker, redis_server, settings, aclient):
    tight = BrokerSettings(redis_url=redis_server.url, prefix=settings.prefix, max_waiting=1)
    await start_worker("busy", concurrency=1, chunks=2, delay=0.5, settings_=tight)
    results = await asyncio.gather(
        *(aclient.chat.completions.create(model="busy", messages=user(f"q {i}")) for i in range(8)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, openai.RateLimitError)]
    answered = [r for r in results if not isinstance(r, BaseException)]
    assert refused and answered and len(refused) + len(answered) == 8
    assert refused[0].response.headers["retry-after"] == "1"
    assert "'busy'" in refused[0].message


async def test_deadline_is_504(start_worker, settings):
    await start_worker("slow", first_token_delay=3600)
    with Gateway(settings, request_timeout=0.5) as gw:
        client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=KEY, max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model="slow", messages=user("x"))
        await client.close()
    assert caught.value.status_code == 504
    assert "deadline" in caught.value.message


# -- a client that leaves cancels its request on the worker ------------------------------


async def test_leaving_a_stream_cancels_the_request_on_the_worker(start_worker, llm, aclient):
    # 1000 pieces 0.2 s apart: 200 s if it ran to the end, beyond every wait below
    await start_worker("slow", concurrency=2, chunks=1000, delay=0.2)
    stream = await aclient.chat.completions.create(
        model="slow", messages=user("x" * 2000), stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            break
    assert await until(lambda: _free_slots(llm, "slow", 1), "the request to hold a slot")
    await stream.close()
    assert await until(lambda: _free_slots(llm, "slow", 2), "the slot to come back")


async def test_leaving_a_whole_answer_cancels_it_too(start_worker, llm, gateway):
    await start_worker("slow", concurrency=2, first_token_delay=3600)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as client:
        call = asyncio.ensure_future(
            client.post(
                gateway.url("/v1/chat/completions"),
                json={"model": "slow", "messages": user("x")},
                timeout=3600,
            )
        )
        assert await until(lambda: _free_slots(llm, "slow", 1), "the request to hold a slot")
        call.cancel()  # the HTTP client gives up and closes its connection
        await asyncio.gather(call, return_exceptions=True)
    assert await until(lambda: _free_slots(llm, "slow", 2), "the slot to come back")


async def _free_slots(llm: Any, alias: str, expected: int) -> bool:
    stat = await llm.stat(alias)
    return stat is not None and stat["state"] == [expected]


# -- the command ---------------------------------------------------------------------


def _serve(worker_procs: Any, *args: str, key: str | None) -> subprocess.Popen[str]:
    env = {k: v for k, v in worker_procs.env().items() if k != "BYZERLLM_MASTER_KEY"}
    if key is not None:
        env["BYZERLLM_MASTER_KEY"] = key
    code = "from byzerllm.cli.main import byzerllm_cli; byzerllm_cli()"
    return subprocess.Popen(
        [sys.executable, "-c", code, "serve", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_non_loopback_bind_without_master_key_is_refused(worker_procs):
    proc = _serve(worker_procs, "--host", "0.0.0.0", "--port", str(free_port()), key=None)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "refusing to listen on 0.0.0.0" in output and "BYZERLLM_MASTER_KEY" in output


def test_serve_command_with_master_key_logs_no_key_or_prompt(worker_procs):
    worker_procs.start("echo")
    port = free_port()
    secret_prompt = "my-very-private-prompt-4711"
    wrong_key = "sk-wrong-key-0815"
    proc = _serve(worker_procs, "--host", "0.0.0.0", "--port", str(port), key=KEY)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx2.Client(base_url=base, timeout=60) as http:
            until_sync(lambda: _answers(http, "/health/live"), "byzerllm serve to listen")
            sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=KEY, max_retries=0)
            reply = sdk.chat.completions.create(model="echo", messages=user(secret_prompt))
            assert reply.choices[0].message.content == secret_prompt
            sdk.close()
            denied = http.post(
                "/v1/chat/completions",
                json={"model": "echo", "messages": user(secret_prompt)},
                headers={"Authorization": f"Bearer {wrong_key}"},
            )
            assert denied.status_code == 401
            broken = http.post(
                "/v1/chat/completions",
                content=f'{{"model": "echo", "messages": "{secret_prompt}"',
                headers={"Authorization": f"Bearer {KEY}", **_json()},
            )
            assert broken.status_code == 400
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
    assert "POST /v1/chat/completions" in output, "the access log is on: the test sees it"
    for secret in (KEY, wrong_key, secret_prompt):
        assert secret not in output


def _answers(http: Any, path: str) -> bool:
    try:
        return bool(http.get(path).status_code == 200)
    except httpx2.TransportError:
        return False


def _json() -> dict[str, str]:
    return {"Content-Type": "application/json"}

"""Per-alias metrics: recorded by real workers into Redis, read back and scraped.

Real ``byzerllm worker`` processes (``custom/echo``) serve real requests from
the asyncio client; the figures are read with :func:`read_metrics`, scraped
from real gateways (two replicas over one Redis) and from the real
``byzerllm metrics`` command, and parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
httpx2 = pytest.importorskip("httpx2")
parser = pytest.importorskip("prometheus_client.parser")

from byzerllm.broker.connection import connect  # noqa: E402
from byzerllm.broker.errors import BackendError  # noqa: E402
from byzerllm.broker.keys import Keys  # noqa: E402
from byzerllm.broker.messages import FIELD, Request, RequestKind, encode_request  # noqa: E402
from byzerllm.broker.metrics import (  # noqa: E402
    FIRST_TOKEN_BUCKETS,
    LATENCY_BUCKETS,
    AliasMetrics,
    Histogram,
    MetricsRecorder,
    read_metrics,
)
from byzerllm.broker.settings import BrokerSettings  # noqa: E402
from tests.gateway_server import Gateway as ServedGateway  # noqa: E402
from tests.redis_server import free_port  # noqa: E402
from tests.waiting import until, until_sync  # noqa: E402

KEY = "sk-metrics-test-0123456789"
FAMILIES = {
    "byzerllm_requests": "counter",
    "byzerllm_request_latency_seconds": "histogram",
    "byzerllm_first_token_seconds": "histogram",
    "byzerllm_tokens": "counter",
    "byzerllm_retries": "counter",
    "byzerllm_dead_letters": "counter",
    "byzerllm_queue_depth": "gauge",
    "byzerllm_in_flight": "gauge",
    "byzerllm_live_workers": "gauge",
}


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@pytest.fixture
async def aredis(settings: BrokerSettings) -> AsyncIterator[Any]:
    client = await connect(settings)
    yield client
    await client.aclose()


async def metrics_of(aredis: Any, keys: Keys, alias: str) -> AliasMetrics:
    [found] = await read_metrics(aredis, keys, [alias])
    return found


async def wait_metrics(aredis: Any, keys: Keys, alias: str, what: str, test: Any) -> AliasMetrics:
    """The alias' figures once ``test(figures)`` holds."""

    async def check() -> AliasMetrics | None:
        found = await metrics_of(aredis, keys, alias)
        return found if test(found) else None

    result: AliasMetrics = await until(check, f"{alias}: {what}")
    return result


async def start(worker_procs: Any, alias: str, *params: str, concurrency: int = 1) -> Any:
    """A worker process, started without blocking the test's event loop."""
    return await asyncio.to_thread(worker_procs.start, alias, *params, concurrency=concurrency)


# -- what the workers record -------------------------------------------------------------


async def test_outcomes_tokens_and_histograms(settings, worker_procs, llm, aredis, keys):
    await start(worker_procs, "echo", concurrency=2)
    await start(worker_procs, "broken", "fail_with=vendor exploded")
    whole = [await llm.chat_oai(user("alpha beta gamma"), model="echo") for _ in range(2)]
    streamed = [meta async for _, meta in llm.stream_chat_oai(user("one two"), model="echo")]
    secret = "my-private-prompt-4711"
    with pytest.raises(BackendError, match="vendor exploded"):
        await llm.chat_oai(user(secret), model="broken")

    echo = await wait_metrics(aredis, keys, "echo", "3 ok", lambda m: m.requests["ok"] == 3)
    assert echo.requests == {"ok": 3, "error": 0, "cancelled": 0, "timeout": 0}
    last = streamed[-1]
    metas = [r[0].metadata for r in whole]
    inputs = sum(m["input_tokens_count"] for m in metas) + last.input_tokens_count
    outputs = sum(m["generated_tokens_count"] for m in metas) + last.generated_tokens_count
    assert echo.input_tokens == inputs == 8
    assert echo.output_tokens == outputs == 8
    assert echo.latency.bounds == LATENCY_BUCKETS
    assert len(echo.latency.counts) == len(LATENCY_BUCKETS) + 1
    assert echo.latency.count == 3 and echo.latency.total > 0
    assert echo.first_token.bounds == FIRST_TOKEN_BUCKETS
    assert echo.first_token.count == 1, "only the streamed chat has a first token"
    assert echo.latency.quantile(0.5) is not None
    assert (echo.retries, echo.dead_letters, echo.queue_depth, echo.in_flight) == (0, 0, 0, 0)
    assert echo.live_workers == 1
    assert echo.last_error is None and echo.last_error_time is None

    broken = await wait_metrics(aredis, keys, "broken", "1 error", lambda m: m.requests["error"])
    assert broken.requests == {"ok": 0, "error": 1, "cancelled": 0, "timeout": 0}
    assert broken.latency.count == 1 and broken.first_token.count == 0
    assert broken.last_error is not None and "vendor exploded" in broken.last_error
    assert secret not in broken.last_error
    assert broken.last_error_time is not None and broken.last_error_time <= time.time()
    raw = await aredis.hgetall(keys.alias("broken").metrics)
    assert not any(secret.encode() in v for v in raw.values()), "the prompt reached Redis"

    as_json = echo.as_dict()
    assert as_json["requests"]["ok"] == 3 and as_json["latency"]["count"] == 3
    assert as_json["latency"]["p50"] is not None and as_json["first_token"]["counts"]

    worker_procs.stop_all()  # stopped normally: nothing recorded is lost
    after = await wait_metrics(aredis, keys, "echo", "no live worker", lambda m: not m.live_workers)
    assert after.requests == echo.requests and after.latency == echo.latency


async def test_cancels_timeouts_queue_depth_and_dead_letters(
    settings, worker_procs, llm, aredis, keys
):
    await start(worker_procs, "slow", "first_token_delay=120")
    ak = keys.alias("slow")
    held = asyncio.create_task(llm.chat_oai(user("held"), model="slow"))
    await wait_metrics(aredis, keys, "slow", "one in flight", lambda m: m.in_flight == 1)
    queued = asyncio.create_task(llm.chat_oai(user("queued"), model="slow"))
    now = await wait_metrics(aredis, keys, "slow", "one waiting", lambda m: m.queue_depth == 1)
    assert (now.in_flight, now.live_workers) == (1, 1)

    queued.cancel()  # cancelled while waiting: the worker answers nothing when it takes it
    held.cancel()  # cancelled while running: the worker stops it
    await asyncio.gather(held, queued, return_exceptions=True)
    cancelled = await wait_metrics(
        aredis, keys, "slow", "2 cancelled", lambda m: m.requests["cancelled"] == 2
    )
    assert cancelled.latency.count == 2 and (cancelled.queue_depth, cancelled.in_flight) == (0, 0)

    # a request whose deadline passed before a worker took it is answered with a timeout
    late = Request.new(
        "slow", RequestKind.CHAT, {"conversations": user("late")}, keys.reply("x"), 1
    )
    late = late.model_copy(update={"deadline": time.time() - 1})
    await aredis.xadd(ak.requests, {FIELD: encode_request(late)})
    await aredis.xadd(ak.requests, {b"junk": b"not a request"})
    done = await wait_metrics(
        aredis,
        keys,
        "slow",
        "a timeout and a dead letter",
        lambda m: m.requests["timeout"] == 1 and m.dead_letters == 1,
    )
    assert done.requests == {"ok": 0, "error": 0, "cancelled": 2, "timeout": 1}
    assert done.latency.count == 3 and done.last_error is None


async def test_retries_and_a_hard_kill_keep_what_was_flushed(
    settings, worker_procs, llm, aredis, keys
):
    params = ("first_token_delay=1.5",)
    first = await start(worker_procs, "claim", *params)
    await llm.chat_oai(user("before the crash"), model="claim")
    await wait_metrics(aredis, keys, "claim", "1 ok", lambda m: m.requests["ok"] == 1)

    call = asyncio.create_task(llm.chat_oai(user("survives"), model="claim"))
    await wait_metrics(aredis, keys, "claim", "one in flight", lambda m: m.in_flight == 1)
    await start(worker_procs, "claim", *params)
    os.kill(first.pid, signal.SIGKILL)  # what the dead worker had flushed stays
    [answer] = await call
    assert answer.output == "survives"
    after = await wait_metrics(aredis, keys, "claim", "2 ok", lambda m: m.requests["ok"] == 2)
    assert after.retries == 1
    assert after.latency.count == 2


# -- the recorder and histograms on their own ---------------------------------------------


def test_quantiles_interpolate_inside_buckets():
    empty = Histogram((1.0, 2.0), (0, 0, 0), 0.0)
    assert empty.quantile(0.5) is None
    h = Histogram((1.0, 2.0), (2, 2, 0), 5.0)
    assert h.quantile(0.5) == 1.0
    assert h.quantile(0.75) == 1.5
    assert Histogram((1.0, 2.0), (0, 0, 3), 9.0).quantile(0.99) == 2.0
    with pytest.raises(ValueError, match="outside 0..1"):
        h.quantile(50)


def test_recorder_keeps_increments_whose_write_failed():
    recorder = MetricsRecorder()
    assert recorder.take() is None
    recorder.record("ok", 0.02, first_token=0.004, input_tokens=3, output_tokens=5)
    recorder.retried()
    first = recorder.take()
    assert first is not None and not recorder.pending
    recorder.record("error", 400.0, error="x" * 2000)
    recorder.put_back(first)  # its pipeline failed
    again = recorder.take()
    assert again is not None
    assert again.counts == {
        "req:ok": 1,
        "lat:0.025": 1,
        "ttft:0.005": 1,
        "tok:in": 3,
        "tok:out": 5,
        "retries": 1,
        "req:error": 1,
        "lat:inf": 1,
    }
    assert again.sums["lat:sum"] == pytest.approx(400.02)
    assert again.last_error is not None and len(again.last_error[0]) == 500


# -- Prometheus: the gateway's /metrics and `byzerllm metrics` ----------------------------


def Gateway(settings: BrokerSettings) -> ServedGateway:
    """A gateway served in a thread, with these tests' key."""
    return ServedGateway(settings, KEY)


GRAFANA_DASHBOARD = Path(__file__).parent.parent / "monitoring/grafana/dashboards/byzerllm.json"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, key: str | None = KEY) -> tuple[dict[str, Any], Samples]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx2.get(url, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in parser.text_string_to_metric_families(response.text)}
    samples = {
        (s.name, frozenset(s.labels.items())): s.value for f in families.values() for s in f.samples
    }
    return families, samples


@pytest.fixture
def gateways(settings: BrokerSettings) -> Iterator[tuple[Gateway, Gateway]]:
    with Gateway(settings) as one, Gateway(settings) as two:
        yield one, two


def test_metrics_endpoint_replicas_and_the_command(settings, worker_procs, gateways):
    worker_procs.start("echo", concurrency=2)
    one, two = gateways
    sdk = openai.OpenAI(base_url=one.url("/v1"), api_key=KEY, max_retries=0)
    try:
        sdk.chat.completions.create(model="echo", messages=user("red green blue"))
        chunks = sdk.chat.completions.create(model="echo", messages=user("a b"), stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b"
    finally:
        sdk.close()

    ok = ("byzerllm_requests_total", frozenset({("alias", "echo"), ("outcome", "ok")}))
    until_sync(lambda: scrape(one.url("/metrics"))[1].get(ok) == 2, "2 ok requests scraped")
    families, samples = scrape(one.url("/metrics"))
    assert {name: f.type for name, f in families.items()} == FAMILIES
    echo = frozenset({("alias", "echo")})
    assert samples[("byzerllm_tokens_total", echo | {("direction", "input")})] == 5
    assert samples[("byzerllm_tokens_total", echo | {("direction", "output")})] == 5
    assert samples[("byzerllm_request_latency_seconds_count", echo)] == 2
    assert samples[("byzerllm_first_token_seconds_count", echo)] == 1
    assert samples[("byzerllm_live_workers", echo)] == 1
    assert samples[("byzerllm_queue_depth", echo)] == 0
    assert samples[("byzerllm_in_flight", echo)] == 0
    assert samples[("byzerllm_retries_total", echo)] == 0
    assert samples[("byzerllm_dead_letters_total", echo)] == 0
    outcomes = {dict(labels)["outcome"] for name, labels in samples if name.endswith("sts_total")}
    assert outcomes == {"ok", "error", "cancelled", "timeout"}
    buckets = [
        (float(dict(labels)["le"]), value)
        for (name, labels), value in samples.items()
        if name == "byzerllm_request_latency_seconds_bucket"
    ]
    buckets.sort()
    assert len(buckets) == len(LATENCY_BUCKETS) + 1 and buckets[-1] == (float("inf"), 2)
    counts = [value for _, value in buckets]
    assert counts == sorted(counts), "buckets are cumulative"

    assert scrape(two.url("/metrics"))[1] == samples, "replicas answer the same"
    names = {name for name, _ in samples}
    charted = set(re.findall(r"byzerllm_[a-z_]+", GRAFANA_DASHBOARD.read_text()))
    assert charted and charted <= names, f"Grafana charts what /metrics lacks: {charted - names}"
    denied = httpx2.get(one.url("/metrics"), timeout=30)
    assert denied.status_code == 401 and KEY not in denied.text

    port = free_port()
    env = {**worker_procs.env(), "BYZERLLM_MASTER_KEY": KEY}
    code = "from byzerllm.cli.main import byzerllm_cli; byzerllm_cli()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "metrics", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        until_sync(lambda: _answers(url), "byzerllm metrics to listen")
        assert scrape(url)[1] == samples, "the command answers as the gateway does"
        assert httpx2.get(url, timeout=30).status_code == 401
        assert httpx2.get(url.replace("/metrics", "/nope"), timeout=30).status_code == 404
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert f":{port}/metrics" in output and KEY not in output


def _answers(url: str) -> bool:
    try:
        httpx2.get(url, timeout=5)
    except httpx2.TransportError:
        return False
    return True


def test_metrics_command_refuses_an_open_non_loopback_address(worker_procs):
    env = {k: v for k, v in worker_procs.env().items() if k != "BYZERLLM_MASTER_KEY"}
    code = "from byzerllm.cli.main import byzerllm_cli; byzerllm_cli()"
    done = subprocess.run(
        [sys.executable, "-c", code, "metrics", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "refusing to listen on 0.0.0.0" in done.stdout + done.stderr

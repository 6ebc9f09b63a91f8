"""Fixtures: a real Redis per session, a fresh key prefix per test, workers.

Workers run either in the test's event loop (fast, for most tests) or as
real ``byzerllm worker`` processes (for crash, signal and CLI tests).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pytest
import redis

from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.client import loop_thread
from byzerllm.client.channel import close_channels
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.workers.process import WorkerProcess, spawn_worker, wait_ready
from byzerllm.workers.runtime import Worker, WorkerTiming
from tests.processes import FAST_WORKER
from tests.redis_server import RedisServer

if TYPE_CHECKING:  # imported where used: the gateway's dependencies are an extra
    from tests.gateway_server import Gateway

FAST = WorkerTiming(
    heartbeat_interval=0.2, heartbeat_ttl=1.0, claim_idle=1.5, block_ms=2000, drain_timeout=10
)
_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    # sync clients that tests left open stop reading first: an idle one would otherwise
    # report the stopped server at its next keep-alive, after the session's log capture
    if loop_thread._thread is not None and loop_thread._thread.is_alive():
        loop_thread.run_sync(close_channels())
    server.stop()


@pytest.fixture
def settings(redis_server: RedisServer) -> BrokerSettings:
    return BrokerSettings(redis_url=redis_server.url, prefix=f"t{os.getpid()}x{next(_prefixes)}")


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
def keys(settings: BrokerSettings) -> Keys:
    return Keys(settings.prefix)


StartWorker = Callable[..., "asyncio.Future[Worker]"]


@pytest.fixture
async def start_worker(settings: BrokerSettings) -> AsyncIterator[Callable[..., Any]]:
    """Start an in-loop worker: ``await start_worker("alias", reply="x", concurrency=2)``."""
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    async def start(
        alias: str = "echo",
        *,
        concurrency: int = 4,
        model_type: str = "custom/echo",
        timing: WorkerTiming = FAST,
        settings_: BrokerSettings | None = None,
        **params: Any,
    ) -> Worker:
        spec = DeploySpec(
            alias=alias,
            pretrained_model_type=model_type,
            worker_concurrency=concurrency,
            infer_params=params,
        )
        worker = Worker(spec, settings_ or settings, timing=timing)
        task = asyncio.create_task(worker.run())
        ready = asyncio.create_task(worker.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED, timeout=10)
        if task.done():
            ready.cancel()
            task.result()  # raises the start error
        running.append((worker, task))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    if running:
        await asyncio.wait([t for _, t in running], timeout=15)


@pytest.fixture
async def llm(settings: BrokerSettings) -> AsyncIterator[AsyncByzerLLM]:
    client = AsyncByzerLLM(settings=settings, default_model_name="echo")
    yield client
    await client.aclose()


class WorkerProcesses:
    """Real ``byzerllm worker`` processes for one test."""

    def __init__(self, settings: BrokerSettings) -> None:
        self.settings = settings
        self.workers: list[WorkerProcess] = []

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "BYZERLLM_REDIS_URL": self.settings.redis_url,
            "BYZERLLM_PREFIX": self.settings.prefix,
            "PYTHONUNBUFFERED": "1",
        }

    def start(
        self,
        alias: str,
        *infer_params: str,
        concurrency: int = 1,
        model_type: str = "custom/echo",
        wait: bool = True,
        **spec_fields: Any,
    ) -> WorkerProcess:
        spec = DeploySpec(
            alias=alias,
            pretrained_model_type=model_type,
            worker_concurrency=concurrency,
            infer_params=parse_infer_params(infer_params),
            **spec_fields,
        )
        worker = spawn_worker(
            spec,
            self.settings,
            FAST_WORKER,
        )
        self.workers.append(worker)
        if wait:
            # callable from sync and async tests alike: wait on a loop of our own
            with ThreadPoolExecutor(1) as pool:
                pool.submit(asyncio.run, wait_ready(self.settings, worker, 120)).result()
        return worker

    def stop_all(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            worker.stop(10)

    def remove_logs(self) -> None:
        for worker in self.workers:
            worker.log_path.unlink(missing_ok=True)


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember whether the test itself failed, for fixtures that clean up after it."""
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


def stop_workers(procs: WorkerProcesses, request: pytest.FixtureRequest) -> None:
    """Stop them; their logs (temporary files) go once the test passed, a failure keeps
    them (for a fixture's teardown: the test's outcome is known by then)."""
    procs.stop_all()
    if not request.node.stash.get(_CALL_FAILED, True):
        procs.remove_logs()


@pytest.fixture
def worker_procs(
    settings: BrokerSettings, request: pytest.FixtureRequest
) -> Iterator[WorkerProcesses]:
    procs = WorkerProcesses(settings)
    yield procs
    stop_workers(procs, request)


# -- byzerllm serve (tests/gateway_server.py), for the gateway's tests ---------------------


@pytest.fixture
def gateway(settings: BrokerSettings) -> Iterator[Gateway]:
    """The gateway app, served on a free port, with the test master key."""
    from tests.gateway_server import Gateway

    with Gateway(settings) as gw:
        yield gw


@pytest.fixture
async def aclient(gateway: Gateway) -> AsyncIterator[Any]:
    """The openai SDK's async client, pointed at the gateway."""
    import openai

    from tests.gateway_server import KEY

    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key=KEY, max_retries=0)
    yield client
    await client.close()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[Any]:
    """Plain HTTP to the gateway, with the master key."""
    import httpx2

    from tests.gateway_server import KEY

    async with httpx2.AsyncClient(
        base_url=gateway.url(""), headers={"Authorization": f"Bearer {KEY}"}, timeout=60
    ) as client:
        yield client

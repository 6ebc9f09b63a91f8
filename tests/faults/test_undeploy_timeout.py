"""undeploy --timeout N gives in-flight requests N seconds, and says what happened."""

from __future__ import annotations

import asyncio

import pytest

from byzerllm import ModelNotFoundError
from tests.test_deploy import Cluster
from tests.waiting import until

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def cluster(settings, tmp_path):
    c = Cluster(settings, tmp_path)
    yield c
    c.stop()


def test_a_request_cut_by_the_undeploy_timeout_is_told_so(cluster, settings, sync_redis):
    cluster.node("n1")
    deployed = cluster.cli(
        "deploy",
        "--pretrained_model_type",
        "custom/echo",
        "--infer_params",
        "delay=3600",
        "--model",
        "slow",
    )
    assert deployed.returncode == 0, deployed.stderr
    requests = f"{settings.prefix}:{{slow}}:req"

    async def scenario() -> BaseException | None:
        from byzerllm.client.llm import AsyncByzerLLM

        llm = AsyncByzerLLM(settings=settings, default_model_name="slow")
        running = asyncio.create_task(llm.chat_oai("an hour between these words"))
        await until(lambda: sync_redis.xpending(requests, "workers")["pending"] == 1, "taken")
        result = await asyncio.to_thread(
            cluster.cli, "undeploy", "--model", "slow", "--timeout", "2"
        )
        assert result.returncode == 0, result.stderr
        [outcome] = await asyncio.gather(running, return_exceptions=True)
        await llm.aclose()
        return outcome if isinstance(outcome, BaseException) else None

    outcome = asyncio.run(scenario())
    assert isinstance(outcome, ModelNotFoundError)
    assert "undeployed while this request ran" in str(outcome)
    assert "undeploy timeout of 2s" in str(outcome)

"""The original's ByzerLLM methods that its users' code calls (auto-coder among them):
per-model setup_*, sub-clients, abort, only_return_prompt, emb(request=...),
impl(instruction=, skip_cache=, verbose=), clear_impl_cache filters, and the
Python deploy API on the same control plane as the CLI."""

from __future__ import annotations

import dataclasses
import os
import threading

import pytest

import byzerllm
from byzerllm import ByzerLLM, ConfigurationError, RequestCancelledError
from byzerllm.broker.settings import set_process_default
from byzerllm.broker.state import read_alias_stat
from byzerllm.utils.client import LLMRequest
from tests.test_deploy import Cluster
from tests.waiting import until, until_sync

CODE = "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"


async def test_per_model_settings_reach_the_request_and_the_request_wins(start_worker, llm):
    await start_worker("echo")
    llm.setup_max_output_length("echo", 5).setup_extra_generation_params(
        "echo", {"gen.stop": ["l"]}
    )
    [cut] = await llm.chat_oai("hello world")
    assert cut.output == "he"  # the stop word of the extra params, within max_length 5
    [own] = await llm.chat_oai("hello world", llm_config={"gen.stop": [], "max_length": 8})
    assert own.output == "hello wo"
    # merged with earlier extra params, not replacing them
    llm.setup_extra_generation_params("echo", {"max_length": 3})
    assert llm.model_settings.extra_generation_params["echo"] == {
        "gen.stop": ["l"],
        "max_length": 3,
    }
    assert llm.get_max_output_length("echo") == 5 and llm.get_max_output_length("x") is None
    streamed = "".join([t async for t, _ in llm.stream_chat_oai("hello world", delta_mode=True)])
    assert streamed == "he"


def test_sync_setup_is_the_async_cores(settings, worker_procs):
    worker_procs.start("echo")
    llm = ByzerLLM.from_default_model("echo", redis_url=settings.redis_url, prefix=settings.prefix)
    assert llm.setup_max_output_length("echo", 4) is llm
    assert llm.aio.get_max_output_length("echo") == 4
    assert llm.chat_oai("hello world")[0].output == "hell"
    llm.setup_role_mapping("echo", {"user_role": "U:"}).setup_max_model_length("echo", 2048)
    assert llm.get_role_mapping("echo") == {"user_role": "U:"}
    assert llm.get_max_model_length("echo") == 2048
    with pytest.raises(ConfigurationError, match="positive"):
        llm.setup_max_output_length("echo", 0)


def test_sub_clients_by_name(settings):
    llm = ByzerLLM(settings.redis_url)
    other = ByzerLLM(settings.redis_url)
    assert llm.setup_sub_client("chat_model", other) is llm
    assert llm.get_sub_client("chat_model") is other
    assert llm.remove_sub_client("chat_model").get_sub_client("chat_model") is None
    assert llm.remove_sub_client("never there") is llm


async def test_an_answer_is_a_dataclass_as_in_the_originals_readme(start_worker, llm):
    await start_worker("echo")
    [answer] = await llm.chat_oai("hello")
    as_dict = dataclasses.asdict(answer)
    assert as_dict["output"] == "hello" and as_dict["metadata"]["finish_reason"] == "stop"


async def test_only_return_prompt_sends_nothing(llm):
    llm.setup_max_output_length("nowhere", 7)
    conversation = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    # "nowhere" is not deployed: a request sent would fail with ModelNotFoundError
    [r] = await llm.chat_oai(conversation, model="nowhere", only_return_prompt=True)
    assert r.output == ""
    assert r.metadata["instruction"] == "hi"
    assert r.metadata["history"] == conversation[:1]
    assert r.metadata["llm_config"] == {"max_length": 7}


async def test_abort_ends_a_stream_and_frees_the_worker(start_worker, llm, settings, keys):
    await start_worker("echo", delay=0.2, concurrency=1)
    stream = llm.stream_chat_oai(
        "one two three four five six seven eight nine ten",
        delta_mode=True,
        llm_config={"gen.request_id": "my-request-1"},
    )
    first = await stream.__anext__()
    assert first[0]
    assert llm.abort("my-request-1") is True
    with pytest.raises(RequestCancelledError, match="aborted"):
        async for _ in stream:
            pass
    assert llm.abort("my-request-1") is False  # no longer in flight
    redis = llm.channel.redis

    async def free() -> bool:
        stat = await read_alias_stat(redis, keys, "echo")
        return stat is not None and all(w.free_slots == w.max_concurrency for w in stat.workers)

    await until(free, "the worker to stop the aborted request")
    [after] = await llm.chat_oai("still serving")  # the one slot serves again
    assert after.output == "still serving"


def test_sync_abort_from_another_thread(settings, worker_procs):
    worker_procs.start("echo", "delay=0.2")
    llm = ByzerLLM.from_default_model("echo", redis_url=settings.redis_url, prefix=settings.prefix)
    got: list[str] = []
    failure: list[BaseException] = []

    def consume() -> None:
        try:
            for text, _ in llm.stream_chat_oai(
                "a b c d e f g h i j k l", delta_mode=True, llm_config={"gen.request_id": "r2"}
            ):
                got.append(text)
        except BaseException as exc:
            failure.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    until_sync(lambda: bool(got), "the first streamed piece")
    assert llm.abort("r2") is True
    reader.join(60)
    assert failure and isinstance(failure[0], RequestCancelledError)


async def test_a_chosen_request_id_must_be_usable(start_worker, llm):
    await start_worker("echo")
    with pytest.raises(ConfigurationError, match="request id"):
        await llm.chat_oai("x", llm_config={"gen.request_id": "no spaces allowed"})


async def test_emb_takes_the_originals_llm_request(start_worker, llm):
    await start_worker("echo")
    plain = await llm.emb("echo", ["a", "b"])
    [via_request] = await llm.emb("echo", request=LLMRequest(instruction="a"))
    assert via_request.output == plain[0].output
    with pytest.raises(ConfigurationError, match="no texts"):
        await llm.emb("echo")


async def test_impl_instruction_cache_and_clearing(start_worker, llm, capsys):
    await start_worker("coder", reply=CODE)

    @llm.impl(instruction="add the two numbers", model="coder", verbose=True)
    def add(a: int, b: int) -> int:  # type: ignore[empty-body]
        """Add a and b."""

    assert await add(2, 3) == 5
    assert "def add" in capsys.readouterr().out  # verbose shows the code written
    [key] = list(llm.impl_cache)
    assert key.instruction == "add the two numbers" and key.model == "coder"
    llm.clear_impl_cache(model="other")
    assert len(llm.impl_cache) == 1  # another model's entries only
    llm.clear_impl_cache(full_func_name="add")
    assert not llm.impl_cache

    def uncached():  # another add(), as the reply defines add()
        @llm.impl(model="coder", skip_cache=True)
        def add(a: int, b: int) -> int:  # type: ignore[empty-body]
            """Add a and b."""

        return add

    assert await uncached()(1, 1) == 2
    assert not llm.impl_cache  # skip_cache: neither read nor written


def test_python_deploy_api_on_the_control_plane(settings, tmp_path):
    cluster = Cluster(settings, tmp_path)
    cluster.node("n1")
    # the deploying process seals secrets with the cluster key, as the CLI does
    os.environ["BYZERLLM_SECRET_KEY"] = cluster.env["BYZERLLM_SECRET_KEY"]
    try:
        byzerllm.connect_cluster(settings.redis_url)  # the original's first line
        llm = ByzerLLM(prefix=settings.prefix)
        meta = (
            llm.setup_num_workers(2)
            .setup_worker_concurrency(3)
            .setup_cpus_per_worker(0.5)
            .deploy(
                model_path="",
                pretrained_model_type="custom/echo",
                udf_name="pydeploy",
                infer_params={"prefix": "p:"},
            )
        )
        assert meta["backend"] == "custom/echo"
        assert llm.chat_oai("hi", model="pydeploy")[0].output == "p:hi"
        view = cluster.stat("pydeploy")
        assert view["total_workers"] == 2 and view["worker_max_concurrency"] == 3
        with pytest.raises(byzerllm.InvalidInferParamsError, match="prefx"):
            llm.deploy("", "custom/echo", "typo", {"prefx": "x"})
        assert llm.undeploy("pydeploy") is True
        assert llm.undeploy("pydeploy") is False
        llm.close()
    finally:
        os.environ.pop("BYZERLLM_SECRET_KEY", None)
        set_process_default(None)
        cluster.stop()


def test_abort_of_an_unknown_id_is_false(llm):
    assert llm.abort("never-sent") is False


async def test_abort_in_process_with_simple_byzerllm():
    from byzerllm.simple import AsyncSimpleByzerLLM

    llm = AsyncSimpleByzerLLM("local")
    await llm.deploy("", "custom/echo", "local", {"delay": 0.2})
    stream = llm.stream_chat_oai(
        "a b c d e f g h", delta_mode=True, llm_config={"gen.request_id": "local-1"}
    )
    await stream.__anext__()
    assert llm.abort("local-1") is True
    with pytest.raises(RequestCancelledError, match="aborted"):
        async for _ in stream:
            pass
    assert llm.abort("local-1") is False
    await llm.aclose()

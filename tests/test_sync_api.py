"""The synchronous ByzerLLM the guide uses, including inside a running loop (Jupyter)."""

from __future__ import annotations

import asyncio

import pytest

import byzerllm
from byzerllm.client.types import SingleOutputMeta


@pytest.fixture
def sync_llm(worker_procs, settings):
    worker_procs.start("deepseek_chat", "delay=0.01", concurrency=8)
    worker_procs.start("emb", "dim=12")
    llm = byzerllm.ByzerLLM.from_default_model(
        model="deepseek_chat", redis_url=settings.redis_url, prefix=settings.prefix
    )
    yield llm
    llm.close()


def test_chat_oai_as_in_the_guide(sync_llm):
    v = sync_llm.chat_oai(
        model="deepseek_chat",
        conversations=[
            {
                "role": "user",
                "content": "你好，你是谁",
            }
        ],
    )
    assert v[0].output == "你好，你是谁"
    assert v[0].metadata["finish_reason"] == "stop"


def test_stream_chat_oai_delta_mode_as_in_the_guide(sync_llm):
    v = sync_llm.stream_chat_oai(
        model="deepseek_chat",
        conversations=[
            {
                "role": "user",
                "content": "hello there general kenobi",
            }
        ],
        delta_mode=True,
    )
    pieces = []
    for t, meta in v:
        assert isinstance(meta, SingleOutputMeta)
        pieces.append(t)
    assert "".join(pieces) == "hello there general kenobi"


def test_stream_chat_oai_full_mode_tuples(sync_llm):
    v = sync_llm.stream_chat_oai(conversations=[{"role": "user", "content": "a b c"}])
    last = None
    for s in v:
        last = s
    assert last is not None and last[0] == "a b c"


def test_emb_query_with_default_emb_model(sync_llm):
    sync_llm.setup_default_emb_model_name("emb")
    [r] = sync_llm.emb_query("你好")
    assert len(r.output) == 12


def test_setup_methods_chain(settings):
    llm = byzerllm.ByzerLLM(redis_url=settings.redis_url)
    assert llm.setup_template(model="deepseek_chat", template="auto") is llm
    assert llm.setup_default_model_name("deepseek_chat") is llm
    assert llm.default_model_name == "deepseek_chat"


async def test_sync_api_works_inside_a_running_event_loop(sync_llm):
    assert asyncio.get_running_loop().is_running()
    assert sync_llm.chat_oai("from inside a loop")[0].output == "from inside a loop"
    assert list(t for t, _ in sync_llm.stream_chat_oai("x y", delta_mode=True))[-2:] == ["y", ""]


def test_many_threads_share_the_client(sync_llm):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(16) as pool:
        outs = list(pool.map(lambda i: sync_llm.chat_oai(f"t{i}")[0].output, range(64)))
    assert outs == [f"t{i}" for i in range(64)]

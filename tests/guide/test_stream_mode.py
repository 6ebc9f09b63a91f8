"""Guide: Stream 模式 (stream_chat_oai with delta_mode, chat_oai and its metadata)."""

import byzerllm
from byzerllm.types import SingleOutputMeta


def test_stream_chat_oai_delta_mode(serve):
    serve(
        "deepseek_chat",
        "delay=0.02",
        rules=[{"match": "你好，你是谁", "reply": "你好 ！ 我 是一个 人工智能 助手"}],
    )
    llm = byzerllm.ByzerLLM.from_default_model(model="deepseek_chat")

    v = llm.stream_chat_oai(
        model="deepseek_chat",
        conversations=[
            {
                "role": "user",
                "content": "你好，你是谁",
            }
        ],
        delta_mode=True,
    )

    pieces = []
    for t, meta in v:
        print(t, flush=True)
        assert isinstance(meta, SingleOutputMeta)
        pieces.append(t)
    assert len([p for p in pieces if p]) > 1
    assert "".join(pieces) == "你好 ！ 我 是一个 人工智能 助手"
    assert meta.finish_reason == "stop"


def test_chat_oai_and_its_metadata(serve):
    serve(
        "deepseek_chat", rules=[{"match": "你好，你是谁", "reply": "你好！我是一个人工智能助手。"}]
    )
    llm = byzerllm.ByzerLLM.from_default_model(model="deepseek_chat")

    v = llm.chat_oai(
        model="deepseek_chat",
        conversations=[
            {
                "role": "user",
                "content": "你好，你是谁",
            }
        ],
    )

    print(v[0].output)
    assert v[0].output == "你好！我是一个人工智能助手。"
    for key in (
        "request_id",
        "input_tokens_count",
        "generated_tokens_count",
        "time_cost",
        "first_token_time",
        "speed",
        "finish_reason",
        "reasoning_content",
    ):
        assert key in v[0].metadata

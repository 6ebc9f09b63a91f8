"""Guide: 向量化模型 (emb_query against a default embedding model)."""

import byzerllm


def test_emb_query(serve):
    serve("deepseek_chat")
    serve("emb", "dim=16")
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")
    llm.setup_default_emb_model_name("emb")
    [r] = llm.emb_query("你好")
    assert len(r.output) == 16
    assert r.output == llm.emb_query("你好")[0].output  # same text, same vector

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


def test_byzer_storage_emb(serve):
    """The guide's ByzerStorage sample, against the ``emb`` alias that
    ``byzerllm storage start --enable_emb`` deploys."""
    serve("emb", "dim=16")
    from byzerllm.apps.byzer_storage.simple_api import (  # noqa: F401 - imported as in the guide
        ByzerStorage,
        DataType,
        FieldOption,
        SortOption,
    )

    storage = ByzerStorage("byzerai_store", "memory", "memory")
    vector = storage.emb("你好")
    assert len(vector) == 16 and all(isinstance(x, float) for x in vector)
    assert vector == storage.emb("你好")
    assert vector != storage.emb("再见")


def test_byzer_storage_retrieval_says_it_is_not_here(serve):
    import pytest

    from byzerllm import ByzerLLMError
    from byzerllm.apps.byzer_storage.simple_api import ByzerStorage

    storage = ByzerStorage("byzerai_store", "memory", "memory")
    with pytest.raises(ByzerLLMError, match="offers emb"):
        storage.query_builder()

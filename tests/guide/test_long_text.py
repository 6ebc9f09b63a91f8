"""Guide: 超长文本生成 (with_response_markers with a 10-character answer limit)."""

from collections.abc import Generator

import pytest

import byzerllm
from byzerllm import ByzerLLM

STORY = "从前，森林里住着一只聪明的小狐狸。它用宝石的光芒帮助森林里的动物们。"


@pytest.fixture
def storyteller(serve):
    serve(
        "deepseek_chat",
        rules=[{"match": "讲一个100字的故事", "reply": f"<RESPONSE>{STORY}</RESPONSE>"}],
    )


def test_tell_story_in_several_rounds(storyteller):
    llm = ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt()
    def tell_story() -> str:
        """
        讲一个100字的故事。
        """

    s = (
        tell_story.with_llm(llm)
        .with_response_markers()
        .options({"llm_config": {"max_length": 10}})
        .run()
    )
    print(s)
    assert s == STORY
    assert len(s) > 10


def test_one_round_is_cut_at_max_length(storyteller):
    llm = ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt()
    def tell_story() -> str:
        """
        讲一个100字的故事。
        """

    s = tell_story.with_llm(llm).options({"llm_config": {"max_length": 10}}).run()
    assert s == f"<RESPONSE>{STORY}"[:10]


def test_max_turns_bounds_the_rounds(storyteller):
    llm = ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt()
    def tell_story() -> str:
        """
        讲一个100字的故事。
        """

    s = (
        tell_story.with_llm(llm)
        .with_response_markers()
        .with_max_turns(2)
        .options({"llm_config": {"max_length": 10}})
        .run()
    )
    assert s == STORY[:10]  # two rounds of 10 characters, the start marker removed


def test_markers_must_be_a_pair():
    @byzerllm.prompt()
    def tell_story() -> str:
        """
        讲一个100字的故事。
        """

    with pytest.raises(byzerllm.ConfigurationError, match="exactly 2 markers"):
        tell_story.with_response_markers(["<A>"])


def test_a_generator_prompt_streams_every_round_until_the_end_marker(storyteller):
    llm = ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt()
    def tell_story() -> Generator[str, None, None]:
        """
        讲一个100字的故事。
        """

    pieces = list(
        tell_story.with_llm(llm)
        .with_response_markers()
        .options({"llm_config": {"max_length": 10}})
        .run()
    )
    assert len(pieces) > 2  # several rounds, each yielded as it came
    assert "".join(pieces) == STORY  # the markers removed, as run() of a str prompt gives
    assert not any("<" in piece for piece in pieces)


def test_a_generator_prompt_can_keep_the_markers(storyteller):
    llm = ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt()
    def tell_story() -> Generator[str, None, None]:
        """
        讲一个100字的故事。
        """

    pieces = (
        tell_story.with_llm(llm)
        .with_response_markers()
        .with_auto_remove_response_markers(False)
        .options({"llm_config": {"max_length": 10}})
        .run()
    )
    assert "".join(pieces) == f"<RESPONSE>{STORY}</RESPONSE>"

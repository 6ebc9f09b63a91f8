"""Guide: Prompt 函数的流式输出 (stream_chat_oai, Generator prompt functions)."""

from typing import Generator  # noqa: UP035 - as the guide writes it

import byzerllm

STORY = "从前 有一只 小狐狸 ， 它 很 聪明 。"


def test_stream_chat_oai_accumulated(serve):
    serve("deepseek_chat", rules=[{"match": "讲一个100字的故事", "reply": STORY}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    v = llm.stream_chat_oai(conversations=[{"role": "user", "content": "讲一个100字的故事"}])

    seen = [s[0] for s in v]
    for s in seen:
        print(s, end="")
    assert seen[-1] == STORY  # not delta mode: each item is the text so far
    assert all(STORY.startswith(s) for s in seen)


def test_generator_prompt_function_yields_deltas(serve):
    serve(
        "deepseek_chat", "delay=0.02", rules=[{"match": "给我讲一个一百多字的故事", "reply": STORY}]
    )
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt()
    def tell_story() -> Generator[str, None, None]:
        """
        给我讲一个一百多字的故事
        """

    v = tell_story.with_llm(llm).run()
    pieces = []
    for i in v:
        print(i, end="")
        pieces.append(i)
    assert len(pieces) > 1
    assert "".join(pieces) == STORY

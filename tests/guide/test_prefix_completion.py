"""Guide: Chat Prefix Completion (gen.response_prefix and gen.stop reach the model)."""

import byzerllm

POEM = "从前有座山，山里有座庙，庙里有个老和尚。"


def test_response_prefix_continues_after_the_assistant_message(serve):
    serve("deepseek_chat", rules=[{"match": "讲个故事", "reply": POEM}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    response = llm.chat_oai(
        conversations=[
            {"role": "user", "content": "讲个故事"},
            {"role": "assistant", "content": "从前有座山"},
        ],
        llm_config={"gen.response_prefix": True},
    )
    k = response[0].output
    assert k == "，山里有座庙，庙里有个老和尚。"


def test_stop_strings_end_the_answer(serve):
    serve("deepseek_chat", rules=[{"match": "讲个故事", "reply": POEM}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    response = llm.chat_oai(
        conversations=[
            {"role": "user", "content": "讲个故事"},
            {"role": "assistant", "content": "从前有座山"},
        ],
        llm_config={"gen.response_prefix": True, "gen.stop": ["庙"]},
    )
    assert response[0].output == "，山里有座"


def test_prompt_function_return_prefix_and_stop_list(serve):
    serve("deepseek_chat", rules=[{"match": "讲个故事", "reply": POEM}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt(llm=llm)
    def story() -> str:
        """
        讲个故事
        """

    assert story.with_return_prefix("从前有座山").run() == POEM
    assert story.with_stop_suffix_list(["，"]).run() == "从前有座山"

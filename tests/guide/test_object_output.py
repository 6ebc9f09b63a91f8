"""Guide: 对象输出 (pydantic return annotation, with_return_type)."""

import pydantic
import pytest

import byzerllm

FENCED = """好的，这是故事：
```json
{"title": "勇敢的小鸟", "body": "一只小鸟飞越了大山。"}
```
希望你喜欢！"""


def test_pydantic_annotation_puts_the_schema_in_the_prompt(serve):
    # the rule only matches when the schema (with its field descriptions) reached the model
    serve(
        "deepseek_chat", rules=[{"match": "讲一个100字的故事[\\s\\S]*故事的标题", "reply": FENCED}]
    )
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    class Story(pydantic.BaseModel):
        """
        故事
        """

        title: str = pydantic.Field(description="故事的标题")
        body: str = pydantic.Field(description="故事主体")

    @byzerllm.prompt()
    def tell_story() -> Story:
        """
        讲一个100字的故事。
        """

    s = tell_story.with_llm(llm).run()
    print(isinstance(s, Story))
    print(s.title)
    assert isinstance(s, Story)
    assert s.title == "勇敢的小鸟"


def test_with_return_type_reads_the_json_the_prompt_asked_for(serve):
    # almost-valid JSON (a trailing comma) with prose after it is repaired
    reply = '{\n  "title": "勇敢的小鸟",\n  "body": "一只小鸟飞越了大山。",\n}\n以上就是故事。'
    serve("deepseek_chat", rules=[{"match": "讲一个100字的故事", "reply": reply}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    class Story(pydantic.BaseModel):
        title: str
        body: str

    @byzerllm.prompt()
    def tell_story() -> str:
        """
        讲一个100字的故事。

        返回符合以下格式的JSON:

        ```json
        {
            "title": "故事的标题",
            "body": "故事主体"
        }
        ```
        """

    s = tell_story.with_llm(llm).with_return_type(Story).run()
    print(isinstance(s, Story))
    print(s.title)
    assert isinstance(s, Story)
    assert s.title == "勇敢的小鸟"
    assert "```json" in tell_story.prompt()


def test_an_answer_without_json_raises_with_the_raw_text(serve):
    serve("deepseek_chat", rules=[{"match": "故事", "reply": "对不起，我不会写 JSON。"}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    class Story(pydantic.BaseModel):
        title: str
        body: str

    @byzerllm.prompt()
    def tell_story() -> Story:
        """
        讲一个100字的故事。
        """

    with pytest.raises(byzerllm.StructuredOutputError) as info:
        tell_story.with_llm(llm).run()
    assert info.value.raw_text == "对不起，我不会写 JSON。"
    assert "对不起" in str(info.value)
    assert isinstance(info.value, byzerllm.ByzerLLMError)


def test_json_of_the_wrong_shape_names_the_field(serve):
    serve("deepseek_chat", rules=[{"match": "故事", "reply": '{"title": "只有标题"}'}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    class Story(pydantic.BaseModel):
        title: str
        body: str

    @byzerllm.prompt()
    def tell_story() -> Story:
        """
        讲一个100字的故事。
        """

    with pytest.raises(byzerllm.StructuredOutputError, match="body"):
        tell_story.with_llm(llm).run()

"""Guide: hello world, 查看发送给大模型的prompt, 动态换一个模型."""

import pytest

import byzerllm

ANSWER = "你好！我是一个人工智能助手。"


@pytest.fixture
def deepseek(serve):
    serve("deepseek_chat", rules=[{"match": "你好, 你是谁", "reply": ANSWER}])


def test_hello_world(deepseek):
    llm = byzerllm.ByzerLLM.from_default_model(model="deepseek_chat")

    @byzerllm.prompt(llm=llm)
    def hello(q: str) -> str:
        """
        你好, {{ q }}
        """

    s = hello("你是谁")
    assert s == ANSWER


def test_rendered_prompt_without_calling_the_model():
    @byzerllm.prompt()
    def hello(q: str) -> str:
        """
        你好, {{ q }}
        """

    assert hello.prompt("你是谁") == "你好, 你是谁"
    # without an llm, calling it gives the rendered text, as in the original
    assert hello("你是谁") == "你好, 你是谁"


def test_with_llm_switches_model(deepseek, serve):
    serve("other_chat", rules=[{"match": ".", "reply": "我是另一个模型"}])
    llm = byzerllm.ByzerLLM.from_default_model(model="deepseek_chat")

    @byzerllm.prompt(llm=llm)
    def hello(q: str) -> str:
        """
        你好, {{ q }}
        """

    other = byzerllm.ByzerLLM.from_default_model("other_chat")
    assert hello.with_llm(other).run("你是谁") == "我是另一个模型"
    assert hello.with_llm(llm).run("你是谁") == ANSWER


def test_alias_string_creates_a_client(deepseek):
    @byzerllm.prompt("deepseek_chat")
    def hello(q: str) -> str:
        """
        你好, {{ q }}
        """

    assert hello("你是谁") == ANSWER


def test_simple_byzerllm_comment_of_the_sample():
    # "# or use SimpleByzerLLM": the same prompt function works with the pure client
    llm = byzerllm.SimpleByzerLLM(default_model_name="deepseek_chat")
    llm.deploy(
        model_path="",
        pretrained_model_type="custom/echo",
        udf_name="deepseek_chat",
        infer_params={"script": [{"match": "你好", "reply": ANSWER}]},
    )

    @byzerllm.prompt(llm=llm)
    def hello(q: str) -> str:
        """
        你好, {{ q }}
        """

    assert hello("你是谁") == ANSWER
    llm.close()

"""Guide: 纯客户端启动和管理模型 (SimpleByzerLLM, no Redis).

api.deepseek.com is replaced by the local OpenAI-protocol stub server; the
key file is written under a temporary HOME.
"""

import os
from typing import Generator  # noqa: UP035

import pytest

import byzerllm
from tests.openai_stub import OpenAIStub


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    keys = tmp_path / ".auto-coder" / "keys"
    keys.mkdir(parents=True)
    (keys / "api.deepseek.com").write_text("sk-local", "utf-8")
    monkeypatch.delenv("BYZERLLM_REDIS_URL", raising=False)


def test_deploy_and_chat_without_redis(home):
    pytest.importorskip("openai")
    with OpenAIStub(api_key="sk-local") as stub:
        llm = byzerllm.SimpleByzerLLM(default_model_name="deepseek_chat")
        api_key_dir = os.path.expanduser("~/.auto-coder/keys")
        api_key_file = os.path.join(api_key_dir, "api.deepseek.com")

        if not os.path.exists(api_key_file):
            raise Exception(f"API key file not found: {api_key_file}")

        with open(api_key_file) as f:
            api_key = f.read()

        llm.deploy(
            model_path="",
            pretrained_model_type="saas/openai",
            udf_name="deepseek_chat",
            infer_params={
                "saas.base_url": stub.base_url,
                "saas.api_key": api_key,
                "saas.model": "deepseek-chat",
            },
        )

        assert llm.chat_oai([{"role": "user", "content": "hello there"}])[0].output == "hello there"
        deltas = [t for t, _ in llm.stream_chat_oai("one two three", delta_mode=True)]
        assert "".join(deltas) == "one two three"

        @byzerllm.prompt(llm=llm)
        def hello(q: str) -> str:
            """
            你好, {{ q }}
            """

        assert hello("你是谁") == "你好, 你是谁"

        @byzerllm.prompt(llm=llm)
        def story() -> Generator[str, None, None]:
            """
            a b c
            """

        assert "".join(story()) == "a b c"
        llm.close()


def test_echo_backend_in_process_with_embeddings():
    llm = byzerllm.SimpleByzerLLM(default_model_name="local")
    assert llm.deploy("", "custom/echo", "local", {"dim": 4}) == {
        "model": "local",
        "status": "deployed",
    }
    assert llm.is_model_exist("local")
    [r] = llm.emb("local", ["x"])
    assert len(r.output) == 4
    with pytest.raises(byzerllm.ModelNotFoundError, match="missing"):
        llm.chat_oai("hi", model="missing")
    llm.undeploy("local")
    assert not llm.is_model_exist("local")
    llm.close()


def test_unknown_backend_type_is_a_clear_error():
    llm = byzerllm.SimpleByzerLLM()
    with pytest.raises(byzerllm.ConfigurationError, match="saas/nope"):
        llm.deploy("", "saas/nope", "x", {})

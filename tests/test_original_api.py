"""The original's entry points that users' code calls: connect_cluster, the
``byzerllm.utils.*`` import paths and their helpers (docs/original-api.md)."""

from __future__ import annotations

import base64
import importlib.metadata
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pydantic import BaseModel

import byzerllm
from byzerllm.broker.settings import BrokerSettings, set_process_default
from byzerllm.client.llm import AsyncByzerLLM

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
NOWHERE = "redis://127.0.0.1:1/0"  # nothing listens there: a client that used it would fail


@pytest.fixture(autouse=True)
def no_process_default() -> Iterator[None]:
    """Each test starts without a connect_cluster default and leaves none behind."""
    previous = set_process_default(None)
    yield
    set_process_default(previous)


@pytest.fixture
def cluster_env(settings, monkeypatch) -> BrokerSettings:
    """The environment names the test's prefix and a Redis nobody listens on."""
    monkeypatch.setenv("BYZERLLM_REDIS_URL", NOWHERE)
    monkeypatch.setenv("BYZERLLM_PREFIX", settings.prefix)
    return settings


# -- connect_cluster ------------------------------------------------------------------------


def test_connect_cluster_url_is_the_default_of_later_clients(worker_procs, cluster_env):
    worker_procs.start("echo")
    returned = byzerllm.connect_cluster(cluster_env.redis_url)
    assert returned == cluster_env  # the URL given, the prefix of the environment

    llm = byzerllm.ByzerLLM()
    try:
        llm.setup_default_model_name("echo")
        [answer] = llm.chat_oai("hello from connect_cluster")
        assert answer.output == "hello from connect_cluster"
    finally:
        llm.close()


async def test_connect_cluster_without_address_reads_the_environment(
    start_worker, settings, monkeypatch
):
    monkeypatch.setenv("BYZERLLM_REDIS_URL", settings.redis_url)
    monkeypatch.setenv("BYZERLLM_PREFIX", settings.prefix)
    await start_worker("echo")
    assert byzerllm.connect_cluster() == settings
    # the environment changing later does not move the default the program chose
    monkeypatch.setenv("BYZERLLM_REDIS_URL", NOWHERE)

    llm = AsyncByzerLLM(default_model_name="echo")
    try:
        [answer] = await llm.chat_oai("async hello")
        assert answer.output == "async hello"
    finally:
        await llm.aclose()


def test_auto_and_the_originals_keywords_are_accepted(cluster_env, monkeypatch):
    monkeypatch.setenv("BYZERLLM_REDIS_URL", cluster_env.redis_url)
    settings = byzerllm.connect_cluster(
        "auto", java_home="/usr/lib/jvm/java-21", code_search_path=["/opt/jars"], init_options={}
    )
    assert settings == cluster_env


def test_an_explicit_url_still_wins_over_the_default(cluster_env):
    byzerllm.connect_cluster(cluster_env.redis_url)
    llm = byzerllm.ByzerLLM(NOWHERE)
    assert llm.aio.settings.redis_url == NOWHERE
    assert byzerllm.ByzerLLM().aio.settings.redis_url == cluster_env.redis_url


def test_connect_cluster_logs_once_with_the_password_masked(caplog):
    url = "redis://:s3cret-pw@127.0.0.1:6399/2"
    with caplog.at_level(logging.INFO, logger="byzerllm.client.cluster"):
        byzerllm.connect_cluster(url)
        byzerllm.connect_cluster(url)
    lines = [r.getMessage() for r in caplog.records if r.name == "byzerllm.client.cluster"]
    assert len(lines) == 1
    assert "127.0.0.1:6399/2" in lines[0] and "****" in lines[0]
    assert "s3cret-pw" not in caplog.text


@pytest.mark.parametrize(
    "address", ["ray://10.0.0.1:10001", "local", "127.0.0.1:6379", "http://127.0.0.1:6379"]
)
def test_a_ray_or_other_address_is_refused_with_the_fix(address):
    with pytest.raises(byzerllm.ConfigurationError) as err:
        byzerllm.connect_cluster(address)
    message = str(err.value)
    assert repr(address) in message
    assert "redis://127.0.0.1:6379/0" in message and "BYZERLLM_REDIS_URL" in message


def test_a_refused_address_masks_its_password_and_keeps_the_old_default(cluster_env):
    byzerllm.connect_cluster(cluster_env.redis_url)
    with pytest.raises(byzerllm.ConfigurationError, match="Ray") as err:
        byzerllm.connect_cluster("ray://admin:hunter2@head:10001")
    assert "hunter2" not in str(err.value)
    assert byzerllm.ByzerLLM().aio.settings == cluster_env


def test_the_original_module_path_has_it():
    from byzerllm.utils.connect_ray import connect_cluster

    assert connect_cluster is byzerllm.connect_cluster


# -- byzerllm.utils.client --------------------------------------------------------------------


def test_the_readme_import_keeps_simple_byzerllm_lazy():
    code = (
        "import sys\n"
        "from byzerllm.utils.client import ByzerLLM, LLMRequest, LLMResponse, Templates, "
        "InferBackend\n"
        "print('byzerllm.simple' in sys.modules)\n"
        "from byzerllm.utils.client import SimpleByzerLLM\n"
        "import byzerllm.simple\n"
        "print(SimpleByzerLLM is byzerllm.simple.SimpleByzerLLM)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_types_module_and_llm_request_defaults():
    from byzerllm.utils.client import ByzerLLM, LLMResponse
    from byzerllm.utils.client.types import LLMRequest, Role
    from byzerllm.utils.types import SingleOutputMeta

    assert ByzerLLM is byzerllm.ByzerLLM and LLMResponse is byzerllm.LLMResponse
    assert SingleOutputMeta is byzerllm.SingleOutputMeta
    request = LLMRequest(instruction="hi")
    assert (request.embedding, request.max_length, request.top_p, request.temperature) == (
        False,
        4096,
        0.95,
        0.1,
    )
    assert (Role.User, Role.Assistant, Role.System) == ("user", "assistant", "system")


def test_infer_backend_values_name_deployable_backends():
    from byzerllm.utils.client import InferBackend

    registered = {ep.name for ep in importlib.metadata.entry_points(group="byzerllm.backends")}
    for backend in (InferBackend.VLLM, InferBackend.LLAMA_CPP, InferBackend.Transformers):
        assert f"custom/auto+{backend}" in registered


def test_templates_are_data_and_setup_template_takes_them():
    from byzerllm.utils.client import Templates

    qwen = Templates.qwen()
    assert qwen.role_mapping["user_role"] == "<|im_start|>user\n"
    assert "{system_msg}" in qwen.role_mapping["system_msg"]
    assert qwen.generation_config["generation.stop_token_ids"] == [151643, 151645]
    assert qwen.clean("the answer<|im_end|>\n<|im_start|>user") == "the answer"
    assert qwen.clean_func("no marker") == "no marker"
    for name in (
        "yi",
        "llama",
        "deepseek_code_chat",
        "deepseek_code_insertion",
        "deepseek_code_completion",
        "default",
        "empty",
    ):
        template = getattr(Templates, name)()
        assert {"user_role", "assistant_role", "system_msg"} <= set(template.role_mapping)
    assert "{content}" in Templates.llama().role_mapping["user_format"]

    llm = byzerllm.ByzerLLM(NOWHERE)
    assert llm.setup_template("qwen_chat", qwen) is llm
    assert llm.aio.templates["qwen_chat"] is qwen


def test_emb_takes_an_llm_request(worker_procs, settings):
    from byzerllm.utils.client import LLMRequest

    worker_procs.start("emb", "dim=12")
    llm = byzerllm.ByzerLLM(settings.redis_url, prefix=settings.prefix)
    try:
        answers = llm.emb("emb", LLMRequest(instruction=["one", "two"], embedding=True))
        assert [len(a.output) for a in answers] == [12, 12]
    finally:
        llm.close()


# -- byzerllm.utils.nontext -------------------------------------------------------------------


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "dot.png"
    path.write_bytes(PNG)
    return path


def test_load_image_from_path_only_content(png):
    from byzerllm.utils.nontext import Image

    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert Image.load_image_from_path(str(png)) == url
    assert Image.load_image_from_path(str(png), only_content=True) == url
    assert Image.load_image_from_path(str(png), only_content=False) == f"<_image_>{url}</_image_>"
    assert Image is byzerllm.Image


def test_image_text_has_image_and_to_content(png):
    from byzerllm.utils.nontext import Image

    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    text = f"<_image_>{png}</_image_>\nWhat is in the picture?"
    assert Image(text).has_image()
    assert not Image("no picture here").has_image()
    assert not Image("<_image_>unclosed").has_image()
    assert Image(text).to_content() == [{"image": url}, {"text": "What is in the picture?"}]
    assert Image(f"<_image_>{url}</_image_>").to_content() == [{"image": url}, {"text": ""}]
    assert Image.extract_image_paths(text) == [str(png)]
    assert Image.extract_image_paths(f"<_img_>{png}</_img_> <_image_>{url}</_image_>") == [str(png)]
    assert Image.extract_image_paths(text, to_base64=True) == [url]
    assert (
        Image.convert_image_paths_from("see <img> a.png </img>") == "see <_image_>a.png</_image_>"
    )


def test_save_image_to_path(png, tmp_path):
    from byzerllm.utils.nontext import Image

    url = Image.load_image_from_path(str(png))
    assert Image.save_image_to_path(url, str(tmp_path / "a.png")) == str(tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == PNG
    fixed = Image.save_image_to_path(url, str(tmp_path / "b.jpg"), auto_fix_suffix=True)
    assert fixed == str(tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes() == PNG
    tagged = Image.load_image_from_path(str(png), only_content=False)
    assert Image.save_image_to_path(tagged, str(tmp_path / "c.png")) == str(tmp_path / "c.png")
    with pytest.raises(ValueError, match="data:image/"):
        Image.save_image_to_path("not an image", str(tmp_path / "d.png"))
    with pytest.raises(byzerllm.ConfigurationError, match="base64"):
        Image.save_image_to_path("data:image/png;base64,@@@", str(tmp_path / "e.png"))


def test_audio_helpers(tmp_path):
    from byzerllm.utils.nontext import Audio

    sound = tmp_path / "hello.mp3"
    sound.write_bytes(b"ID3 not really an mp3")
    url = "data:audio/mpeg;base64," + base64.b64encode(sound.read_bytes()).decode()
    assert Audio.load_audio_from_path(str(sound)) == f"<_audio_>{url}</_audio_>"
    assert Audio.load_audio_from_path(str(sound), only_content=True) == url
    assert Audio(f"<_audio_>{sound}</_audio_>").has_audio()
    assert not Audio("silence").has_audio()
    assert Audio(f"<_audio_>{sound}</_audio_>").to_content() == [{"audio": url}]
    assert Audio(f"<_audio_>{url}</_audio_> transcribe it").to_content() == [
        {"audio": url},
        {"text": "transcribe it"},
    ]
    assert Audio.extract_audio_paths(f"<_audio_>{sound}</_audio_>") == [str(sound)]
    out = Audio.save_audio_to_path(url, str(tmp_path / "copy.bin"), auto_fix_suffix=True)
    assert out == str(tmp_path / "copy.mp3")
    assert (tmp_path / "copy.mp3").read_bytes() == sound.read_bytes()


# -- str2model, prompt formatting ------------------------------------------------------------


class City(BaseModel):
    name: str
    population: int


def test_to_model():
    from byzerllm.utils.str2model import to_model

    city = to_model('```json\n{"name": "Tokyo", "population": 14000000}\n```', City)
    assert city == City(name="Tokyo", population=14_000_000)
    cities = to_model(
        'Here you go: [{"name": "A", "population": 1}, {"name": "B", "population": 2},]', City
    )
    assert [c.name for c in cities] == ["A", "B"]
    with pytest.raises(byzerllm.StructuredOutputError) as err:
        to_model("no json at all", City)
    assert err.value.raw_text == "no json at all"
    with pytest.raises(ValueError):
        to_model(42, City)  # type: ignore[arg-type]


def test_format_prompt_jinja2_and_format_prompt():
    from byzerllm.utils import format_prompt, format_prompt_jinja2, format_str_jinja2

    def hello(name: str) -> str:
        """
        Hello {{ name }}!
          {% for i in items %}{{ i }} {% endfor %}
        """
        return ""

    assert format_prompt_jinja2(hello, name="Ada", items=[1, 2]) == "Hello Ada!\n  1 2"
    # as in the original, a variable without a value renders empty
    assert format_prompt_jinja2(hello, name="Ada") == "Hello Ada!"

    def old_style() -> str:
        """
        Dear {name},
            you owe {{braces}} {amount}.
        """
        return ""

    assert format_prompt(old_style, name="Bob", amount=3) == "Dear Bob,\nyou owe {braces} 3."
    with pytest.raises(byzerllm.PromptTemplateError, match="amount"):
        format_prompt(old_style, name="Bob")
    assert format_str_jinja2("{{ a }}+{{ b }}", a=1, b=2) == "1+2"


# -- get_single_llm ---------------------------------------------------------------------------


def test_get_single_llm_pro_talks_to_the_alias(worker_procs, cluster_env):
    from byzerllm.utils.llms import get_single_llm

    worker_procs.start("first_model")
    byzerllm.connect_cluster(cluster_env.redis_url)
    llm = get_single_llm("first_model, second_model", product_mode="pro")
    try:
        assert type(llm) is byzerllm.ByzerLLM
        assert llm.default_model_name == "first_model"
        assert llm.chat_oai("ping")[0].output == "ping"
        assert byzerllm.get_llm_names(llm) == ["first_model"]
    finally:
        llm.close()


def test_get_single_llm_lite_is_in_process():
    llm = byzerllm.get_single_llm("local_echo", "lite")
    try:
        assert isinstance(llm, byzerllm.SimpleByzerLLM)
        assert llm.default_model_name == "local_echo"
        llm.deploy(model_path="", pretrained_model_type="custom/echo", udf_name="local_echo")
        assert llm.chat_oai("no redis needed")[0].output == "no redis needed"
    finally:
        llm.close()


def test_get_single_llm_refuses_what_it_cannot_build():
    with pytest.raises(byzerllm.ConfigurationError, match="product_mode 'cloud'"):
        byzerllm.get_single_llm("m", "cloud")
    with pytest.raises(byzerllm.ConfigurationError, match="no model name"):
        byzerllm.get_single_llm(" , ", "pro")


def test_get_llm_names_reads_sub_clients():
    class WithSubs:
        default_model_name = "main"

        def get_sub_client(self, kind):
            return {"code": "coder_a, coder_b", "chat": [self]}.get(kind)

    llm = WithSubs()
    assert byzerllm.get_llm_names(llm) == ["main"]
    assert byzerllm.get_llm_names(llm, "code") == ["coder_a", "coder_b"]
    assert byzerllm.get_llm_names(llm, "chat") == ["main"]
    assert byzerllm.get_llm_names(llm, "missing") == ["main"]
    assert byzerllm.get_llm_names([llm, llm]) == ["main", "main"]

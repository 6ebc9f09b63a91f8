"""The original's SaaS vendors as presets of ``saas/openai``, reasoning models,
and how connections reach a vendor (proxy, TLS checks, source address).

End to end through the real ``openai`` SDK to :class:`OpenAIStub` on
loopback: a TLS copy of it with a certificate made here, and a CONNECT proxy
written here that records the tunnels it opened. Nothing reaches the
internet: a preset's own base URL is only read from its parsed options.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import socket
import ssl
import tomllib
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import byzerllm
from byzerllm import BackendError, ConfigurationError
from byzerllm.broker.errors import BackendLoadError, InvalidInferParamsError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.easy import known_spec
from byzerllm.cli.infer_params import parse_infer_params
from byzerllm.cli.known_models import KNOWN_MODELS
from byzerllm.workers.backends.saas.presets import PRESETS, PresetOpenAIBackend
from byzerllm.workers.registry import GROUP, backend_class, check_deployable
from tests.openai_stub import DEFAULT_MODELS, OpenAIStub, _Connection

KEY = "sk-test-presets"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stub() -> Iterator[OpenAIStub]:
    models = (*DEFAULT_MODELS, *(preset.example_model for preset in PRESETS.values()))
    with OpenAIStub(api_key=KEY, models=models) as server:
        yield server


def _options(model_type: str, **params: Any) -> Any:
    """A type's parsed options, as a worker would have them; no network."""
    spec = DeploySpec(alias="v", pretrained_model_type=model_type, infer_params=params)
    return backend_class(model_type).parse_options(spec)


async def _deploy(start_worker, model_type: str, base_url: str, model: str, **params: Any) -> Any:
    infer = {"saas.base_url": base_url, "saas.api_key": KEY, "saas.model": model, **params}
    return await start_worker("v", model_type=model_type, **infer)


# -- presets ---------------------------------------------------------------------------


def test_every_preset_is_a_registered_type_and_every_registration_has_a_row():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    declared = project["project"]["entry-points"][GROUP]
    preset_class = "byzerllm.workers.backends.saas.presets:PresetOpenAIBackend"
    assert {name for name, target in declared.items() if target == preset_class} == set(PRESETS)
    installed = {ep.name for ep in entry_points(group=GROUP) if ep.value == preset_class}
    assert installed == set(PRESETS), "reinstall (pip install -e .) to refresh entry points"
    for name in PRESETS:
        assert backend_class(name) is PresetOpenAIBackend


@pytest.mark.parametrize("model_type", sorted(PRESETS))
def test_a_preset_defaults_to_its_vendor_and_an_explicit_base_url_wins(model_type):
    preset = PRESETS[model_type]
    options = _options(model_type, **{"saas.api_key": KEY, "saas.model": preset.example_model})
    assert options.base_url == preset.base_url
    for alias, value in preset.defaults.items():
        assert options.model_dump(by_alias=True)[alias] == value
    mine = _options(
        model_type,
        **{
            "saas.api_key": KEY,
            "saas.model": "m",
            "saas.base_url": "https://gateway.example/v1/",
        },
    )
    assert mine.base_url == "https://gateway.example/v1"
    empty = _options(model_type, **{"saas.api_key": KEY, "saas.model": "m", "saas.base_url": ""})
    assert empty.base_url == preset.base_url, "an empty base URL is the vendor's, not OpenAI's"


@pytest.mark.parametrize("model_type", sorted(PRESETS))
async def test_a_preset_pointed_at_a_server_answers_there(start_worker, llm, stub, model_type):
    model = PRESETS[model_type].example_model
    await _deploy(start_worker, model_type, stub.base_url, model)
    [response] = await llm.chat_oai("hello vendor", model="v")
    assert response.output == "hello vendor"
    assert stub.last_request is not None and stub.last_request["model"] == model
    meta = await llm.get_meta(model="v")
    assert meta["backend"] == model_type
    assert meta["vendor"] == PRESETS[model_type].vendor


async def test_a_preset_serves_embeddings(start_worker, llm, stub):
    await _deploy(start_worker, "saas/zhipu", stub.base_url, "text-embedding-3-small")
    [vector] = await llm.emb("v", ["some text"])
    assert len(vector.output) == 16


def test_a_vendor_preset_without_key_names_the_vendor():
    with pytest.raises(ConfigurationError, match=r"saas\.api_key, the Zhipu AI \(GLM\) API key"):
        _options("saas/zhipu", **{"saas.model": "glm-4-flash"})
    # pointed elsewhere (a local gateway), no key is needed
    local = _options("saas/zhipu", **{"saas.model": "glm-4", "saas.base_url": "http://gw/v1"})
    assert local.base_url == "http://gw/v1"


def test_a_preset_without_model_names_a_vendor_model():
    with pytest.raises(ConfigurationError, match=r"saas\.model=ernie-4\.0-turbo-8k"):
        _options("saas/qianfan", **{"saas.api_key": KEY})


def test_a_typo_in_a_preset_key_is_refused_with_the_right_name():
    spec = DeploySpec(
        alias="v",
        pretrained_model_type="saas/deepseek",
        infer_params={"saas.api_key": KEY, "saas.model": "deepseek-chat", "saas.is_reasonig": 1},
    )
    with pytest.raises(InvalidInferParamsError, match=r"did you mean saas\.is_reasoning"):
        check_deployable(spec)


@pytest.mark.parametrize(
    ("model_type", "key", "advice"),
    [
        ("saas/qianfan", "saas.secret_key", "bce-v3"),
        ("saas/sparkdesk", "saas.api_secret", "APIPassword"),
        ("saas/minimax", "saas.group_id", "needs no group id"),
        ("saas/baichuan", "saas.baichuan_api_url", "saas.base_url"),
    ],
)
def test_the_original_sdk_keys_are_refused_with_what_to_use_now(model_type, key, advice):
    params = {"saas.api_key": KEY, "saas.model": "m", key: "x"}
    with pytest.raises(InvalidInferParamsError, match=advice) as caught:
        _options(model_type, **params)
    assert key in str(caught.value)


async def test_deepseek_and_siliconflow_presets_continue_a_prefix_their_way(
    start_worker, llm, stub
):
    conversation = [
        {"role": "user", "content": "once upon a time there was"},
        {"role": "assistant", "content": "once upon"},
    ]
    await _deploy(start_worker, "saas/siliconflow", stub.base_url, "deepseek-chat")
    [answer] = await llm.chat_oai(conversation, model="v", llm_config={"gen.response_prefix": 1})
    assert answer.output == " a time there was"
    assert stub.last_request is not None and stub.last_request["prefix"] == "once upon"
    # a retry may go on from the text so far: the preset knows its vendor
    # continues, though the URL (a loopback stub) does not say which vendor
    assert (await llm.get_meta(model="v"))["support_assistant_prefix"] is True


# -- reasoning models ------------------------------------------------------------------


async def test_reasoning_sends_no_sampling_and_a_max_completion_tokens_limit(
    start_worker, llm, stub
):
    await _deploy(
        start_worker,
        "saas/openai",
        stub.base_url,
        "gpt-4o",
        **{"saas.is_reasoning": True, "saas.max_output_tokens": 2, "saas.temperature": 0.5},
    )
    [response] = await llm.chat_oai(
        "one two three", model="v", llm_config={"temperature": 0.2, "top_p": 0.9}
    )
    sent = stub.last_request
    assert sent is not None
    assert sent["max_completion_tokens"] == 2
    assert not {"max_tokens", "temperature", "top_p"} & set(sent)
    assert response.output == "one two"


async def test_deepseek_reasoner_thinks_aloud_and_reads_max_tokens(start_worker, llm, stub):
    await _deploy(
        start_worker,
        "saas/deepseek",
        stub.base_url,
        "deepseek-reasoner",
        **{"saas.is_reasoning": "true"},
    )
    [response] = await llm.chat_oai("why so", model="v", llm_config={"max_length": 5})
    assert response.metadata["reasoning_content"] == "The user said: why so"
    sent = stub.last_request
    assert sent is not None and sent["max_tokens"] == 5 and "temperature" not in sent
    items = [item async for item in llm.stream_chat_oai("and now", model="v", delta_mode=True)]
    assert "".join(meta.reasoning_content for _, meta in items) == "The user said: and now"
    assert "".join(text for text, _ in items) == "and now"


async def test_the_original_reasoning_openai_type_is_a_reasoning_preset(start_worker, llm, stub):
    await _deploy(start_worker, "saas/reasoning_openai", stub.base_url, "gpt-4o")
    await llm.chat_oai("think", model="v", llm_config={"temperature": 0.3, "max_tokens": 9})
    sent = stub.last_request
    assert sent is not None and sent["max_completion_tokens"] == 9 and "temperature" not in sent


def test_simple_byzerllm_deploys_a_preset_in_process_with_the_original_params(stub):
    """The original's SimpleByzerLLM.deploy with what auto-coder passed it."""
    llm = byzerllm.SimpleByzerLLM(default_model_name="r1")
    try:
        llm.deploy(
            model_path="",
            pretrained_model_type="saas/deepseek",
            udf_name="r1",
            infer_params={
                "saas.base_url": stub.base_url,
                "saas.api_key": KEY,
                "saas.model": "deepseek-reasoner",
                "saas.is_reasoning": True,
                "saas.max_output_tokens": 8096,
            },
        )
        [response] = llm.chat_oai([{"role": "user", "content": "in process"}])
    finally:
        llm.undeploy("r1")
    assert response.output == "in process"
    assert response.metadata["reasoning_content"] == "The user said: in process"
    sent = stub.last_request
    assert sent is not None and sent["max_tokens"] == 8096 and "temperature" not in sent


def test_bare_is_reasoning_and_https_verify_are_the_original_spellings():
    options = _options(
        "saas/openai",
        **{"saas.model": "o1", "saas.api_key": KEY, "is_reasoning": True, "https_verify": False},
    )
    assert options.is_reasoning is True and options.https_verify is False


# -- connections: TLS checks, proxy, source address -------------------------------------


class TLSStub(OpenAIStub):
    """The stub behind TLS, with a certificate made for 127.0.0.1 by the test;
    ``peers`` are the addresses its connections came from."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(api_key=KEY)
        self.context = context
        self.peers: list[str] = []

    @property
    def base_url(self) -> str:
        return f"https://{self.host}:{self.port}/v1"

    async def listen(self) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _PeerRecorded(self), self.host, self.port, ssl=self.context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server


class _PeerRecorded(_Connection):
    stub: TLSStub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stub.peers.append(transport.get_extra_info("peername")[0])
        super().connection_made(transport)


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate (its own CA) for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "byzerllm test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def cert(tmp_path: Path) -> Path:
    return _self_signed(tmp_path)[0]


@pytest.fixture
def tls_stub(cert: Path) -> Iterator[TLSStub]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.with_suffix(".key"))
    with TLSStub(context) as server:
        yield server


class ConnectProxy:
    """An HTTP proxy that tunnels (CONNECT), as egress proxies do for https; it
    records each tunnel as (the client's address, the target)."""

    def __init__(self) -> None:
        self.tunnels: list[tuple[str, str]] = []
        self.url = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> ConnectProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:  # open tunnels end: each side reads EOF
            writer.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ")
            if method != "CONNECT":
                writer.write(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            self.tunnels.append((writer.get_extra_info("peername")[0], target))
            host, _, port = target.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            self._writers.add(up_writer)
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError):
            pass  # a client that hung up
        finally:
            writer.close()
            self._tasks.discard(task)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    finally:
        sink.close()


@pytest.fixture
async def proxy() -> AsyncIterator[ConnectProxy]:
    async with ConnectProxy() as server:
        yield server


def _second_loopback_address() -> str:
    """127.0.0.2: on Linux all of 127/8 is this host, so a connection can leave
    from an address the servers can tell apart from 127.0.0.1."""
    with contextlib.closing(socket.socket()) as probe:
        try:
            probe.bind(("127.0.0.2", 0))
        except OSError:
            pytest.skip("127.0.0.2 is not a local address on this host")
    return "127.0.0.2"


async def test_a_self_signed_vendor_is_refused_by_default(start_worker, llm, tls_stub):
    await _deploy(
        start_worker, "saas/openai", tls_stub.base_url, "gpt-4o", **{"saas.max_retries": 0}
    )
    with pytest.raises(BackendError, match="CERTIFICATE_VERIFY_FAILED"):
        await llm.chat_oai("hello", model="v")


async def test_https_verify_false_reaches_a_self_signed_vendor(start_worker, llm, tls_stub):
    await _deploy(
        start_worker,
        "saas/deepseek",
        tls_stub.base_url,
        "deepseek-chat",
        **{"saas.https_verify": False},
    )
    [response] = await llm.chat_oai("over tls", model="v")
    assert response.output == "over tls"


async def test_https_verify_names_a_ca_bundle_to_trust(start_worker, llm, tls_stub, cert):
    await _deploy(
        start_worker,
        "saas/openai",
        tls_stub.base_url,
        "gpt-4o",
        **{"saas.https_verify": str(cert)},
    )
    [response] = await llm.chat_oai("trusted", model="v")
    assert response.output == "trusted"


async def test_a_missing_ca_bundle_fails_the_worker_start(start_worker, tls_stub, tmp_path):
    with pytest.raises(BackendLoadError, match=r"saas\.https_verify.*CA bundle"):
        await _deploy(
            start_worker,
            "saas/openai",
            tls_stub.base_url,
            "gpt-4o",
            **{"saas.https_verify": str(tmp_path / "missing.pem")},
        )


async def test_connections_leave_from_the_local_address(start_worker, llm, tls_stub, cert):
    source = _second_loopback_address()
    await _deploy(
        start_worker,
        "saas/openai",
        tls_stub.base_url,
        "gpt-4o",
        **{"saas.local_address": source, "saas.https_verify": str(cert)},
    )
    [response] = await llm.chat_oai("from there", model="v")
    assert response.output == "from there"
    assert set(tls_stub.peers) == {source}


async def test_the_proxy_carries_the_requests(start_worker, llm, tls_stub, proxy):
    await _deploy(
        start_worker,
        "saas/zhipu",
        tls_stub.base_url,
        "gpt-4o",
        **{"saas.proxies": proxy.url, "saas.https_verify": False},
    )
    [response] = await llm.chat_oai("through the proxy", model="v")
    assert response.output == "through the proxy"
    assert proxy.tunnels == [("127.0.0.1", f"127.0.0.1:{tls_stub.port}")]


def test_a_proxy_and_a_local_address_together_are_refused():
    """httpx would connect to the proxy from wherever the OS routes: refused
    rather than ignored, as the original ignored it."""
    with pytest.raises(ConfigurationError, match=r"saas\.local_address cannot be combined"):
        _options(
            "saas/moonshot",
            **{
                "saas.model": "m",
                "saas.api_key": KEY,
                "saas.proxies": "http://127.0.0.1:3128",
                "saas.local_address": "127.0.0.1",
            },
        )


async def test_proxies_by_scheme_as_json_text(start_worker, llm, tls_stub, proxy):
    await _deploy(
        start_worker,
        "saas/openai",
        tls_stub.base_url,
        "gpt-4o",
        **{"saas.proxies": json.dumps({"https": proxy.url}), "saas.https_verify": "false"},
    )
    [response] = await llm.chat_oai("by scheme", model="v")
    assert response.output == "by scheme"
    assert [target for _, target in proxy.tunnels] == [f"127.0.0.1:{tls_stub.port}"]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("saas.proxies", "ftp://user:pw@proxy:21", "not a proxy URL"),
        ("saas.proxies", "{not json", "nor a JSON object"),
        ("saas.local_address", "eth0", "not an IP address"),
    ],
)
def test_bad_connection_settings_fail_the_deploy(key, value, problem):
    with pytest.raises(ConfigurationError, match=rf"{key}.*{problem}") as caught:
        _options("saas/openai", **{"saas.model": "gpt-4o", "saas.api_key": KEY, key: value})
    assert "pw" not in str(caught.value)


def test_a_proxy_password_is_masked_where_the_spec_is_shown():
    spec = DeploySpec(
        alias="v",
        pretrained_model_type="saas/openai",
        infer_params={
            "saas.model": "gpt-4o",
            "saas.proxies": json.dumps({"https": "http://bob:hunter2@proxy.corp:3128"}),
        },
    )
    shown = spec.public_hash()["infer_params"]
    assert "hunter2" not in shown
    assert "bob:" in shown and "proxy.corp:3128" in shown


def test_token_counts_are_shown_and_token_secrets_masked():
    spec = DeploySpec(
        alias="v",
        pretrained_model_type="saas/openai",
        infer_params=parse_infer_params(
            "saas.max_output_tokens=8096 saas.max_tokens_field=max_tokens saas.access_token=t0k"
        ),
    )
    assert spec.infer_params["saas.max_output_tokens"] == 8096
    shown = json.loads(spec.public_hash()["infer_params"])
    assert shown == {
        "saas.max_output_tokens": 8096,
        "saas.max_tokens_field": "max_tokens",
        "saas.access_token": "******",
    }


# -- easy-byzerllm's names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "model_type", "params"),
    [
        ("gpt4o", "saas/openai", {"saas.model": "gpt-4o"}),
        ("gpt-3.5-turbo-0125", "saas/openai", {"saas.model": "gpt-3.5-turbo-0125"}),
        ("sonnet3.5", "saas/claude", {"saas.model": "claude-3-5-sonnet-20240620"}),
        (
            "yi-vision",
            "saas/openai",
            {"saas.model": "yi-vision", "saas.base_url": "https://api.lingyiwanwu.com/v1"},
        ),
        ("qwen-vl-chat-v1", "saas/qianwen_vl", {"saas.model": "qwen-vl-chat-v1"}),
        (
            "alibaba/Qwen2-72B-Instruct",
            "saas/openai",
            {
                "saas.model": "alibaba/Qwen2-72B-Instruct",
                "saas.base_url": "https://api.siliconflow.cn/v1",
            },
        ),
    ],
)
def test_the_original_easy_byzerllm_names_deploy(name, model_type, params):
    spec = known_spec(name, "tok-123", None, None, ())
    assert spec.pretrained_model_type == model_type
    assert spec.infer_params == {**params, "saas.api_key": "tok-123"}


def test_every_easy_byzerllm_name_passes_the_deploy_checks():
    for name in KNOWN_MODELS:
        check_deployable(known_spec(name, "tok-123", None, None, ()))


# -- docs ------------------------------------------------------------------------------


def test_the_docs_list_every_preset_with_its_base_url():
    text = (ROOT / "docs" / "saas-backends.md").read_text("utf-8")
    for name, preset in PRESETS.items():
        assert f"`{name}`" in text, name
        assert preset.base_url in text, preset.base_url

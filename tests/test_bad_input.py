"""Bad input is named, not ignored; private files stay private.

A typo in an ``--infer_params`` key used to be dropped silently, so the
model ran with a default the user never chose. Now the backend refuses it
when it is built, with the closest known keys, in the worker and therefore
in ``deploy``. BYZERLLM_HOME (cluster key, logs) is created 0700 and worker
logs 0600: they may hold prompts, answers and paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from byzerllm import ConfigurationError, InvalidInferParamsError
from byzerllm.broker.spec import DeploySpec
from byzerllm.cli.main import byzerllm_cli
from byzerllm.workers.process import spawn_worker, wait_ready
from byzerllm.workers.registry import backend_class
from tests.test_deploy import Cluster
from tests.test_guide_deploy_lines import GUIDE_LINES, argv


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def build(model_type: str, infer_backend: str = "", **params: object) -> object:
    spec = DeploySpec(
        alias="typo",
        pretrained_model_type=model_type,
        infer_backend=infer_backend,
        model_path="/models/m.gguf",
        infer_params=params,
    )
    return backend_class(model_type, infer_backend)(spec)


# -- infer_params keys --------------------------------------------------------------------


async def test_a_typo_stops_the_worker_with_the_close_name(start_worker):
    with pytest.raises(InvalidInferParamsError) as caught:
        await start_worker("echo", prefx="hi: ")
    message = str(caught.value)
    assert "prefx" in message and "did you mean prefix" in message
    assert isinstance(caught.value, ConfigurationError)


@pytest.mark.parametrize(
    ("model_type", "infer_backend", "typo", "suggested"),
    [
        ("saas/openai", "", "saas.modle", "saas.model"),
        ("saas/claude", "", "saas.base_ulr", "saas.base_url"),
        ("saas/aws_bedrock", "", "saas.region", "saas.region_name"),
        ("saas/volcengine", "", "saas.appid", "saas.app_id"),
        ("custom/auto", "llama_cpp", "n_cxt", "n_ctx"),
        ("custom/bge", "transformers", "batch_sise", "batch_size"),
        ("custom/auto", "vllm", "max_model_len", "backend.max_model_len"),
        ("custom/sensevoice", "transformers", "vad_modle", "vad_model"),
        (
            "custom/sensevoice",
            "transformers",
            "vad_kwargs.max_single_segment_tim",
            "vad_kwargs.max_single_segment_time",
        ),
    ],
)
def test_every_backend_names_an_unknown_key(model_type, infer_backend, typo, suggested):
    with pytest.raises(InvalidInferParamsError) as caught:
        build(model_type, infer_backend, **{typo: "1"})
    message = str(caught.value)
    assert repr(typo) in message, "the error names the bad key"
    assert suggested in message, "and the key that was meant"


def test_a_key_with_nothing_close_lists_the_known_ones():
    with pytest.raises(InvalidInferParamsError, match=r"known keys: .*n_ctx.*n_gpu_layers"):
        build("custom/auto", "llama_cpp", **{"saas.api_key": "x"})


def test_every_key_the_backends_read_is_accepted():
    """Keys read through options, aliases, and vLLM's backend.* (checked by vLLM at start)."""
    build("custom/auto", "llama_cpp", num_gpu_layers=0, n_gpu_layers=0, verbose=True)
    build("custom/auto", "transformers", torch_dtype="float32", dtype="auto", max_new_tokens=8)
    build("custom/auto", "vllm", **{"backend.max_model_len": 28000, "backend.anything": 1})
    build("custom/echo", "", prefix="x", reply="y", delay=0.1, chunks=2, dim=4)
    build("saas/openai", "", **{"saas.model": "gpt-4o", "saas.api_key": "sk-x", "model": "m"})


@pytest.mark.parametrize("line", GUIDE_LINES)
def test_every_guide_deploy_line_builds(line):
    """What the guide deploys is accepted by the backend it names, not only parsed:
    every type it names has a backend (custom/sensevoice was the last one missing)."""
    result = CliRunner().invoke(byzerllm_cli, ["deploy", *argv(line), "--dry_run"])
    assert result.exit_code == 0, result.output
    spec = DeploySpec(**json.loads(result.output))
    cls = backend_class(spec.pretrained_model_type, spec.infer_backend)
    try:
        cls.parse_options(spec)
    except InvalidInferParamsError:
        raise
    except ConfigurationError as exc:  # the guide's azure endpoint has one slash too few
        assert "saas.azure_endpoint must be a URL" in str(exc)


@pytest.mark.timeout(180)
def test_deploy_reports_the_typo(settings, tmp_path):
    cluster = Cluster(settings, tmp_path)
    try:
        cluster.node("n1")
        result = cluster.cli(
            "deploy",
            "--pretrained_model_type",
            "custom/echo",
            "--infer_params",
            "prefx=hi",
            "--model",
            "typo",
            "--timeout",
            "120",
        )
    finally:
        cluster.stop()
    assert result.returncode != 0
    assert "'prefx'" in result.stderr and "did you mean prefix" in result.stderr


# -- private files ------------------------------------------------------------------------


def test_home_is_created_private(monkeypatch, tmp_path):
    from byzerllm.broker.settings import ensure_home_dir

    home = tmp_path / "home"
    monkeypatch.setenv("BYZERLLM_HOME", str(home))
    logs = ensure_home_dir("logs")
    assert logs == home / "logs"
    assert mode(home) == 0o700 and mode(logs) == 0o700


def test_an_existing_open_home_is_made_private(monkeypatch, tmp_path):
    from byzerllm.broker.settings import ensure_home_dir

    home = tmp_path / "old_home"
    (home / "redis").mkdir(parents=True)
    os.chmod(home, 0o755)
    os.chmod(home / "redis", 0o755)
    monkeypatch.setenv("BYZERLLM_HOME", str(home))
    assert ensure_home_dir() == home
    assert ensure_home_dir("redis") == home / "redis"
    assert mode(home) == 0o700 and mode(home / "redis") == 0o700


def test_worker_log_files_are_private(settings, tmp_path):
    old_umask = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        fresh = tmp_path / "fresh.log"
        reused = tmp_path / "reused.log"
        reused.write_text("an earlier run\n")
        os.chmod(reused, 0o644)
        workers = [
            spawn_worker(
                DeploySpec(alias=f"logs{i}", pretrained_model_type="custom/echo"),
                settings,
                log_path=path,
            )
            for i, path in enumerate((fresh, reused))
        ]
    finally:
        os.umask(old_umask)
    try:
        for worker in workers:
            asyncio.run(wait_ready(settings, worker, 60))
    finally:
        for worker in workers:
            worker.stop(30)
    assert mode(fresh) == 0o600 and mode(reused) == 0o600
    assert reused.read_text().startswith("an earlier run"), "appended, not replaced"

"""``byzerllm deploy --file config.yaml``, and deploying the same spec twice.

The CLI runs as a user runs it, a subprocess, against a real node agent and
Redis (:class:`tests.test_deploy.Cluster`) and the OpenAI protocol stub that
requires the API key: an answer proves the key from the environment arrived.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.openai_stub import OpenAIStub
from tests.test_deploy import Cluster

pytestmark = pytest.mark.timeout(180)

SECRET = "sk-from-the-environment-7c1e"


@pytest.fixture
def cluster(settings, tmp_path) -> Iterator[Cluster]:
    c = Cluster(settings, tmp_path)
    yield c
    c.stop()


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def deploy_file(tmp_path: Path, base_url: str, extra: str = "", name: str = "d.yaml") -> str:
    return write(
        tmp_path / name,
        f"""\
model: from_file
pretrained_model_type: saas/openai
num_workers: 1
worker_concurrency: ENV {{{{TEST_CONCURRENCY}}}}
cpus_per_worker: 0.001
gpus_per_worker: 0
infer_params:
  saas.base_url: {base_url}
  saas.api_key: ENV {{{{TEST_OPENAI_KEY}}}}
  saas.model: gpt-4o
{extra}""",
    )


def generation(sync_redis, settings, alias: str) -> bytes | None:
    return sync_redis.hget(f"{settings.prefix}:{{{alias}}}:spec", "generation")


def test_deploy_from_file_reads_env_and_same_spec_again_is_a_no_op(
    cluster, tmp_path, sync_redis, settings
):
    with OpenAIStub(api_key=SECRET) as stub:
        cluster.node("n1")
        cluster.env.update({"TEST_OPENAI_KEY": SECRET, "TEST_CONCURRENCY": "3"})
        config = deploy_file(tmp_path, stub.base_url)

        first = cluster.cli("deploy", "--file", config)
        assert first.returncode == 0, first.stderr
        assert "from_file: 1/1 worker(s) ready" in first.stdout
        answer = cluster.cli("chat", "from_file", "the key from the environment works")
        assert answer.stdout.strip() == "the key from the environment works", answer.stderr
        assert cluster.stat("from_file")["worker_max_concurrency"] == 3  # ENV, typed

        # the same spec again (its key sealed anew each time): nothing to do, exit 0
        again = cluster.cli("deploy", "--file", config)
        assert again.returncode == 0, again.stderr
        assert "already deployed with this spec" in again.stdout
        assert "1/1 worker(s) ready" in again.stdout
        assert generation(sync_redis, settings, "from_file") == b"1"

        # the file's redis_url names the cluster, over BYZERLLM_REDIS_URL
        elsewhere = dict(cluster.env)
        cluster.env.update(
            {"BYZERLLM_REDIS_URL": "redis://127.0.0.1:1/0", "TEST_REDIS": settings.redis_url}
        )
        url_line = "redis_url: ENV {{TEST_REDIS}}\n"
        with_url = deploy_file(tmp_path, stub.base_url, url_line, name="with_url.yaml")
        pointed = cluster.cli("deploy", "--file", with_url)
        cluster.env = elsewhere
        assert pointed.returncode == 0, pointed.stderr
        assert "already deployed with this spec" in pointed.stdout

        # a command-line option wins over the file: another spec, which needs --force
        other = ("deploy", "--file", config, "--infer_params", "saas.model=gpt-4o-mini")
        refused = cluster.cli(*other)
        assert refused.returncode != 0
        assert "--force" in refused.stderr and "infer_params.saas.model" in refused.stderr
        assert generation(sync_redis, settings, "from_file") == b"1"
        replaced = cluster.cli(*other, "--force")
        assert replaced.returncode == 0, replaced.stderr
        assert generation(sync_redis, settings, "from_file") == b"2"
        assert cluster.cli("chat", "from_file", "now mini").returncode == 0
        assert stub.last_request is not None and stub.last_request["model"] == "gpt-4o-mini"

        # another key in the environment is another spec too
        cluster.env["TEST_OPENAI_KEY"] = "sk-another-key-99"
        changed_key = cluster.cli(*other)
        assert changed_key.returncode != 0 and "infer_params.saas.api_key" in changed_key.stderr

    outputs = [first, again, pointed, refused, replaced, changed_key]
    for result in outputs:
        assert SECRET not in result.stdout + result.stderr
        assert "sk-another-key-99" not in result.stdout + result.stderr
    for log in cluster.home.rglob("*.log"):
        assert SECRET not in log.read_text(errors="replace"), log


def test_command_line_options_win_over_the_file(cluster, tmp_path):
    cluster.env["TEST_OPENAI_KEY"] = SECRET
    config = write(
        tmp_path / "c.yaml",
        """\
model: file_alias
pretrained_model_type: saas/openai
num_workers: 2
infer_params:
  saas.api_key: ENV {{TEST_OPENAI_KEY}}
  saas.model: gpt-4o
  saas.timeout: 30
""",
    )
    result = cluster.cli(
        "deploy", "--file", config, "--num_workers", "3", "--infer_params", "saas.timeout=5",
        "--dry_run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["alias"] == "file_alias" and shown["num_workers"] == 3
    assert shown["pretrained_model_type"] == "saas/openai"
    assert shown["infer_params"] == {
        "saas.api_key": "******",
        "saas.model": "gpt-4o",
        "saas.timeout": 5,
    }
    assert SECRET not in result.stdout + result.stderr


def test_missing_variable_and_bad_files_are_clear_errors_without_secrets(cluster, tmp_path):
    missing = write(
        tmp_path / "m.yaml",
        "model: m\ninfer_params:\n  saas.api_key: ENV {{BYZERLLM_TEST_UNSET_KEY}}\n",
    )
    cluster.env.pop("BYZERLLM_TEST_UNSET_KEY", None)
    result = cluster.cli("deploy", "--file", missing)
    assert result.returncode != 0
    assert "BYZERLLM_TEST_UNSET_KEY" in result.stderr
    assert "infer_params.saas.api_key" in result.stderr
    assert "Traceback" not in result.stderr

    broken = write(tmp_path / "b.yaml", f"model: b\ninfer_params:\n  saas.api_key: {SECRET}: x\n")
    result = cluster.cli("deploy", "--file", broken)
    assert result.returncode != 0
    assert "not valid YAML" in result.stderr and "line 3" in result.stderr
    assert SECRET not in result.stdout + result.stderr

    typo = write(tmp_path / "t.yaml", "model: t\nnum_worker: 2\n")
    result = cluster.cli("deploy", "--file", typo)
    assert result.returncode != 0 and "unknown key num_worker" in result.stderr

    no_model = write(tmp_path / "n.yaml", "pretrained_model_type: custom/echo\n")
    result = cluster.cli("deploy", "--file", no_model)
    assert result.returncode != 0 and "--model" in result.stderr

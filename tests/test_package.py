"""What installing the package gives a user: one import name, a light import."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
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


def _public_names(module: object) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }


def test_public_api_is_declared_once():
    exported = byzerllm.__all__
    assert exported == sorted(exported), "keep __all__ sorted"
    assert len(exported) == len(set(exported))
    assert {"ByzerLLM", "AsyncByzerLLM", "ByzerLLMError", "LLMResponse"} <= set(exported)
    for name in exported:
        assert hasattr(byzerllm, name), name
    # complete: every public name the package defines or imports is declared
    missing = _public_names(byzerllm) - set(exported) - {"annotations"}
    assert not missing, f"public but not in __all__: {sorted(missing)}"


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in our modules (importable without extras)."""
    found: dict[str, type[BaseException]] = {}
    names = []
    for package in ("byzerllm", "byzerllm.broker", "byzerllm.client", "byzerllm.workers"):
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [info.name for info in pkgutil.walk_packages(path, package + ".")]
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:  # an optional extra is missing: its backend is not ours to check
            continue
        for attr, value in vars(module).items():
            if (
                isinstance(value, type)
                and issubclass(value, BaseException)
                and value.__module__ == module.__name__
                and not attr.startswith("_")
            ):
                found[attr] = value
    return found


def test_every_error_is_in_the_one_tree_and_exported():
    classes = _error_classes()
    assert "ByzerLLMError" in classes and "DeployError" in classes
    outside = [n for n, c in classes.items() if not issubclass(c, byzerllm.ByzerLLMError)]
    assert not outside, f"errors outside the ByzerLLMError tree: {outside}"
    unexported = sorted(set(classes) - set(byzerllm.__all__))
    assert not unexported, f"errors users cannot import from byzerllm: {unexported}"
    for name, cls in classes.items():
        assert getattr(byzerllm, name) is cls, name


@pytest.mark.slow
def test_wheel_installs_only_the_byzerllm_import_name(tmp_path):
    build = subprocess.run(
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
        capture_output=True,
        text=True,
    )
    # setuptools deprecates data folders it is not told are packages: one day it
    # would leave them out (the dashboard's static/ was one)
    assert "absent from the `packages` configuration" not in build.stderr, build.stderr
    [wheel] = tmp_path.glob("byzerllm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"byzerllm"}
    for sub in ("broker", "workers", "client", "cli"):
        assert f"byzerllm/{sub}/__init__.py" in names
    assert "byzerllm/broker/submit.lua" in names
    for asset in ("dashboard.html", "dashboard.js", "dashboard.css"):  # no CDN: they ship
        assert f"byzerllm/client/gateway/static/{asset}" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "custom/echo" in text and "byzerllm = byzerllm.cli.main:byzerllm_cli" in text

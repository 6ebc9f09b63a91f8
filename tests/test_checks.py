"""The project's own checks: they must see what they claim to check."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _typecheck_module():
    spec = importlib.util.spec_from_file_location("typecheck", ROOT / "scripts" / "typecheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["typecheck"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_type_check_sees_a_cross_package_error(tmp_path):
    """A BrokerSettings assigned to an int in client code is an error mypy reports,
    with the repository path of the file: first-party imports are not ``Any``."""
    pytest.importorskip("mypy")
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from byzerllm.broker.settings import BrokerSettings\n"
        "from byzerllm.client.llm import AsyncByzerLLM\n\n"
        "port: int = BrokerSettings()\n"
        "reveal_type(AsyncByzerLLM)\n"
    )
    typecheck = _typecheck_module()
    report, status = typecheck.run(
        tmp_path / "tree",
        extra={"byzerllm/client/_probe.py": probe},
        cache_dir=ROOT / ".mypy_cache" / "self-test",  # not shared with a concurrent check
    )
    assert status == 1, report
    assert 'has type "BrokerSettings", variable has type "int"' in report, report
    assert "probe.py:4: error" in report, report
    assert 'Revealed type is "def' in report and "AsyncByzerLLM" in report, report
    assert "Any" not in [line for line in report.splitlines() if "Revealed" in line][0]


def test_ci_runs_the_checks_and_the_readme_names_them():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "scripts/check" in ci and "scripts/test" in ci
    check = (ROOT / "scripts" / "check").read_text()
    assert "ruff check" in check and "ruff format --check" in check and "typecheck.py" in check
    assert "scripts/check" in (ROOT / "README.md").read_text()

"""The project's own checks: they must see what they claim to check."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _typecheck(tree: Path, probe: Path, cache_dir: Path) -> tuple[str, int]:
    """scripts/typecheck.py's run(), in a process of its own: mypy's object graph
    would otherwise stay in the test session and cost minutes of GC when it exits."""
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
        "import typecheck; report, status = typecheck.run(Path(sys.argv[2]),"
        " extra={'byzerllm/client/_probe.py': Path(sys.argv[3])}, cache_dir=Path(sys.argv[4]));"
        "print(json.dumps([report, status]))"
    )
    args = [str(ROOT / "scripts"), str(tree), str(probe), str(cache_dir)]
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report, status = json.loads(done.stdout.strip().splitlines()[-1])
    return report, status


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
    # the cache is not shared with a concurrent check
    report, status = _typecheck(tmp_path / "tree", probe, ROOT / ".mypy_cache" / "self-test")
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

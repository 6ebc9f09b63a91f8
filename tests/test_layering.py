"""Dependencies point one way: cli -> client -> broker, workers -> broker.

client and workers never import each other, but for the backend registry:
``deploy`` runs a backend's own spec checks before placing any worker, so a
typo fails at once instead of after three worker crashes. broker imports
neither; none of
them imports the top-level ``byzerllm`` package, which only re-exports them
(the public API and the original's import paths). Every import counts, also
those inside functions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("broker", "client", "workers", "cli")
# what each room may import, besides itself
ALLOWED = {
    "broker": set(),
    "client": {"broker", "workers.registry"},
    "workers": {"broker"},
    "cli": {"broker", "client", "workers"},
}


def _first_party_imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [(node.lineno, n) for n in names if n == "byzerllm" or n.startswith("byzerllm.")]
    return found


def _violations(room: str) -> list[str]:
    problems = []
    for path in sorted((ROOT / room).rglob("*.py")):
        for line, module in _first_party_imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else "byzerllm"
            module_in_room = ".".join(parts[1:3])
            allowed = ALLOWED[room]
            if target != room and target not in allowed and module_in_room not in allowed:
                problems.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return problems


@pytest.mark.parametrize("room", ROOMS)
def test_imports_point_the_right_way(room):
    assert _violations(room) == []


def test_the_check_sees_a_wrong_way_import(tmp_path, monkeypatch):
    """A broker module importing the client is caught (so the test can fail)."""
    room = tmp_path / "broker"
    room.mkdir()
    (room / "bad.py").write_text("def f():\n    from byzerllm.client.llm import AsyncByzerLLM\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["ROOT"]), "ROOT", tmp_path)
    assert _violations("broker") == ["broker/bad.py:2 imports byzerllm.client.llm"]


def _redis_imports_at_run_time(path: Path) -> list[int]:
    """Lines importing redis-py outside an ``if TYPE_CHECKING:`` block."""
    tree = ast.parse(path.read_text("utf-8"), filename=str(path))
    guarded = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    lines = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Import):
            if any(alias.name.split(".")[0] == "redis" for alias in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "redis":
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("room", [r for r in ROOMS if r != "broker"])
def test_only_the_broker_talks_to_redis(room):
    """Every Redis operation is in broker/; elsewhere redis-py only names types."""
    found = [
        f"{path.relative_to(ROOT)}:{line}"
        for path in sorted((ROOT / room).rglob("*.py"))
        for line in _redis_imports_at_run_time(path)
    ]
    assert found == []

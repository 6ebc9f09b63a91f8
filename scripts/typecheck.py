"""Type-check byzerllm as it is installed, so mypy sees every first-party import.

The top-level folders (broker/, workers/, client/, cli/) become
``byzerllm.broker`` and so on only through setuptools' ``package-dir``, which
mypy cannot follow: checked in place, ``from byzerllm.broker...`` in client
code would resolve to nothing (or, with ``ignore_missing_imports``, to
``Any``) and cross-package errors would go unseen. This builds the installed
layout as a tree of symlinks under build/typecheck/, runs mypy on it with the
project's settings, and prints findings with the repository's own paths.
The benchmarks are checked beside it (they are not installed, but they import it).
"""

from __future__ import annotations

import os
import shutil
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def package_dirs() -> dict[str, Path]:
    """``byzerllm.*`` package -> its folder, from pyproject's package-dir."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    mapping = config["tool"]["setuptools"]["package-dir"]
    return {name: ROOT / folder for name, folder in mapping.items()}


def build_tree(tree: Path, extra: dict[str, Path] | None = None) -> Path:
    """The installed layout as a tree of file symlinks: ``byzerllm/broker/keys.py``
    links to ``broker/keys.py`` and so on.

    ``extra`` adds more files (a module path like ``byzerllm/client/x.py`` ->
    the file to link there); the self-test of this script uses it.
    """
    shutil.rmtree(tree, ignore_errors=True)
    for name, folder in package_dirs().items():
        target = tree.joinpath(*name.split("."))
        for source in folder.rglob("*.py"):
            relative = source.relative_to(folder)
            if "__pycache__" in relative.parts:
                continue
            link = target / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(source)
    for module, source in (extra or {}).items():
        link = tree / module
        link.symlink_to(source)
    return tree


def run(
    tree: Path = TREE,
    extra: dict[str, Path] | None = None,
    cache_dir: Path = ROOT / ".mypy_cache",
) -> tuple[str, int]:
    """mypy's findings (with repository paths) and its exit status."""
    build_tree(tree, extra)
    out, err, status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(cache_dir),
            str(tree / "byzerllm"),
            # the benchmarks import the package and each other: a rename in either
            # must not leave one that only fails when someone runs it
            str(ROOT / "benchmarks"),
        ]
    )
    # findings name the repository's files, not the links
    prefixes = (str(tree) + os.sep, os.path.relpath(tree, ROOT) + os.sep)
    lines = []
    for line in (out + err).splitlines():
        for prefix in prefixes:
            if line.startswith(prefix):
                module_path, _, rest = line[len(prefix) :].partition(":")
                real = os.path.realpath(tree / module_path)
                line = f"{os.path.relpath(real, ROOT)}:{rest}"
                break
        lines.append(line)
    return "\n".join(lines), status


def main() -> int:
    os.chdir(ROOT)
    report, status = run()
    print(report)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""Python work per request, counted rather than timed, so two commits compare on a noisy host.

A client and an echo worker run in one process (the worker in the client's
event loop) against a private Redis; ``cProfile`` counts the Python function
calls made per request, which does not depend on what else the machine is
doing, and ``time.process_time`` gives the CPU per request beside it (noisy).
With ``--against REV`` the same measure runs on that commit (exported with
``git archive`` and laid out as installed) in the same run, and the ratio is
printed.

    python -m benchmarks.calls_per_request                      # this checkout
    python -m benchmarks.calls_per_request --against 535b57b    # and a baseline commit
    python -m benchmarks.calls_per_request --in-flight 1        # one call at a time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUESTS, IN_FLIGHT, WARM_UP = 3000, 64, 200


async def _measure(in_flight: int = IN_FLIGHT) -> dict[str, float]:
    from byzerllm.broker.settings import BrokerSettings
    from byzerllm.broker.spec import DeploySpec
    from byzerllm.client.llm import AsyncByzerLLM
    from byzerllm.workers.runtime import Worker
    from tests.redis_server import RedisServer

    server = RedisServer().start()
    try:
        settings = BrokerSettings(redis_url=server.url, prefix="calls")
        spec = DeploySpec(alias="e", pretrained_model_type="custom/echo", worker_concurrency=256)
        worker = Worker(spec, settings)
        task = asyncio.create_task(worker.run())
        await asyncio.wait_for(worker.ready.wait(), 60)
        llm = AsyncByzerLLM(settings=settings, default_model_name="e")
        for _ in range(WARM_UP):
            await llm.chat_oai("warm up")
        numbers = iter(range(REQUESTS))

        async def lane() -> None:
            for i in numbers:
                [answer] = await llm.chat_oai(f"question {i}")
                assert answer.output == f"question {i}", answer.output

        profile = cProfile.Profile()
        cpu = time.process_time()
        profile.enable()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        profile.disable()
        cpu = time.process_time() - cpu
        await llm.aclose()
        worker.stop()
        await task
    finally:
        server.stop()
    calls = sum(stat[1] for stat in pstats.Stats(profile).stats.values())  # type: ignore[attr-defined]
    return {"calls": calls / REQUESTS, "cpu_us": cpu / REQUESTS * 1e6}


def _installed_layout(source: Path, dest: Path) -> Path:
    """``source`` laid out as pip installs it (broker/ -> byzerllm/broker/ ...)."""
    config = tomllib.loads((source / "pyproject.toml").read_text("utf-8"))
    for name, folder in config["tool"]["setuptools"]["package-dir"].items():
        shutil.copytree(source / folder, dest.joinpath(*name.split(".")), dirs_exist_ok=True)
    shutil.copytree(source / "tests", dest / "tests")
    return dest


def _run(tree: Path, in_flight: int) -> dict[str, float]:
    """The measure in a fresh interpreter that imports byzerllm from ``tree``.

    It runs in ``tree``: ``python -c`` puts its working directory first on the
    path, and from this checkout's root that imported this checkout's package
    whatever the tree held (so ``--against`` compared the checkout with itself).
    """
    # the benchmark module itself comes from this checkout, the package from the tree
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(tree), str(ROOT)))}
    code = (
        "import asyncio, json, benchmarks.calls_per_request as b, byzerllm.broker as p; "
        "print(p.__file__); "
        f"print(json.dumps(asyncio.run(b._measure({in_flight}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
    )
    imported, result = out.stdout.strip().splitlines()[-2:]
    if not Path(imported).resolve().is_relative_to(tree.resolve()):
        raise RuntimeError(f"measured {imported}, not the package in {tree}")
    return dict(json.loads(result))


def _export(rev: str, dest: Path) -> Path:
    archive = dest / "rev.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), rev], check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest / "src", filter="data")
    return dest / "src"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", help="a git revision to measure in the same run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--in-flight",
        type=int,
        default=IN_FLIGHT,
        help="calls in flight at once (1: sequential, where nothing shares a round trip)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this checkout": _installed_layout(ROOT, Path(tmp) / "head")}
        if args.against:
            source = _export(args.against, Path(tmp))
            trees[args.against] = _installed_layout(source, Path(tmp) / "base")
        results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.rounds):  # alternate, so a slow minute hits both
            for name, tree in trees.items():
                results[name].append(_run(tree, args.in_flight))
    print(
        f"{REQUESTS} chat calls, {args.in_flight} in flight, client and echo worker in one process"
    )
    print(f"{'code':<16} {'calls/request':>14} {'CPU us/request (noisy)':>24}")
    for name, rounds in results.items():
        calls = min(r["calls"] for r in rounds)
        cpu = ", ".join(f"{r['cpu_us']:.0f}" for r in rounds)
        print(f"{name:<16} {calls:>14.1f} {cpu:>24}")
    if args.against:
        head = min(r["calls"] for r in results["this checkout"])
        base = min(r["calls"] for r in results[args.against])
        print(f"calls per request, this checkout / {args.against}: {head / base:.3f}x")


if __name__ == "__main__":
    main()

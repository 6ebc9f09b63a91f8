"""What ``byzerllm serve`` adds, against the openai SDK calling the same server directly.

A fast OpenAI-compatible stub runs on loopback. The same SDK (``AsyncOpenAI``)
sends the same requests (a) straight to it and (b) to ``byzerllm serve``
(the command, one process, a master key set), which passes them through
Redis to one ``saas/openai`` worker process in front of the same stub.
Printed: p50/p99 of sequential calls, throughput with 32 calls in flight,
the first streamed chunk, and the ratios; for reference, byzerllm's Python
client (``AsyncByzerLLM``) over the same worker, so the HTTP hop shows apart
from the broker; and the same through a LiteLLM proxy when ``litellm`` is
installed (skipped otherwise).

    python -m benchmarks.gateway [--quick] [--no-access-log] [--litellm-python PATH]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from rich.console import Console
from rich.table import Table

from benchmarks.harness import Latencies, cpu_seconds, private_redis, workers
from benchmarks.overhead import (
    AsyncClient,
    byzerllm_client,
    measure_clients,
    openai_client,
    run,
    start_stub,
    stub_spec,
)
from byzerllm.broker.settings import BrokerSettings
from tests.redis_server import free_port

KEY = "sk-bench"  # the stub takes any key; the gateway requires this one
console = Console(width=130)  # the table stays one line per measure


def start_gateway(settings: BrokerSettings, port: int, access_log: bool) -> subprocess.Popen[bytes]:
    """``byzerllm serve`` as it runs by default (log level info: with its access log on,
    each request formats and writes its line)."""
    env = {
        **os.environ,
        "BYZERLLM_REDIS_URL": settings.redis_url,
        "BYZERLLM_PREFIX": settings.prefix,
        "BYZERLLM_MASTER_KEY": KEY,
    }
    code = "from byzerllm.cli.main import byzerllm_cli; byzerllm_cli()"
    # not a quieter log level: at "warning" the access log would format no line at all
    args = ["serve", "--port", str(port)]
    if not access_log:
        args.append("--no_access_log")
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("byzerllm serve exited; run it by hand to see why")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2):
                return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("byzerllm serve did not become ready within 60 s")


def litellm_available(python: str) -> bool:
    """Whether ``python`` can import litellm (its proxy may live in a venv of its own:
    its dependencies pin other versions of the SDKs this project tests with)."""
    probe = subprocess.run([python, "-c", "import litellm"], capture_output=True)
    return probe.returncode == 0


def start_litellm(python: str, stub_url: str, port: int) -> subprocess.Popen[bytes] | None:
    """A LiteLLM proxy for the stub's gpt-4o, if the litellm[proxy] extra is installed."""
    import tempfile

    config = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    config.write(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params:\n"
        f"      model: openai/gpt-4o\n      api_base: {stub_url}\n      api_key: {KEY}\n"
    )
    config.close()
    proc = subprocess.Popen(
        [python, "-m", "litellm.proxy.proxy_cli", "--config", config.name, "--port", str(port)],
        # the same key the gateway requires; the SDK sends it to both
        env={
            **os.environ,
            "LITELLM_MASTER_KEY": KEY,
            "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true",
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/liveliness", timeout=2):
                return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    proc.terminate()
    return None


def report(results: dict[str, dict[str, Any]]) -> None:
    direct = results["direct"]
    table = Table(title="byzerllm serve vs direct (same stub, same openai SDK)")
    names = list(results)
    for col in ("measure", *names, "gateway vs direct", "target"):
        table.add_column(col)
    d_seq: Latencies = direct["seq"]
    g = results["byzerllm serve"]

    def row(label: str, values: list[str], ratio: str, target: str) -> None:
        table.add_row(label, *values, ratio, target)

    row(
        "p50 latency, sequential (ms)",
        [f"{r['seq'].p50:.2f}" for r in results.values()],
        f"+{g['seq'].p50 - d_seq.p50:.2f} ms",
        "added < 1.5 ms",
    )
    row(
        "p99 latency, sequential (ms)",
        [f"{r['seq'].p99:.2f}" for r in results.values()],
        f"+{g['seq'].p99 - d_seq.p99:.2f} ms",
        "",
    )
    row(
        "throughput, 32 in flight (req/s)",
        [f"{r['tp']:.0f}" for r in results.values()],
        f"{g['tp'] / direct['tp']:.2f}x",
        ">= 0.9x",
    )
    row(
        "first streamed chunk, p50 (ms)",
        [f"{r['first'].p50:.2f}" for r in results.values()],
        f"+{g['first'].p50 - direct['first'].p50:.2f} ms",
        "added < 2 ms",
    )
    console.print(table)
    if "litellm proxy" in results:
        lite = results["litellm proxy"]
        console.print(
            f"throughput, byzerllm serve / LiteLLM proxy: {g['tp'] / lite['tp']:.2f}x "
            "(target >= 5x)"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, noisier figures")
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="run the gateway without its access log (on by default, as byzerllm serve runs)",
    )
    parser.add_argument(
        "--litellm-python",
        default=sys.executable,
        help="a Python with litellm[proxy] installed, e.g. a venv's bin/python (default: this one)",
    )
    args = parser.parse_args(argv)
    n_seq, n_tp = (300, 2000) if args.quick else (1000, 6000)
    stub_port = free_port()
    stub = start_stub(stub_port)
    stub_url = f"http://127.0.0.1:{stub_port}/v1"
    procs: list[subprocess.Popen[bytes]] = [stub]
    gateway_cpu: float | None = None
    try:
        with private_redis() as settings:
            console.print(f"stub at {stub_url}, Redis at {settings.redis_url}")
            # the alias is the stub's model name, so the same SDK calls serve both
            spec = stub_spec(stub_url, alias="gpt-4o", api_key=KEY)
            with workers(settings, spec, 1):
                port = free_port()
                gateway = start_gateway(settings, port, not args.no_access_log)
                procs.append(gateway)
                clients: dict[str, AsyncClient] = {
                    "direct": openai_client(stub_url, KEY),
                    # byzerllm's Python client over the same worker: the HTTP hop apart
                    "python client": byzerllm_client(settings, spec.alias),
                    "byzerllm serve": openai_client(f"http://127.0.0.1:{port}/v1", KEY),
                }
                if litellm_available(args.litellm_python):
                    lite_port = free_port()
                    lite = start_litellm(args.litellm_python, stub_url, lite_port)
                    if lite is None:
                        console.print("litellm is installed but its proxy did not start: skipped")
                    else:
                        procs.append(lite)
                        clients["litellm proxy"] = openai_client(
                            f"http://127.0.0.1:{lite_port}", KEY
                        )
                else:
                    console.print("litellm is not installed: the LiteLLM comparison is skipped")
                before = cpu_seconds(gateway.pid)
                results = run(measure_clients(clients, n_seq, n_tp))
                after = cpu_seconds(gateway.pid)
                if before is not None and after is not None:
                    # measure_clients: 200 warm-up calls, n_seq, n_tp, n_seq // 2 streams
                    calls = 200 + n_seq + n_tp + n_seq // 2
                    gateway_cpu = (after - before) / calls * 1e6
        report(results)
        if gateway_cpu is not None:
            console.print(f"gateway process CPU per request: {gateway_cpu:.0f} us")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()

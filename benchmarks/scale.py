"""Many streams in flight at once: correctness, cost per request, flat memory; and the
same load on one Redis and on a Redis Cluster.

Client processes (each one ``AsyncByzerLLM``, so one reply stream and one
reader per process) keep streaming requests in flight against aliases served
by echo worker processes. Every answer is checked word for word. Printed per
request: Redis commands, Redis CPU, bytes in and out of Redis, and the CPU of
workers and clients; Redis memory per in-flight request, first-chunk latency
under that load, and Redis memory after each block of requests, which must
stay flat (nothing leaks per request).

    python -m benchmarks.scale                  # 10 clients x 1,000 in flight, 100,000 requests
    python -m benchmarks.scale --quick          # 4 clients x 250 in flight, 10,000 requests
    python -m benchmarks.scale --cluster        # one Redis, then clusters of 1 and 3 shards
    # cost per streamed token at 30 tokens/s: the difference between these two, over 28
    python -m benchmarks.scale --quick --in-flight 100 --requests 4000 --delay 0.033 --chunks 4
    python -m benchmarks.scale --quick --in-flight 100 --requests 4000 --delay 0.033 --chunks 32

With ``--cluster`` the aliases (one per shard) are named so that each lands on
a different master; the single-Redis run serves the same aliases.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from benchmarks.harness import cpu_seconds, workers
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from tests.redis_server import RedisCluster, RedisServer

PREFIX = "bench"
IDLE_WINDOW = 5.0  # seconds the idle servers' CPU is read over, before the load


def _client(settings_json: str, aliases: list[str], in_flight: int, total: int, out: Any) -> None:
    """One client process: ``total`` streamed requests, ``in_flight`` at a time, the
    lanes spread over the aliases."""
    settings = BrokerSettings.model_validate_json(settings_json)

    async def run() -> dict[str, Any]:
        from byzerllm.client.llm import AsyncByzerLLM

        llm = AsyncByzerLLM(settings=settings)
        first_chunks: list[float] = []
        wrong = 0
        numbers = iter(range(total))

        async def lane(alias: str) -> None:
            nonlocal wrong
            for i in numbers:
                question = f"stream number {i} of this client"
                start = time.perf_counter()
                pieces: list[str] = []
                async for text, _ in llm.stream_chat_oai(question, model=alias, delta_mode=True):
                    if not pieces:
                        first_chunks.append(time.perf_counter() - start)
                    pieces.append(text)
                wrong += "".join(pieces) != question

        cpu = time.process_time()
        await asyncio.gather(*(lane(aliases[i % len(aliases)]) for i in range(in_flight)))
        await llm.aclose()
        return {"first_chunks": first_chunks, "wrong": wrong, "cpu": time.process_time() - cpu}

    out.put(json.dumps(asyncio.run(run())))


@dataclass
class ServerFigures:
    """Counters of all the Redis servers that hold data (every master of a cluster)."""

    commands: int = 0
    cpu: float = 0.0  # seconds, user + system
    net_in: int = 0
    net_out: int = 0
    reads: int = 0  # socket reads: commands per read is how well they were batched
    memory: int = 0
    per_server_commands: list[int] = field(default_factory=list)


def _server_figures(ports: list[int]) -> ServerFigures:
    figures = ServerFigures()
    for port in ports:
        with redis.Redis(port=port) as client:
            info = client.info("all")
            stats = client.info("commandstats")
        calls = sum(int(v["calls"]) for v in stats.values())
        figures.commands += calls
        figures.per_server_commands.append(calls)
        figures.cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        figures.net_in += int(info["total_net_input_bytes"])
        figures.net_out += int(info["total_net_output_bytes"])
        figures.reads += int(info.get("total_reads_processed", 0))
        figures.memory += int(info["used_memory"])
    return figures


def _memory(ports: list[int]) -> int:
    total = 0
    for port in ports:
        with redis.Redis(port=port) as client:
            total += int(client.info("memory")["used_memory"])
    return total


def _process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far (0 for one that is gone)."""
    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


@dataclass
class Outcome:
    done: int
    in_flight: int
    elapsed: float
    wrong: int
    first_chunks: list[float]
    client_cpu: float
    worker_cpu: float
    before: ServerFigures
    after: ServerFigures
    idle_cpu_per_s: float  # what the servers burn with no load (cron, cluster bus)
    peak_memory: int
    memory_after: list[int]

    def per_request(self, value: float) -> float:
        return value / self.done


@dataclass
class Setup:
    """Where the load runs: the settings every process gets, and the data servers."""

    name: str
    settings: BrokerSettings
    ports: list[int]


@contextmanager
def single_redis() -> Iterator[Setup]:
    server = RedisServer().start()
    try:
        settings = BrokerSettings(redis_url=server.url, prefix=PREFIX, max_waiting=1_000_000)
        yield Setup("one Redis", settings, [server.port])
    finally:
        server.stop()


@contextmanager
def redis_cluster(shards: int) -> Iterator[Setup]:
    # Redis' default node timeout (15 s): the cluster bus gossips at its usual pace
    servers = RedisCluster(masters=shards, replicas=0, node_timeout_ms=15_000).start()
    try:
        settings = BrokerSettings(redis_url=servers.url, prefix=PREFIX, max_waiting=1_000_000)
        yield Setup(f"{shards}-shard cluster", settings, [n.port for n in servers.nodes])
    finally:
        servers.stop()


def aliases_over_shards(setup: Setup, count: int) -> list[str]:
    """``count`` alias names, spread evenly over the masters where the setup is a cluster."""
    if len(setup.ports) == 1:
        return [f"scale{i}" for i in range(count)]
    from redis.cluster import RedisCluster as View

    keys = Keys(PREFIX)
    by_owner: dict[str, list[str]] = {}
    with View(host="127.0.0.1", port=setup.ports[0]) as view:
        masters = len(view.get_primaries())
        for i in range(10_000):
            alias = f"scale{i}"
            owner = view.get_node_from_key(keys.alias(alias).requests).name
            by_owner.setdefault(owner, []).append(alias)
            if len(by_owner) == masters and all(
                len(names) >= -(-count // masters) for names in by_owner.values()
            ):
                break
    lanes = list(by_owner.values())
    return [lanes[i % masters][i // masters] for i in range(count)]


def run_load(setup: Setup, aliases: list[str], args: argparse.Namespace) -> Outcome:
    in_flight = args.clients * args.in_flight
    per_block = args.requests // args.blocks
    per_client = per_block // args.clients
    per_alias = max(1, args.workers // len(aliases))
    context = multiprocessing.get_context("spawn")
    settings = setup.settings
    with ExitStack() as stack:
        started = []
        for alias in aliases:
            spec = DeploySpec(
                alias=alias,
                pretrained_model_type="custom/echo",
                worker_concurrency=max(256, in_flight // (per_alias * len(aliases))),
                infer_params={"chunks": args.chunks, "delay": args.delay},
            )
            started += stack.enter_context(workers(settings, spec, per_alias))
        worker_pids = [w.pid for w in started]
        idle = _server_figures(setup.ports)
        time.sleep(IDLE_WINDOW)
        before = _server_figures(setup.ports)
        idle_cpu_per_s = (before.cpu - idle.cpu) / IDLE_WINDOW
        worker_cpu0 = _process_cpu(worker_pids)
        first_chunks: list[float] = []
        wrong, client_cpu = 0, 0.0
        memory_after = []
        peak = [before.memory]
        sampling = threading.Event()

        def sample() -> None:  # Redis memory while requests are in flight
            while not sampling.wait(0.5):  # INFO memory only: the sampler costs little
                peak[0] = max(peak[0], _memory(setup.ports))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        began = time.perf_counter()
        for _ in range(args.blocks):
            queue = context.Queue()
            procs = [
                context.Process(
                    target=_client,
                    args=(settings.model_dump_json(), aliases, args.in_flight, per_client, queue),
                )
                for _ in range(args.clients)
            ]
            for proc in procs:
                proc.start()
            for _ in procs:
                result = json.loads(queue.get())
                first_chunks += result["first_chunks"]
                wrong += result["wrong"]
                client_cpu += result["cpu"]
            for proc in procs:
                proc.join()
            memory_after.append(_memory(setup.ports))
        elapsed = time.perf_counter() - began
        sampling.set()
        sampler.join()
        after = _server_figures(setup.ports)
        worker_cpu = _process_cpu(worker_pids) - worker_cpu0
    return Outcome(
        done=per_client * args.clients * args.blocks,
        in_flight=in_flight,
        elapsed=elapsed,
        wrong=wrong,
        first_chunks=sorted(first_chunks),
        client_cpu=client_cpu,
        worker_cpu=worker_cpu,
        before=before,
        after=after,
        idle_cpu_per_s=idle_cpu_per_s,
        peak_memory=peak[0],
        memory_after=memory_after,
    )


@dataclass
class Row:
    """One setup's figures, per request unless named otherwise."""

    name: str
    requests_per_s: float
    commands: float
    commands_per_read: float
    redis_cpu_us: float
    bytes_in: float
    bytes_out: float
    worker_cpu_us: float
    client_cpu_us: float
    memory_per_in_flight: float
    first_chunk_p50_ms: float
    first_chunk_p99_ms: float
    commands_by_server: list[int]


def row_of(name: str, o: Outcome) -> Row:
    b, a = o.before, o.after
    chunks = o.first_chunks
    return Row(
        name=name,
        requests_per_s=o.done / o.elapsed,
        commands=o.per_request(a.commands - b.commands),
        commands_per_read=(a.commands - b.commands) / max(1, a.reads - b.reads),
        redis_cpu_us=o.per_request(a.cpu - b.cpu - o.idle_cpu_per_s * o.elapsed) * 1e6,
        bytes_in=o.per_request(a.net_in - b.net_in),
        bytes_out=o.per_request(a.net_out - b.net_out),
        worker_cpu_us=o.per_request(o.worker_cpu) * 1e6,
        client_cpu_us=o.per_request(o.client_cpu) * 1e6,
        memory_per_in_flight=(o.peak_memory - b.memory) / o.in_flight,
        first_chunk_p50_ms=statistics.median(chunks) * 1000,
        first_chunk_p99_ms=chunks[int(0.99 * (len(chunks) - 1))] * 1000,
        commands_by_server=[
            x - y for x, y in zip(a.per_server_commands, b.per_server_commands, strict=True)
        ],
    )


def report(o: Outcome, args: argparse.Namespace, setup: Setup) -> Row:
    row = row_of(setup.name, o)
    print(f"\n== {setup.name}: {o.done:,} streamed requests ({args.chunks} deltas each), "
          f"{o.in_flight:,} in flight")  # fmt: skip
    print(f"wrong answers: {o.wrong}")
    print(f"throughput: {row.requests_per_s:,.0f} requests/s")
    print(
        f"per request: {row.commands:.2f} Redis commands ({row.commands_per_read:.1f} per socket "
        f"read), {row.redis_cpu_us:.0f} µs Redis CPU "
        f"(idle servers' {o.idle_cpu_per_s * 1000:.1f} ms/s taken out), "
        f"{row.bytes_in:,.0f} bytes into Redis, {row.bytes_out:,.0f} bytes out, "
        f"{row.worker_cpu_us:.0f} µs worker CPU, {row.client_cpu_us:.0f} µs client CPU"
    )
    if len(row.commands_by_server) > 1:
        shares = ", ".join(f"{c / max(1, sum(row.commands_by_server)):.0%}"
                           for c in row.commands_by_server)  # fmt: skip
        print(f"commands by shard: {shares}")
    print(f"first chunk p50 {row.first_chunk_p50_ms:.1f} ms, p99 {row.first_chunk_p99_ms:.1f} ms")
    print(
        f"Redis memory before: {o.before.memory / 1e6:.2f} MB, "
        f"peak under load {o.peak_memory / 1e6:.2f} MB; "
        f"per in-flight request (peak): {row.memory_per_in_flight:,.0f} bytes"
    )
    per_block = o.done // args.blocks
    for i, memory in enumerate(o.memory_after, 1):
        print(f"  after {i * per_block:>9,} requests: {memory / 1e6:.2f} MB")
    growth = (o.memory_after[-1] - o.memory_after[0]) / max(1, o.done - per_block)
    print(f"memory growth per request after the first block: {growth:.1f} bytes")
    if o.wrong:
        raise SystemExit(f"{o.wrong} answers were wrong")
    return row


def compare(single: Row, clusters: list[Row]) -> None:
    names = "".join(f"{row.name:>22} ratio" for row in clusters)
    print(f"\n== per request, against one Redis{' ' * 12}{'one Redis':>12}{names}")
    for label, attr in (
        ("requests/s", "requests_per_s"),
        ("Redis commands per request", "commands"),
        ("commands per socket read (batching)", "commands_per_read"),
        ("Redis CPU per request", "redis_cpu_us"),
        ("bytes into Redis per request", "bytes_in"),
        ("memory per in-flight request", "memory_per_in_flight"),
        ("first chunk p99", "first_chunk_p99_ms"),
    ):
        base = getattr(single, attr)
        cells = "".join(
            f"{getattr(row, attr):>22,.2f} {getattr(row, attr) / base if base else 0:4.2f}x"
            for row in clusters
        )
        print(f"  {label:<42}{base:>12,.2f}{cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, help="client processes (10; --quick 4)")
    parser.add_argument("--in-flight", type=int, help="per client process (1000; --quick 250)")
    parser.add_argument("--requests", type=int, help="in all (100,000; --quick 10,000)")
    parser.add_argument("--blocks", type=int, help="memory is read after each (10; --quick 4)")
    parser.add_argument("--workers", type=int, default=4, help="in all, split over the aliases")
    parser.add_argument("--chunks", type=int, default=4, help="deltas per answer")
    parser.add_argument(
        "--delay", type=float, default=0.01, help="seconds between deltas (30 tokens/s: 0.033)"
    )
    parser.add_argument("--aliases", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--cluster",
        nargs="?",
        const="1,3",
        default="",
        metavar="SHARDS",
        help="also run on clusters of these many masters (1,3), the aliases spread over them",
    )
    args = parser.parse_args()
    defaults = (4, 250, 10_000, 4) if args.quick else (10, 1000, 100_000, 10)
    for name, default in zip(("clients", "in_flight", "requests", "blocks"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    shard_counts = [int(n) for n in args.cluster.split(",") if n.strip()]
    if shard_counts:  # one alias per shard of the largest cluster, the same in every run
        args.aliases = max(args.aliases, *shard_counts)
        args.workers = max(args.workers, args.aliases)
    with single_redis() as setup:
        aliases = aliases_over_shards(setup, args.aliases)
        single = report(run_load(setup, aliases, args), args, setup)
    clustered = []
    for shards in shard_counts:
        with redis_cluster(shards) as setup:
            aliases = aliases_over_shards(setup, args.aliases)
            clustered.append(report(run_load(setup, aliases, args), args, setup))
    if clustered:
        compare(single, clustered)


if __name__ == "__main__":
    main()

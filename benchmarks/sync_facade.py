"""What the sync facade's thread hand-over costs, against running the loop in the caller.

``ByzerLLM`` hands each call to one background event loop and waits for it
(client/loop_thread.py): two thread wake-ups per call. The alternative is a
facade that runs the loop in the caller's own thread, as ``asyncio.run`` does,
with no hand-over at all. Three clients take turns in blocks of 50 sequential
calls from one thread, against the same stub and ``saas/openai`` worker as
``benchmarks.overhead``: the SDK's blocking ``OpenAI`` straight to the stub,
``ByzerLLM`` through the broker, and ``AsyncByzerLLM`` through the broker
driven from the calling thread (``loop.run_until_complete`` per call). The
difference between the last two is what the hand-over costs.

    python -m benchmarks.sync_facade [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from openai import OpenAI

from benchmarks.harness import private_redis, workers
from benchmarks.overhead import MESSAGES, SDK_MESSAGES, alternating_sync, start_stub, stub_spec
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.loop_thread import new_loop
from byzerllm.client.sync import ByzerLLM
from tests.redis_server import free_port


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer calls, noisier figures")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    n = 300 if args.quick else 1000
    port = free_port()
    stub = start_stub(port)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        with private_redis() as settings:
            spec = stub_spec(base_url)
            with workers(settings, spec, 1):
                direct = OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
                facade = ByzerLLM(settings=settings)
                facade.setup_default_model_name(spec.alias)
                loop = new_loop()
                driven = AsyncByzerLLM(settings=settings, default_model_name=spec.alias)

                def direct_call() -> None:
                    direct.chat.completions.create(model="gpt-4o", messages=SDK_MESSAGES)

                def facade_call() -> None:
                    facade.chat_oai(MESSAGES)

                def driven_call() -> None:
                    loop.run_until_complete(driven.chat_oai(MESSAGES))

                names = [
                    "OpenAI (sync SDK), direct",
                    "ByzerLLM, loop in a background thread",
                    "AsyncByzerLLM, loop run by the caller",
                ]
                plain: list[Callable[[], float | None]] = [direct_call, facade_call, driven_call]
                alternating_sync(plain, 200)  # warm up
                print(f"p50 of {n} sequential whole answers each, in alternating blocks (ms)")
                print(" | ".join(["round", *names, "hand-over cost"]))
                for i in range(args.rounds):
                    d, bg, caller = (lat.p50 for lat in alternating_sync(plain, n))
                    print(
                        f"{i + 1} | {d:.3f} | {bg:.3f} (+{bg - d:.3f}) | "
                        f"{caller:.3f} (+{caller - d:.3f}) | {bg - caller:+.3f}"
                    )
                loop.run_until_complete(driven.aclose())
                loop.close()
                facade.close()
                direct.close()
    finally:
        stub.terminate()
        stub.wait(10)


if __name__ == "__main__":
    main()

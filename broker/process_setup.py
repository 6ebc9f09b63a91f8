"""What every long-running process of ours sets up, on either side of the broker:
workers and node agents (workers/startup.py) and ``byzerllm serve``
(client/gateway/server.py)."""

from __future__ import annotations

import gc

# Allocations (net of frees) between two young-generation collections of the cyclic
# garbage collector, for our own server processes; CPython's default is 700.
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Collect young objects after 20,000 allocations instead of CPython's 700.

    A process serving thousands of requests a second allocates in bursts (a
    reply batch, a pipeline's answers), so at 700 the collector ran about once
    per hundred requests, 1.5-2.5 ms each on average, and found nothing to
    free: 15-20% of an echo client's CPU (benchmarks/README.md). Our request path makes
    almost no reference cycles, so the few it makes wait a little longer.
    Only for processes of ours (workers, node agents, the gateway): a library
    does not change its caller's collector. A higher setting is kept."""
    young, middle, old = gc.get_threshold()
    if young and young < GC_YOUNG_THRESHOLD:  # 0: collection is off, as the user chose
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)

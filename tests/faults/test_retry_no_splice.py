"""A retry that says something else restarts the answer; it is never spliced."""

from __future__ import annotations

import signal

from tests.test_recovery import _busy_worker_pid

WORDS = " ".join(f"w{i}" for i in range(16))


async def test_a_retry_with_other_words_restarts_the_stream(worker_procs, settings, keys, llm):
    # two workers of one alias that answer differently, as a sampling model would
    procs = [
        worker_procs.start("echo", "delay=0.15", f"prefix={name}:") for name in ("alpha", "bravo")
    ]
    stream = llm.stream_chat_oai(WORDS, delta_mode=True)
    got = [await stream.__anext__() for _ in range(3)]
    victim = await _busy_worker_pid(settings, keys, "echo")
    first = "alpha:" if victim == procs[0].pid else "bravo:"
    second = "bravo:" if first == "alpha:" else "alpha:"
    next(p for p in procs if p.pid == victim).proc.send_signal(signal.SIGKILL)
    got += [item async for item in stream]
    restarts = [i for i, (_, meta) in enumerate(got) if meta.extra_info.get("restarted")]
    assert len(restarts) == 1, [t for t, _ in got]
    before = "".join(t for t, _ in got[: restarts[0]])
    after = "".join(t for t, _ in got[restarts[0] :])
    assert (first + WORDS).startswith(before)  # what the dead worker said, unspliced
    assert after == second + WORDS  # then the other worker's whole answer

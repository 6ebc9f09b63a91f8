"""The worker's reply writer against a real Redis: it times each pipeline once (its
client times no reply), and a pipeline that Redis does not answer in time is kept
and written again once Redis answers."""

from __future__ import annotations

import logging

import pytest

from byzerllm.broker.connection import create_redis
from byzerllm.broker.keys import Keys
from byzerllm.broker.settings import BrokerSettings
from byzerllm.workers.reply_writer import ReplyWriter
from tests.waiting import until


async def test_a_pipeline_past_the_read_timeout_is_written_again_later(
    settings: BrokerSettings, keys: Keys, caplog: pytest.LogCaptureFixture
):
    redis = create_redis(settings, timed_reads=False)  # as the worker makes it
    admin = create_redis(settings)
    ak = keys.alias("stalled")
    writer = ReplyWriter(redis, ak, "w1", lambda rid: None, read_timeout=0.2)
    writer.start()
    caplog.set_level(logging.WARNING, logger="byzerllm.workers.reply_writer")
    try:
        await admin.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")  # writes wait
        writer.dead_letter("1-1", {b"m": b"unreadable"}, "a test entry")
        await until(
            lambda: "did not answer a reply pipeline within 0.2 s" in caplog.text,
            "the writer to give up on the stalled pipeline",
        )
        assert await admin.xlen(ak.dead_letter) == 0
        await admin.execute_command("CLIENT", "UNPAUSE")
        await until(lambda: admin.xlen(ak.dead_letter), "the entry written after all")
        await writer.drain()
        assert await admin.xlen(ak.dead_letter) == 1, "written once"
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await writer.aclose()
        await redis.aclose()
        await admin.delete(ak.dead_letter)
        await admin.aclose()

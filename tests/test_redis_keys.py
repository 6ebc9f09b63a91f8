"""docs/redis-keys.md says what the code does: the keys, and the worker hash fields."""

from __future__ import annotations

import re
from pathlib import Path

import redis.asyncio as aioredis

from byzerllm.broker import keys as keys_module
from byzerllm.broker.state import HASH_FIELDS

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "redis-keys.md").read_text("utf-8")


def _doc_keys() -> list[str]:
    return re.findall(r"^\| `(P:[^`]+)` \|", DOC, re.MULTILINE)


def _docstring_keys() -> list[str]:
    return re.findall(r"^``(P:[^`]+)``", keys_module.__doc__ or "", re.MULTILINE)


def _pattern(documented: str, prefix: str) -> re.Pattern[str]:
    """``P:{A}:worker:W`` -> a regex for real key names under ``prefix``."""
    out = re.escape(documented)
    out = out.replace(re.escape("{A}"), r"\{[^}]+\}")
    for name in ("W", "N", "C", "R"):
        out = re.sub(rf"(?<=:){name}(?=:|$)", r"[^:]+", out)
    return re.compile("^" + out.replace("P", re.escape(prefix), 1) + "$")


def test_the_page_and_the_key_module_name_the_same_keys():
    assert _doc_keys() == _docstring_keys()


def test_the_page_lists_every_worker_hash_field():
    row = next(line for line in DOC.splitlines() if line.startswith("| `P:{A}:worker:W`"))
    documented = re.findall(r"`(\w+)`", row.split("|")[3])
    assert [f for f in documented if f in HASH_FIELDS] == list(HASH_FIELDS)
    assert set(HASH_FIELDS) <= set(documented)


async def test_every_key_a_serving_alias_writes_is_documented(start_worker, llm, settings):
    worker = await start_worker("echo")
    [r] = await llm.chat_oai("hello keys")
    assert r.output == "hello keys"
    async for _ in llm.stream_chat_oai("a streamed answer"):
        pass
    redis = aioredis.Redis.from_url(settings.redis_url)
    try:
        written = sorted([k.decode() async for k in redis.scan_iter(match=f"{settings.prefix}:*")])
        hash_fields = {k.decode() for k in await redis.hkeys(worker.keys.worker(worker.worker_id))}
    finally:
        await redis.aclose()
    patterns = [_pattern(k, settings.prefix) for k in _doc_keys()]
    undocumented = [k for k in written if not any(p.match(k) for p in patterns)]
    assert written and not undocumented, undocumented
    assert hash_fields == set(HASH_FIELDS)

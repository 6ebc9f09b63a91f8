"""Guide: 一些辅助工具 (extract_code, TagExtractor, asyncfy, asyncfy_with_semaphore)."""

import contextlib
import threading
from typing import Optional  # noqa: F401 - the guide's signature uses it

import anyio
import pytest

from byzerllm.apps.utils import TagExtractor
from byzerllm.utils.client import code_utils
from byzerllm.utils.langutil import asyncfy, asyncfy_with_semaphore
from tests.waiting import LIMIT, until


def test_extract_code(capsys):
    text_with_markdown = """
```shell
ls -l
```
"""
    code_blocks = code_utils.extract_code(text_with_markdown)
    for code_block in code_blocks:
        if code_block[0] == "shell":
            print(code_block[1])
    assert capsys.readouterr().out == "ls -l\n"


def test_extract_code_edge_cases():
    assert code_utils.extract_code("no code here") == [("unknown", "no code here")]
    two = "a\n```python\nx = 1\n```\nb\n```\nplain\n```\n"
    assert code_utils.extract_code(two) == [("python", "x = 1"), ("", "plain")]


def test_tag_extractor(capsys):
    extractor = TagExtractor("""
大家好
<_image_>data:image/jpeg;base64,xxxxxx</_image_>
                         大家好
<_image_>data:image/jpeg;base64,xxxxxx2</_image_>
""")

    v = extractor.extract()
    print(v.content[0].content)
    print(v.content[1].content)
    assert (
        capsys.readouterr().out == "data:image/jpeg;base64,xxxxxx\ndata:image/jpeg;base64,xxxxxx2\n"
    )


def test_tag_extractor_nested_tags():
    v = TagExtractor("<_a_>x<_b_>inner</_b_></_a_>").extract()
    [a] = v.content
    assert a.start_tag == "<_a_>"
    assert a.content[0].content == "inner"


async def test_asyncfy_keeps_the_thread():
    def where():
        return threading.get_ident()

    assert await asyncfy(where)() == threading.get_ident()


async def test_asyncfy_with_semaphore_bounds_concurrency():
    running = peak = 0
    lock = threading.Lock()
    release = threading.Event()  # calls run until the test lets them finish

    def work(i):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(LIMIT)
        with lock:
            running -= 1
        return i * 2

    semaphore = anyio.Semaphore(2)
    results = []
    try:
        async with anyio.create_task_group() as tg:
            for i in range(6):

                async def one(i=i):
                    results.append(await asyncfy_with_semaphore(work, semaphore)(i))

                tg.start_soon(one)
            await until(
                lambda: running + semaphore.statistics().tasks_waiting == 6,
                "every call to run or wait for the semaphore",
            )
            assert running == 2, "two calls run, the other four wait"
            release.set()
    finally:
        release.set()
    assert sorted(results) == [0, 2, 4, 6, 8, 10]
    assert peak == 2


async def test_asyncfy_with_semaphore_timeout():
    release = threading.Event()  # the call cannot finish before the test lets it
    try:
        with pytest.raises(TimeoutError):
            await asyncfy_with_semaphore(lambda: release.wait(LIMIT), timeout=0.05)()
    finally:
        release.set()  # end the abandoned thread


async def test_async_with_on_a_returned_context_manager():
    @contextlib.contextmanager
    def response():
        yield ["chunk1", "chunk2"]

    async with asyncfy_with_semaphore(lambda: response())() as chunks:
        assert chunks == ["chunk1", "chunk2"]

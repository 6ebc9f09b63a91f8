"""Guide: 如何自动实现一个方法 (llm.impl, its cache and clear_impl_cache)."""

import datetime
import time

import pydantic
import pytest

import byzerllm

CODE = """好的：
```python
def calculate_current_time() -> Time:
    import datetime
    return Time(time=datetime.datetime.now().strftime("%Y-%m-%d"))
```
"""


class Time(pydantic.BaseModel):
    time: str = pydantic.Field(..., description="时间，时间格式为 yyyy-MM-dd")


def test_impl_writes_caches_and_clears(serve, worker_procs):
    serve("deepseek_chat", rules=[{"match": "def calculate_current_time", "reply": CODE}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    @llm.impl()
    def calculate_current_time() -> Time:
        """
        计算当前时间
        """
        pass

    start = time.monotonic()
    first = calculate_current_time()
    print(f"first time cost: {time.monotonic() - start}")
    assert first == Time(time=datetime.date.today().strftime("%Y-%m-%d"))

    start = time.monotonic()
    assert calculate_current_time() == first
    second = time.monotonic() - start
    print(f"second time cost: {second}")
    assert second < 0.05

    # the cached code runs without the model: stop it, the function still works ...
    worker_procs.stop_all()
    assert calculate_current_time() == first
    # ... until the cache is cleared and the model is needed again
    llm.clear_impl_cache()
    with pytest.raises(byzerllm.NoLiveWorkerError):
        calculate_current_time()


def test_code_that_defines_nothing_is_a_clear_error(serve):
    serve("deepseek_chat", rules=[{"match": "def broken", "reply": "```python\nx = 1\n```"}])
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    @llm.impl()
    def broken() -> Time:
        """
        计算当前时间
        """

    with pytest.raises(byzerllm.ImplError, match="defines no broken") as info:
        broken()
    assert info.value.code.strip() == "x = 1"

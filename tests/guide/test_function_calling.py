"""Guide: Function Calling (tools described in the prompt, executed on the client)."""

import datetime
import json
from typing import Annotated, List  # noqa: UP035 - as the guide writes it

import pytest
from dateutil.relativedelta import relativedelta

import byzerllm
from byzerllm.client.tools import tool_spec
from byzerllm.types import LLMFunctionCallResponse


def compute_date_range(
    count: Annotated[int, "时间跨度，数值类型"],
    unit: Annotated[str, "时间单位，字符串类型", {"enum": ["day", "week", "month", "year"]}],
) -> List[str]:  # noqa: UP006
    """
    计算日期范围

    Args:
        count: 时间跨度，数值类型
        unit: 时间单位，字符串类型，可选值为 day,week,month,year
    """
    now = datetime.datetime.now()
    now_str = now.strftime("%Y-%m-%d %H:%M:%S")
    if unit == "day":
        return [(now - relativedelta(days=count)).strftime("%Y-%m-%d %H:%M:%S"), now_str]
    elif unit == "week":
        return [(now - relativedelta(weeks=count)).strftime("%Y-%m-%d %H:%M:%S"), now_str]
    elif unit == "month":
        return [(now - relativedelta(months=count)).strftime("%Y-%m-%d %H:%M:%S"), now_str]
    elif unit == "year":
        return [(now - relativedelta(years=count)).strftime("%Y-%m-%d %H:%M:%S"), now_str]
    return ["", ""]


def compute_now() -> str:
    """
    计算当前时间
    """
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")


def choice(name, **arguments):
    return (
        "```json\n"
        + json.dumps(
            {
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": name, "arguments": arguments},
                    }
                ]
            }
        )
        + "\n```"
    )


RULES = [
    # the tool list in the prompt mentions 计算当前时间 too, so the specific request goes first
    {"match": "最近三个月趋势", "reply": choice("compute_date_range", count=3, unit="month")},
    {"match": "最近几天", "reply": choice("compute_date_range", count="many", unit="day")},
    {"match": "讲个笑话", "reply": "我不需要工具：从前有个程序员……"},
    {"match": "计算当前时间", "reply": choice("compute_now")},
]


@pytest.fixture
def llm(serve):
    serve("deepseek_chat", rules=RULES)
    return byzerllm.ByzerLLM.from_default_model(model="deepseek_chat")


def parse(s):
    return datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S")


def test_model_picks_compute_now(llm):
    t = llm.chat_oai(
        [{"content": """计算当前时间""", "role": "user"}],
        tools=[compute_date_range, compute_now],
        execute_tool=True,
    )

    print(t[0].values)
    assert isinstance(t[0], LLMFunctionCallResponse)
    [now] = t[0].values
    assert abs((parse(now) - datetime.datetime.now()).total_seconds()) < 60
    assert t[0].metadata["selected_functions"] == ["compute_now"]
    assert t[0].metadata["reason"] == ""


def test_model_picks_compute_date_range(llm):
    t = llm.chat_oai(
        [{"content": """最近三个月趋势""", "role": "user"}],
        tools=[compute_date_range, compute_now],
        execute_tool=True,
    )

    print(t[0].values)
    [[start, end]] = t[0].values
    assert 89 <= (parse(end) - parse(start)).days <= 92


def test_without_execute_tool_the_raw_answer_comes_back(llm):
    t = llm.chat_oai(
        [{"content": "计算当前时间", "role": "user"}], tools=[compute_date_range, compute_now]
    )
    assert (
        json.loads(t[0].output.strip("`\njson"))["tool_calls"][0]["function"]["name"]
        == "compute_now"
    )


def test_no_tool_choice_gives_no_values_and_a_reason(llm):
    t = llm.chat_oai(
        [{"content": "讲个笑话", "role": "user"}], tools=[compute_now], execute_tool=True
    )
    assert t[0].values == []
    assert t[0].metadata["reason"] == "No json block found"
    assert "程序员" in t[0].response.output


def test_bad_arguments_are_reported_not_run(llm):
    t = llm.chat_oai(
        [{"content": "最近几天", "role": "user"}], tools=[compute_date_range], execute_tool=True
    )
    assert t[0].values == []
    assert "count" in t[0].metadata["reason"]


def test_tool_description_comes_from_signature_docstring_and_annotations():
    spec = tool_spec(compute_date_range)
    assert spec["name"] == "compute_date_range"
    assert spec["description"].startswith("计算日期范围")
    props = spec["parameters"]["properties"]
    assert props["count"] == {"type": "integer", "description": "时间跨度，数值类型"}
    assert props["unit"]["enum"] == ["day", "week", "month", "year"]
    assert props["unit"]["description"] == "时间单位，字符串类型"
    assert spec["parameters"]["required"] == ["count", "unit"]

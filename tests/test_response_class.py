"""``chat_oai(response_class=...)``: an answer read as a pydantic object.

The echo test backend is scripted to answer like a model: JSON when the
prompt carries the JSON schema, free text otherwise.
"""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from byzerllm import ConfigurationError
from byzerllm.types import LLMClassResponse


class Capital(BaseModel):
    country: str
    city: str


RULES = [
    # asked for JSON straight away: the schema is in the prompt
    {
        "match": r"(?s)capital of France.*JSON Schema",
        "reply": '```json\n{"country": "France", "city": "Paris"}\n```',
    },
    # the conversion round of response_after_chat
    {
        "match": r"(?s)Write your answer above as JSON.*JSON Schema",
        "reply": 'Sure: {"country": "Italy", "city": "Rome",}',
    },
    {"match": "capital of Italy", "reply": "The capital of Italy is Rome, of course."},
    {"match": "capital of Atlantis", "reply": "Nobody knows."},
]


@pytest.fixture
async def model(start_worker):
    await start_worker("m", script=json.dumps(RULES))
    return "m"


async def test_answer_is_parsed_into_the_class(llm, model):
    [r] = await llm.chat_oai("What is the capital of France?", model=model, response_class=Capital)
    assert isinstance(r, LLMClassResponse)
    assert r.value == Capital(country="France", city="Paris")
    assert r.metadata["reason"] == ""
    assert "Paris" in r.response.output


async def test_after_chat_converts_the_free_answer(llm, model):
    [r] = await llm.chat_oai(
        "What is the capital of Italy?",
        model=model,
        response_class=Capital,
        response_after_chat=True,
    )
    assert r.value == Capital(country="Italy", city="Rome"), "trailing comma repaired"
    assert r.response.output == "The capital of Italy is Rome, of course."


async def test_unparseable_answer_gives_none_and_the_reason(llm, model):
    [r] = await llm.chat_oai(
        "What is the capital of Atlantis?", model=model, response_class=Capital
    )
    assert r.value is None
    assert "no JSON" in r.metadata["reason"]
    assert r.metadata["raw_output"] == "Nobody knows.", "the raw answer is kept for the caller"


async def test_list_of_models(llm, model):
    [r] = await llm.chat_oai(
        "What is the capital of France?", model=model, response_class=list[Capital]
    )
    assert r.value == [Capital(country="France", city="Paris")]


async def test_a_class_that_is_not_a_model_is_refused_with_the_fix(llm, model):
    with pytest.raises(ConfigurationError, match="pydantic"):
        await llm.chat_oai("hi", model=model, response_class=dict)

"""Reading model answers as JSON and pydantic objects: where JSON hides and how it breaks."""

import pydantic
import pytest

from byzerllm import StructuredOutputError
from byzerllm.client.structured import load_json, parse_as
from byzerllm.types import Bool, Int


class Story(pydantic.BaseModel):
    title: str
    body: str


@pytest.mark.parametrize(
    "text",
    [
        '{"title": "t", "body": "b"}',
        '```json\n{"title": "t", "body": "b"}\n```',
        'Sure!\n```json\n{"title": "t", "body": "b"}\n```\nHope it helps.',
        '```\n{"title": "t", "body": "b"}\n```',
        'Here: {"title": "t", "body": "b"} -- done',
        '{"title": "t", "body": "b",}',
        "{'title': 't', 'body': 'b'}",
        '{"title": "t", // a comment\n "body": "b"}',
        '{"title": "t", "body": "b"',  # truncated
    ],
)
def test_story_found_and_repaired(text):
    assert parse_as(text, Story) == Story(title="t", body="b")


def test_json_fence_wins_over_other_fences():
    text = '```python\nprint(1)\n```\n```json\n{"title": "t", "body": "b"}\n```'
    assert parse_as(text, Story).title == "t"


def test_nested_braces_and_strings_with_brackets():
    text = 'x {"title": "a } b", "body": "[c]"} y'
    assert parse_as(text, Story) == Story(title="a } b", body="[c]")


def test_lists_and_bare_values():
    assert (
        parse_as('[{"title": "1", "body": "x"}, {"title": "2", "body": "y"}]', Story)[1].title
        == "2"
    )
    assert parse_as('{"value": true}', Bool).value is True
    assert parse_as("```json\n[3]\n```", Int) == [Int(value=3)]
    assert load_json("True, {'a': None, 'b': true}") == {"a": None, "b": True}


def test_no_json_raises_with_raw_text():
    with pytest.raises(StructuredOutputError) as info:
        parse_as("I cannot do that.", Story)
    assert info.value.raw_text == "I cannot do that."


def test_wrong_shape_names_the_field_and_the_class():
    with pytest.raises(StructuredOutputError, match=r"Story: body: Field required") as info:
        parse_as('{"title": "t"}', Story)
    assert '{"title": "t"}' in str(info.value)

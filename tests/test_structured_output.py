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


# -- asking again when the answer cannot be read ------------------------------------


@pytest.fixture
async def flaky(start_worker):
    """A model whose first answer is not JSON and whose second is."""
    import json

    await start_worker(
        "flaky",
        concurrency=1,
        replies=json.dumps(["Let me think about a title...", '{"title": "t", "body": "b"}']),
    )
    return "flaky"


async def test_unreadable_answer_is_asked_again_with_the_reason(llm, flaky):
    import byzerllm

    @byzerllm.prompt(llm=llm, options={"model": flaky})
    def story() -> Story:  # type: ignore[empty-body]
        """Tell a story."""

    assert await story.arun() == Story(title="t", body="b")
    [again] = await llm.chat_oai("ping", model=flaky)  # the cycle restarts: 3rd answer
    assert again.output == "Let me think about a title..."


async def test_retries_can_be_turned_off(llm, flaky):
    import byzerllm

    @byzerllm.prompt(llm=llm, options={"model": flaky, "max_retries": 0})
    def story() -> Story:  # type: ignore[empty-body]
        """Tell a story."""

    with pytest.raises(StructuredOutputError) as info:
        await story.arun()
    assert info.value.raw_text == "Let me think about a title..."


async def test_after_the_retries_the_error_says_how_many_answers(llm, start_worker):
    import byzerllm

    await start_worker("stubborn", reply="No JSON from me.")

    @byzerllm.prompt(llm=llm, options={"model": "stubborn"})
    def story() -> Story:  # type: ignore[empty-body]
        """Tell a story."""

    with pytest.raises(StructuredOutputError) as info:
        await story.arun()
    assert info.value.raw_text == "No JSON from me."
    assert "3 answers were asked for" in "".join(info.value.__notes__)

"""Rendering prompt functions: dedent, whitespace, loops, body dicts, and bad input."""

import logging

import pytest

import byzerllm


def test_dedent_keeps_relative_indentation_and_strips_outer_blank_lines():
    @byzerllm.prompt()
    def f(items: list) -> str:
        """

        Items:
            {% for i in items -%}
            * {{ i }}
            {% endfor %}
        End.

        """

    assert f.prompt([1, 2]) == "Items:\n    * 1\n    * 2\n    \nEnd."


def test_single_line_docstring():
    @byzerllm.prompt()
    def f(q: str) -> str:
        """Q: {{ q }}"""

    assert f.prompt("x") == "Q: x"


def test_defaults_keywords_and_body_dict_override():
    @byzerllm.prompt()
    def f(a: str, b: str = "B") -> str:
        """
        {{ a }}-{{ b }}-{{ c }}
        """
        return {"c": a.upper(), "b": "override"}

    assert f.prompt("a") == "a-override-A"
    assert f.prompt(a="z", b="y") == "z-override-Z"


def test_a_variable_without_a_value_renders_empty_and_is_named_in_a_warning(caplog):
    """The original's rule (optional parts of a template), with the typo still visible."""

    @byzerllm.prompt()
    def f(name: str) -> str:
        """
        Hello {{ nmae }}!{% if notes %} Notes: {{ notes }}{% endif %}
        """

    with caplog.at_level(logging.WARNING, logger="byzerllm.client.prompt_template"):
        assert f.prompt("Jane") == "Hello !"
    warned = [r.getMessage() for r in caplog.records]
    assert any("{{ nmae }}" in m and "{{ notes }}" in m for m in warned), warned


def test_a_missing_variable_that_cannot_render_empty_is_named():
    @byzerllm.prompt()
    def f(name: str) -> str:
        """
        Hello {{ user.name }}
        """

    with pytest.raises(byzerllm.PromptTemplateError, match=r"\{\{ user \}\}.*available: name"):
        f.prompt("Jane")


def test_render_simple_fills_str_format_fields():
    @byzerllm.prompt(render="simple")
    def f(name: str, n: int) -> str:
        """
        Dear {name},
            you have {n} messages {{unread}}.
        """

    assert f.prompt("Ada", 3) == "Dear Ada,\nyou have 3 messages {unread}."
    with pytest.raises(byzerllm.ConfigurationError, match="'mustache'.*'simple'"):
        byzerllm.prompt(render="mustache")


def test_non_dict_return_is_a_type_error_naming_the_function():
    @byzerllm.prompt()
    def wrong(q: str) -> str:
        """
        {{ q }}
        """
        return "not a dict"

    with pytest.raises(TypeError, match="Return value of .*wrong should be a dict"):
        wrong.prompt("x")
    with pytest.raises(byzerllm.ByzerLLMError):
        wrong.prompt("x")


def test_bad_arguments_and_syntax_errors():
    @byzerllm.prompt()
    def f(q: str) -> str:
        """
        {{ q }
        """

    with pytest.raises(byzerllm.PromptTemplateError, match="not a valid jinja2 template"):
        f.prompt("x")
    with pytest.raises(byzerllm.PromptDefinitionError, match="missing a required argument"):
        f.prompt()


def test_unsupported_annotation_is_reported_at_call():
    @byzerllm.prompt(llm="deepseek_chat")
    def f() -> int:
        """
        1
        """

    with pytest.raises(byzerllm.PromptDefinitionError, match="should return str, a pydantic model"):
        f.run()


def test_no_llm_run_explains_how_to_attach_one():
    @byzerllm.prompt()
    def f() -> str:
        """
        hi
        """

    with pytest.raises(byzerllm.ConfigurationError, match=r"with_llm\(llm\)"):
        f.run()


def test_modifiers_return_copies_but_with_llm_sets_the_client_in_place():
    @byzerllm.prompt()
    def f() -> str:
        """
        hi
        """

    g = f.with_stop_suffix_list(["x"]).options({"llm_config": {"max_length": 5}})
    assert g is not f and f._stop is None and "llm_config" not in f._options
    # the original's style: f.with_llm(llm); f.run()
    assert f.with_llm("deepseek_chat") is f and f._llm == "deepseek_chat"


def test_methods_bind_self_and_drop_it_from_variables():
    class A:
        greeting = "hey"

        @byzerllm.prompt()
        def f(self, who: str) -> str:
            """
            {{ g }} {{ who }}
            """
            return {"g": self.greeting}

    a = A()
    assert a.f.prompt("you") == "hey you"
    assert isinstance(A.f, byzerllm.PromptFunction)


def test_invalid_llm_argument():
    with pytest.raises(byzerllm.ConfigurationError, match="not usable"):
        byzerllm.prompt(llm=42)

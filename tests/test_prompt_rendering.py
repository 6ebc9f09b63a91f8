"""Rendering prompt functions: dedent, whitespace, loops, body dicts, and bad input."""

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


def test_missing_variable_names_it():
    @byzerllm.prompt()
    def f(name: str) -> str:
        """
        Hello {{ nmae }}
        """

    with pytest.raises(byzerllm.PromptTemplateError, match=r"\{\{ nmae \}\}.*available: name"):
        f.prompt("Jane")


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


def test_modifiers_return_copies():
    @byzerllm.prompt()
    def f() -> str:
        """
        hi
        """

    g = f.with_llm("deepseek_chat").options({"llm_config": {"max_length": 5}})
    assert g is not f
    assert f() == "hi"  # f itself still has no llm


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

"""Guide: 在实例方法中使用大模型 (prompt functions on methods, jinja2 loops)."""

import byzerllm

data = {
    "name": "Jane Doe",
    "task_count": 3,
    "tasks": [
        {"name": "Submit report", "due_date": "2024-03-10"},
        {"name": "Finish project", "due_date": "2024-03-15"},
        {"name": "Reply to emails", "due_date": "2024-03-08"},
    ],
}

REPLY = "Hello Jane Doe, I hope this message finds you well."


class RAG:
    def __init__(self):
        self.llm = byzerllm.ByzerLLM()
        self.llm.setup_template(model="deepseek_chat", template="auto")
        self.llm.setup_default_model_name("deepseek_chat")

    @byzerllm.prompt()
    def generate_answer(self, name, task_count, tasks) -> str:
        """
        Hello {{ name }},

        This is a reminder that you have {{ task_count }} pending tasks:
        {% for task in tasks %}
        - Task: {{ task.name }} | Due: {{ task.due_date }}
        {% endfor %}

        Best regards,
        Your Reminder System
        """


class BoundRAG(RAG):
    @byzerllm.prompt(lambda self: self.llm)
    def generate_answer(self, name, task_count, tasks) -> str:
        """
        Hello {{ name }}, you have {{ task_count }} pending tasks.
        """


def test_instance_prompt_with_llm(serve):
    serve(
        "deepseek_chat",
        rules=[{"match": "Task: Reply to emails \\| Due: 2024-03-08", "reply": REPLY}],
    )
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")
    t = RAG()

    response = t.generate_answer.with_llm(llm).run(**data)
    print(response)
    assert response == REPLY


def test_instance_prompt_renders_the_loop():
    text = RAG.__new__(RAG).generate_answer.prompt(**data)
    assert text.startswith("Hello Jane Doe,")
    assert "you have 3 pending tasks:" in text
    assert "- Task: Submit report | Due: 2024-03-10" in text
    assert "- Task: Finish project | Due: 2024-03-15" in text
    assert text.endswith("Your Reminder System")


def test_lambda_binds_the_instance_llm(serve):
    serve("deepseek_chat", rules=[{"match": "Hello Jane Doe, you have 3", "reply": REPLY}])
    t = BoundRAG()
    assert t.generate_answer(**data) == REPLY
    # each instance gets its own binding
    other = BoundRAG()
    assert other.generate_answer.prompt(**data) == "Hello Jane Doe, you have 3 pending tasks."

"""Guide: 通过 Python 代码处理复杂入参 (the body returns a dict of template variables)."""

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


class RAG:
    def __init__(self):
        self.llm = byzerllm.ByzerLLM.from_default_model(model="deepseek_chat")

    @byzerllm.prompt()
    def generate_answer(self, name, task_count, tasks) -> str:
        """
        Hello {{ name }},

        This is a reminder that you have {{ task_count }} pending tasks:

        {{ tasks }}

        Best regards,
        Your Reminder System
        """

        tasks_str = "\n".join(
            [f"- Task: {task['name']} | Due: {task['due_date']}" for task in tasks]
        )
        return {"tasks": tasks_str}


def test_body_dict_feeds_the_template(serve):
    serve(
        "deepseek_chat",
        rules=[
            {
                "match": "pending tasks:\n\n- Task: Submit report \\| Due: 2024-03-10\n",
                "reply": "Just a gentle nudge.",
            }
        ],
    )
    t = RAG()

    response = t.generate_answer.with_llm(t.llm).run(**data)
    print(response)
    assert response == "Just a gentle nudge."


def test_rendered_text_uses_the_returned_string(guide_env):
    text = RAG().generate_answer.prompt(**data)
    assert "- Task: Finish project | Due: 2024-03-15\n- Task: Reply to emails" in text
    assert "{'name'" not in text  # the returned string replaced the list argument

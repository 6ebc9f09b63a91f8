"""Guide: 案例集锦 (find .py files that read files without a Windows-safe encoding).

``autocoder.common.files.read_file`` is not part of byzerllm; a local
read_file stands in for it.
"""

import os
from pathlib import Path

import byzerllm


def read_file(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_check_directory(serve, tmp_path):
    serve(
        "deepseek_chat",
        rules=[
            {"match": "encoding=", "reply": '```json\n{"value": false}\n```'},
            {"match": "open\\(", "reply": '经过分析：\n```json\n{\n    "value": true\n}\n```'},
            {"match": ".", "reply": '{"value": false}'},
        ],
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "bad.py").write_text("data = open('a.txt').read()\n", "utf-8")
    (tmp_path / "good.py").write_text("data = open('a.txt', encoding='utf-8').read()\n", "utf-8")
    (tmp_path / "none.py").write_text("print('hi')\n", "utf-8")
    (tmp_path / "notes.txt").write_text("open(", "utf-8")

    # 初始化大模型
    llm = byzerllm.ByzerLLM.from_default_model(model="deepseek_chat")

    @byzerllm.prompt()
    def detect_windows_encoding_issues(code: str) -> str:
        """
        分析以下Python代码是否存在读取文件时不兼容Windows的编码问题（要兼容uft8/gbk）：

        {{ code }}

        如果存在以上问题，返回如下json格式：

        ```json
        {
            "value": 是否存在问题，true 或者 false
        }
        ```
        """

    from byzerllm.types import Bool

    def check_directory(directory: str):
        """检查目录下所有.py文件的Windows编码兼容性"""
        issues = []

        for root, _, files in os.walk(directory):
            for file in files:
                if file.endswith(".py"):
                    file_path = Path(root) / file
                    try:
                        print("processing file: ", file_path)
                        content = read_file(str(file_path))
                        result = (
                            detect_windows_encoding_issues.with_llm(llm)
                            .with_return_type(Bool)
                            .run(content)
                        )
                        if result.value:
                            print("found issue in file: ", file_path)
                            issues.append(str(file_path))
                    except Exception as e:
                        print(f"Error reading {file_path}: {str(e)}")

        return issues

    issues = check_directory(str(tmp_path))
    assert issues == [str(tmp_path / "pkg" / "bad.py")]

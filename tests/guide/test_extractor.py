"""Guide: 自定义字段抽取 (with_extractor)."""

import re

from loguru import logger

import byzerllm

EMAIL = r"^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$"


def test_generate_regex_pattern_with_extractor(serve):
    serve(
        "deepseek_chat",
        rules=[
            {
                "match": "匹配一个邮箱地址",
                "reply": f"好的，正则如下：\n<REGEX>{EMAIL}</REGEX>\n说明：...",
            }
        ],
    )
    llm = byzerllm.ByzerLLM.from_default_model("deepseek_chat")

    @byzerllm.prompt()
    def generate_regex_pattern(desc: str) -> str:
        """
        根据下面的描述生成一个正则表达式，要符合python re.compile 库的要求。

        {{ desc }}

        最后生成的正则表达式要在<REGEX></REGEX>标签对里。
        """

    def extract_regex_pattern(regex_block: str) -> str:
        pattern = re.search(r"<REGEX>(.*)</REGEX>", regex_block, re.DOTALL)
        if pattern is None:
            logger.warning("No regex pattern found in the generated block:\n {regex_block}")
            raise None  # noqa: B016 - the guide's code, as written
        return pattern.group(1)

    pattern = "匹配一个邮箱地址"
    v = generate_regex_pattern.with_llm(llm).with_extractor(extract_regex_pattern).run(desc=pattern)
    print(v)
    assert v == EMAIL
    assert re.compile(v).match("jane@example.com")

"""--infer_params as the guide writes them parse to the dict backends read."""

from __future__ import annotations

import pytest

from byzerllm.broker.errors import InvalidInferParamsError
from byzerllm.cli.infer_params import parse_infer_params


@pytest.mark.parametrize(
    "tokens, expected",
    [
        (
            [
                "saas.base_url=https://api.siliconflow.cn/v1",
                "saas.api_key=sk-123",
                "saas.model=deepseek-ai/deepseek-v2-chat",
            ],
            {
                "saas.base_url": "https://api.siliconflow.cn/v1",
                "saas.api_key": "sk-123",
                "saas.model": "deepseek-ai/deepseek-v2-chat",
            },
        ),
        (
            ["saas.api_version=2024-02-15-preview", 'saas.azure_endpoint="https:/x.azure.com/"'],
            {
                "saas.api_version": "2024-02-15-preview",
                "saas.azure_endpoint": "https:/x.azure.com/",
            },
        ),
        (["backend.max_model_len=28000"], {"backend.max_model_len": 28000}),
        (["verbose=true", "num_gpu_layers=0"], {"verbose": True, "num_gpu_layers": 0}),
        (["backend.gpu_memory_utilization=0.9"], {"backend.gpu_memory_utilization": 0.9}),
        (
            ["vad_model=fsmn-vad", "vad_kwargs.max_single_segment_time=30000"],
            {"vad_model": "fsmn-vad", "vad_kwargs.max_single_segment_time": 30000},
        ),
        (["device=cuda:0"], {"device": "cuda:0"}),
        (
            ["saas.app_id=6503259792", "saas.api_key=12345"],
            {"saas.app_id": "6503259792", "saas.api_key": "12345"},
        ),
        (["saas.model=llama3:70b-instruct-q4_0"], {"saas.model": "llama3:70b-instruct-q4_0"}),
        (["a=b=c"], {"a": "b=c"}),
        (["saas.api_key=x saas.model=y"], {"saas.api_key": "x", "saas.model": "y"}),
        (["prefix=you said: "], {"prefix": "you said: "}),
    ],
)
def test_guide_params_parse(tokens, expected):
    assert parse_infer_params(tokens) == expected


@pytest.mark.parametrize(
    "token, needle",
    [("novalue", "expected key=value"), ("=x", "bad --infer_params key"), ("bad key!=1", "key")],
)
def test_malformed_params_name_the_token(token, needle):
    with pytest.raises(InvalidInferParamsError, match=needle):
        parse_infer_params([token])

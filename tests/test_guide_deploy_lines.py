# ruff: noqa: E501  (the guide's command lines, as written)
"""Every ``byzerllm deploy`` line of the user guide parses to the spec it means.

The lines are copied from the guide as written (``${VAR}`` expanded the way a
shell would); ``--dry_run`` prints the parsed spec without deploying.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
from click.testing import CliRunner

from byzerllm.cli.main import byzerllm_cli

GUIDE_LINES = [
    'byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 1000 --infer_params saas.base_url="https://api.siliconflow.cn/v1" saas.api_key=${MODEL_silcon_flow_TOKEN} saas.model=deepseek-ai/deepseek-v2-chat --model deepseek_chat',
    "byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 1000 --infer_params saas.api_key=${MODEL_OPENAI_TOKEN} saas.model=gpt-4o --model gpt4o_chat",
    'byzerllm deploy --pretrained_model_type saas/azure_openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.api_type="azure" saas.azure_endpoint="https:/xxx.openai.azure.com/" saas.api_key="xxx" saas.api_version="2024-02-15-preview" saas.azure_deployment="gpt-4o-2024-05-13" saas.model=gpt-4o --model gpt4o_chat',
    "byzerllm deploy --pretrained_model_type saas/claude --cpus_per_worker 0.001 --gpus_per_worker 0 --worker_concurrency 10 --num_workers 1 --infer_params saas.api_key=${MODEL_CLAUDE_TOEKN} saas.model=claude-3-5-sonnet-20240620 --model sonnet_3_5_chat",
    "byzerllm deploy --pretrained_model_type saas/aws_bedrock --cpus_per_worker 0.001 --gpus_per_worker 0 --worker_concurrency 10 --num_workers 1 --infer_params saas.aws_access_key=xxxx saas.aws_secret_key=xxxx saas.region_name=xxxx saas.model_api_version=xxxx saas.model=xxxxx --model sonnet_3_5_chat",
    "byzerllm deploy --pretrained_model_type saas/aws_bedrock --cpus_per_worker 0.001 --gpus_per_worker 0 --worker_concurrency 10 --num_workers 1 --infer_params saas.aws_access_key=xxx saas.aws_secret_key=xx saas.region_name=us-east-1 saas.model=anthropic.claude-3-5-sonnet-20240620-v1:0 --model sonnet_3_5_chat",
    'byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.01 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.api_key=token saas.model=llama3:70b-instruct-q4_0 saas.base_url="http://192.168.3.106:11434/v1/" --model ollama_llama3_chat',
    'byzerllm deploy --pretrained_model_type saas/official_openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.api_key=${MODEL_KIMI_TOKEN} saas.base_url="https://api.moonshot.cn/v1" saas.model=moonshot-v1-32k --model kimi_chat',
    "byzerllm deploy --pretrained_model_type saas/qianwen --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.api_key=${MODEL_QIANWEN_TOKEN} saas.model=qwen1.5-32b-chat --model qwen32b_chat",
    "byzerllm deploy --pretrained_model_type custom/auto --infer_backend vllm --model_path /home/winubuntu/models/Qwen-1_8B-Chat --cpus_per_worker 0.001 --gpus_per_worker 1 --num_workers 1 --infer_params backend.max_model_len=28000 --model qwen_1_8b_chat",
    "byzerllm deploy --pretrained_model_type saas/qianwen --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 2 --infer_params saas.api_key=${MODEL_QIANWEN_TOKEN} saas.model=text-embedding-v2 --model qianwen_emb",
    "byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.api_key=${MODEL_OPENAI_TOKEN} saas.model=text-embedding-3-small --model gpt_emb",
    "byzerllm deploy --pretrained_model_type custom/bge --cpus_per_worker 0.001 --gpus_per_worker 0 --worker_concurrency 10 --model_path /home/winubuntu/.auto-coder/storage/models/AI-ModelScope/bge-large-zh --infer_backend transformers --num_workers 1 --model emb",
    "byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.model=whisper-1 saas.api_key=${MODEL_OPENAI_TOKEN} --model voice2text",
    "byzerllm deploy --pretrained_model_type custom/whisper --infer_backend transformers --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --model_path <Whiper模型的地址> --model voice2text",
    "byzerllm deploy --pretrained_model_type custom/sensevoice --infer_backend transformers --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --model_path <模型的地址> --infer_params vad_model=fsmn-vad vad_kwargs.max_single_segment_time=30000",
    "byzerllm deploy --pretrained_model_type saas/volcengine --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --infer_params saas.api_key=${MODEL_VOLCANO_TTS_TOKEN} saas.app_id=6503259792 saas.model=volcano_tts --model volcano_tts",
    "byzerllm deploy --pretrained_model_type saas/azure --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --infer_params saas.api_key=${MODEL_AZURE_TTS_TOKEN} saas.service_region=eastus --model azure_tts",
    "byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --infer_params saas.api_key=${MODEL_OPENAI_TOKEN} saas.model=tts-1 --model openai_tts",
    "byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --infer_params saas.api_key=${MODEL_OPENAI_TOKEN} saas.model=dall-e-3 --model openai_image_gen",
    "byzerllm deploy --pretrained_model_type saas/qianwen_vl --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.api_key=${MODEL_2_QIANWEN_TOKEN} saas.model=qwen-vl-max --model qianwen_vl_max_chat",
    "byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.api_key=${MODEL_YI_TOKEN} saas.model=yi-vision saas.base_url=https://api.lingyiwanwu.com/v1 --model yi_vl_chat",
    "byzerllm deploy --pretrained_model_type custom/auto --infer_backend llama_cpp --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --infer_params verbose=true num_gpu_layers=0 --model_path /Users/allwefantasy/Downloads/Meta-Llama-3-8B-Instruct-Q4_K_M.gguf --model llama_3_chat",
    'byzerllm deploy --pretrained_model_type saas/official_openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 2 --infer_params saas.api_key=${MODEL_KIMI_TOKEN} saas.base_url="https://api.moonshot.cn/v1" saas.model=moonshot-v1-32k --model kimi_chat',
    'byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.01 --gpus_per_worker 0 --num_workers 2 --infer_params saas.api_key=token saas.model=llama3:70b-instruct-q4_0 saas.base_url="http://192.168.3.106:11434/v1/" --model ollama_llama3_chat',
    "byzerllm deploy --pretrained_model_type saas/openai --cpus_per_worker 0.001 --gpus_per_worker 0 --num_workers 1 --worker_concurrency 10 --infer_params saas.model=whisper-1 saas.api_key=${MODEL_OPENAI_TOKEN} --model speech_to_text",
]

EXPECTED = {
    "deepseek_chat": {
        "saas.base_url": "https://api.siliconflow.cn/v1",
        "saas.api_key": "******",
        "saas.model": "deepseek-ai/deepseek-v2-chat",
    },
    "qwen_1_8b_chat": {"backend.max_model_len": 28000},
    "llama_3_chat": {"verbose": True, "num_gpu_layers": 0},
    "volcano_tts": {
        "saas.api_key": "******",
        "saas.app_id": "6503259792",
        "saas.model": "volcano_tts",
    },
    "voice2text_sensevoice": {"vad_model": "fsmn-vad", "vad_kwargs.max_single_segment_time": 30000},
    "ollama_llama3_chat": {
        "saas.api_key": "******",
        "saas.model": "llama3:70b-instruct-q4_0",
        "saas.base_url": "http://192.168.3.106:11434/v1/",
    },
}


def argv(line: str) -> list[str]:
    expanded = re.sub(r"\$\{\w+\}", "sk-from-env", line)
    args = shlex.split(expanded)[2:]
    if "--model" not in args:  # the guide's sensevoice line lost its last backslash
        args += ["--model", "voice2text_sensevoice"]
    return args


@pytest.mark.parametrize("line", GUIDE_LINES)
def test_guide_deploy_line_parses(line):
    result = CliRunner().invoke(byzerllm_cli, ["deploy", *argv(line), "--dry_run"])
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)
    args = argv(line)
    assert spec["alias"] == args[args.index("--model") + 1]
    assert spec["pretrained_model_type"] == args[args.index("--pretrained_model_type") + 1]
    if "--num_workers" in args:
        assert spec["num_workers"] == int(args[args.index("--num_workers") + 1])
    assert "sk-from-env" not in result.output, "secrets are masked"
    if spec["alias"] in EXPECTED:
        assert spec["infer_params"] == EXPECTED[spec["alias"]]


@pytest.mark.parametrize(
    ("alias", "concurrency"),
    [("qwen_1_8b_chat", 256), ("llama_3_chat", 2), ("azure_tts", 1), ("deepseek_chat", 1000)],
)
def test_worker_concurrency_defaults_to_what_the_backend_batches(alias, concurrency):
    """The guide's vllm line gives no --worker_concurrency: vLLM batches itself,
    so its worker takes many requests at once; one-at-a-time backends take one."""
    [line] = [line for line in GUIDE_LINES if line.endswith(f"--model {alias}")][:1]
    result = CliRunner().invoke(byzerllm_cli, ["deploy", *argv(line), "--dry_run"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["worker_concurrency"] == concurrency

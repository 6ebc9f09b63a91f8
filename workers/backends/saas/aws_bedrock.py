"""``saas/aws_bedrock``: Claude on AWS Bedrock through boto3's ``bedrock-runtime``.

Bedrock's Anthropic models take the Anthropic Messages body (with
``anthropic_version`` instead of ``model``) and stream Anthropic's events,
each wrapped in an AWS event-stream ``chunk``; :mod:`.anthropic_messages`
builds and reads both. ``saas.model_api_version`` defaults to
``bedrock-2023-05-31`` for ``anthropic.*`` models, as the guide says.

boto3 is synchronous: every call, and every step of a response stream,
runs in a worker thread (``asyncio.to_thread``) so the event loop keeps
serving other requests. Retries are botocore's own (standard mode:
throttling and 5xx, exponential backoff with jitter), sized by
``saas.max_retries``; ``saas.timeout`` is the read timeout. ``saas.endpoint_url``
points the client elsewhere (a VPC endpoint, or a test server). boto3 is the
``bedrock`` extra, imported on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Generator
from typing import Any, ClassVar, cast

from pydantic import Field, SecretStr

from byzerllm.broker.errors import BackendLoadError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Chunk
from byzerllm.workers.backends.saas import anthropic_messages as fmt
from byzerllm.workers.backends.saas.base import SaasBackend, SaasOptions
from byzerllm.workers.backends.saas.vendor_errors import backend_error, status_error

ANTHROPIC_VERSION = "bedrock-2023-05-31"
_END = object()


class BedrockOptions(SaasOptions):
    aws_access_key: str = Field(default="", alias="saas.aws_access_key")
    aws_secret_key: SecretStr | None = Field(default=None, alias="saas.aws_secret_key")
    region_name: str = Field(default="", alias="saas.region_name")
    model_api_version: str = Field(default="", alias="saas.model_api_version")
    endpoint_url: str | None = Field(default=None, alias="saas.endpoint_url")

    def secret(self) -> str:
        return self.aws_secret_key.get_secret_value().strip() if self.aws_secret_key else ""


class BedrockBackend(SaasBackend):
    Options = BedrockOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "tools"})
    options: BedrockOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._botocore: Any = None

    @classmethod
    def parse_options(cls, spec: DeploySpec) -> BedrockOptions:
        options: BedrockOptions = super().parse_options(spec)
        where = f"{spec.pretrained_model_type} ({spec.alias})"
        required = {
            "aws_access_key": ("saas.aws_access_key=AKIA...", options.aws_access_key),
            "aws_secret_key": ("saas.aws_secret_key=...", options.secret()),
            "region_name": ("saas.region_name=us-east-1", options.region_name),
            "model": ("saas.model=anthropic.claude-3-5-sonnet-20240620-v1:0", options.model),
        }
        for name, (example, value) in required.items():
            if not str(value).strip():
                raise ConfigurationError(
                    f"{where} needs saas.{name}, e.g. --infer_params {example}"
                )
        if not options.model_api_version:
            if not options.model.startswith("anthropic."):
                raise ConfigurationError(
                    f"{where}: saas.model {options.model!r} is not an anthropic.* model; this "
                    "backend sends Anthropic's Messages body, so set saas.model_api_version "
                    f"only if the model takes it, e.g. saas.model_api_version={ANTHROPIC_VERSION}"
                )
            options.model_api_version = ANTHROPIC_VERSION
        return options

    async def start(self) -> None:
        try:
            import boto3
            import botocore.config
            import botocore.exceptions
        except ImportError as exc:
            raise BackendLoadError(
                f"saas/aws_bedrock needs boto3 ({exc}): pip install 'byzerllm[bedrock]'"
            ) from exc
        opts = self.options
        self._botocore = botocore
        config = botocore.config.Config(
            read_timeout=opts.timeout,
            connect_timeout=min(opts.timeout, 10.0),
            retries={"mode": "standard", "total_max_attempts": opts.max_retries + 1},
            max_pool_connections=max(10, self.spec.worker_concurrency),
        )
        self._client = await asyncio.to_thread(
            boto3.session.Session().client,
            "bedrock-runtime",
            region_name=opts.region_name,
            aws_access_key_id=opts.aws_access_key,
            aws_secret_access_key=opts.secret(),
            endpoint_url=opts.endpoint_url or None,
            config=config,
        )

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "support_stream": True, "model_name": self.options.model}

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        client, opts = self._ready(), self.options
        extra = {"anthropic_version": opts.model_api_version, **request.extra_request_params}
        body = fmt.build_body(request, opts, extra)
        call = {
            "modelId": opts.model,
            "body": json.dumps(body),
            "contentType": "application/json",
            "accept": "application/json",
        }
        if not request.stream:
            try:
                answer = await asyncio.to_thread(_invoke, client, call)
            except Exception as exc:
                self._reraise(exc)
            yield fmt.whole_chunk(answer)
            return
        reader = fmt.StreamReader()
        events: Generator[dict[str, Any], None, None] | None = None
        try:
            response = await asyncio.to_thread(client.invoke_model_with_response_stream, **call)
            events = _events(response["body"])
            while (event := await asyncio.to_thread(next, events, _END)) is not _END:
                piece = reader.feed(cast(dict[str, Any], event))
                if piece is not None:
                    yield piece
        except Exception as exc:
            self._reraise(exc)
        finally:
            if events is not None:
                # Still running in a thread if we were cancelled mid-read: it ends by itself.
                with contextlib.suppress(ValueError):
                    events.close()
        yield reader.final()

    def _translate(self, exc: Exception) -> Exception:
        errors, opts = self._botocore.exceptions, self.options
        secrets = (opts.secret(),)
        where = f"bedrock-runtime in {opts.region_name}"
        if isinstance(exc, errors.ClientError):
            info = exc.response.get("Error") or {}
            status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
            code = str(info.get("Code") or "") or None
            message = str(info.get("Message") or exc)
            if code == "ThrottlingException":
                status = status or 429
            return status_error(
                status or 500,
                message,
                where,
                code=code,
                secrets=secrets,
                max_retries=opts.max_retries,
            )
        if isinstance(exc, errors.ReadTimeoutError | errors.ConnectTimeoutError):
            return backend_error(
                f"cannot reach {where}: no answer within {opts.timeout:g}s (saas.timeout)",
                secrets,
                retryable=True,
            )
        if isinstance(exc, errors.EndpointConnectionError | errors.ConnectionError):
            return backend_error(f"cannot reach {where}: {exc}", secrets, retryable=True)
        if isinstance(exc, errors.BotoCoreError):
            return backend_error(f"{where}: {type(exc).__name__}: {exc}", secrets)
        return exc


def _invoke(client: Any, call: dict[str, Any]) -> dict[str, Any]:
    response = client.invoke_model(**call)
    with response["body"] as body:
        answer: dict[str, Any] = json.loads(body.read())
    return answer


def _events(stream: Any) -> Generator[dict[str, Any], None, None]:
    """Anthropic events out of Bedrock's ``chunk`` frames; closing it closes the HTTP body."""
    try:
        for frame in stream:
            chunk = frame.get("chunk")
            if chunk is not None:
                yield json.loads(chunk["bytes"])
    finally:
        stream.close()

"""``SimpleByzerLLM``: the pure-client mode, the backend runs in the calling process.

No Redis at all: ``deploy`` builds the same backend class a worker would
and the client talks to it through an in-process channel with the shape of
the Redis one, so chat_oai, stream_chat_oai, embeddings, prompt functions,
tools and impl behave exactly as with ``ByzerLLM``. This module sits at the
top of the package because it joins the two halves that otherwise never
import each other: the client and the worker backends.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from byzerllm.broker.errors import ConfigurationError, ModelNotFoundError
from byzerllm.broker.messages import ChatPayload, EmbedPayload, Reply, ReplyType, RequestKind
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.loop_thread import run_sync
from byzerllm.client.sync import ByzerLLM
from byzerllm.workers.backend import Backend, ChatTally
from byzerllm.workers.registry import backend_class


@dataclass
class _LocalCall:
    rid: str
    alias: str
    kind: RequestKind
    payload: dict[str, Any]


class _InProcessChannel:
    """Answers ``submit``/``replies`` like RequestChannel, by running the backend here."""

    def __init__(self, backends: dict[str, Backend]) -> None:
        self.backends = backends
        self._seq = itertools.count()

    async def submit(
        self, alias: str, kind: RequestKind, payload: dict[str, Any], timeout: float | None
    ) -> _LocalCall:
        if alias not in self.backends:
            raise ModelNotFoundError(
                alias,
                f"no model is deployed under {alias!r} in this SimpleByzerLLM; call "
                f"llm.deploy(model_path=..., pretrained_model_type=..., udf_name={alias!r}, "
                "infer_params={...}) first",
            )
        return _LocalCall(uuid.uuid4().hex, alias, kind, payload)

    def _reply(self, call: _LocalCall, type_: ReplyType, data: dict[str, Any]) -> Reply:
        return Reply(rid=call.rid, seq=next(self._seq), type=type_, data=data)

    async def replies(self, call: _LocalCall) -> AsyncIterator[Reply]:
        backend = self.backends[call.alias]
        if call.kind is RequestKind.CHAT:
            async for reply in self._chat(call, backend):
                yield reply
        elif call.kind is RequestKind.EMBED:
            payload = EmbedPayload.model_validate(call.payload)
            start = time.perf_counter()
            vectors = await backend.embed(payload.texts, payload.llm_config)
            meta = {
                "request_id": call.rid,
                "time_cost": time.perf_counter() - start,
                "input_tokens_count": sum(len(t.split()) for t in payload.texts),
                "generated_tokens_count": 0,
            }
            yield self._reply(call, ReplyType.END, {"output": vectors, "meta": meta})
        else:
            yield self._reply(call, ReplyType.END, {"output": backend.meta()})

    async def _chat(self, call: _LocalCall, backend: Backend) -> AsyncIterator[Reply]:
        payload = ChatPayload.model_validate(call.payload)
        tally = ChatTally()
        async for chunk in backend.run_chat(payload):
            if tally.add(chunk) and payload.stream:
                delta = {"text": chunk.text, "reasoning": chunk.reasoning}
                yield self._reply(call, ReplyType.DELTA, delta)
        yield self._reply(call, ReplyType.END, tally.end_data(call.rid, payload.stream))

    async def aclose(self) -> None:
        for backend in list(self.backends.values()):
            await backend.aclose()


class AsyncSimpleByzerLLM(AsyncByzerLLM):
    """The async core of :class:`SimpleByzerLLM`."""

    def __init__(self, default_model_name: str | None = "deepseek_chat") -> None:
        super().__init__(settings=BrokerSettings(), default_model_name=default_model_name)
        self.deployments: dict[str, Backend] = {}
        self._local = _InProcessChannel(self.deployments)

    @property
    def channel(self) -> Any:
        return self._local

    async def deploy(
        self,
        model_path: str,
        pretrained_model_type: str,
        udf_name: str,
        infer_params: dict[str, Any] | None = None,
        infer_backend: str = "",
    ) -> dict[str, Any]:
        """Start the backend for ``pretrained_model_type`` here; it serves ``udf_name``."""
        spec = DeploySpec(
            alias=udf_name,
            pretrained_model_type=pretrained_model_type,
            infer_backend=infer_backend,
            model_path=model_path,
            infer_params=dict(infer_params or {}),
        )
        backend = backend_class(pretrained_model_type, infer_backend)(spec)
        await backend.start()
        old = self.deployments.pop(udf_name, None)
        if old is not None:
            await old.aclose()
        self.deployments[udf_name] = backend
        return {"model": udf_name, "status": "deployed"}

    async def undeploy(self, udf_name: str, force: bool = False) -> None:
        backend = self.deployments.pop(udf_name, None)
        if backend is not None:
            await backend.aclose()

    async def is_model_exist(self, model: str) -> bool:
        return model in self.deployments

    async def get_meta(self, model: str | None = None) -> dict[str, Any]:
        name = self._model(model)
        if name not in self.deployments:
            raise ConfigurationError(f"Model {name} not deployed; call llm.deploy(...) first")
        return await super().get_meta(name)

    async def stat(self, model: str | None = None) -> dict[str, Any] | None:
        return None

    async def aclose(self) -> None:
        await self._local.aclose()
        self.deployments.clear()


class SimpleByzerLLM(ByzerLLM):
    """``byzerllm.SimpleByzerLLM(default_model_name=...)``: no Redis, backends in-process."""

    aio: AsyncSimpleByzerLLM

    def __init__(self, default_model_name: str | None = "deepseek_chat", **kwargs: Any) -> None:
        self.aio = AsyncSimpleByzerLLM(default_model_name)

    def deploy(
        self,
        model_path: str,
        pretrained_model_type: str,
        udf_name: str,
        infer_params: dict[str, Any] | None = None,
        infer_backend: str = "",
    ) -> dict[str, Any]:
        return run_sync(
            self.aio.deploy(
                model_path, pretrained_model_type, udf_name, infer_params, infer_backend
            )
        )

    def undeploy(self, udf_name: str, force: bool = False) -> None:
        run_sync(self.aio.undeploy(udf_name, force))

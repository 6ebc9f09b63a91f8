"""``SimpleByzerLLM``: the pure-client mode, the backend runs in the calling process.

No Redis at all: ``deploy`` builds the same backend class a worker would,
and the client talks to it through the in-process channel of
:mod:`byzerllm.workers.inprocess`, so chat_oai, stream_chat_oai, embeddings,
prompt functions, tools and impl behave exactly as with ``ByzerLLM``. This
public class is the one place that joins the two halves that otherwise never
import each other (the client and the workers), so it lives at the top.
"""

from __future__ import annotations

from typing import Any

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec
from byzerllm.client.llm import AsyncByzerLLM
from byzerllm.client.loop_thread import run_sync
from byzerllm.client.sync import ByzerLLM
from byzerllm.workers.backend import Backend
from byzerllm.workers.inprocess import InProcessChannel
from byzerllm.workers.registry import backend_class


class AsyncSimpleByzerLLM(AsyncByzerLLM):
    """The async core of :class:`SimpleByzerLLM`."""

    def __init__(self, default_model_name: str | None = "deepseek_chat") -> None:
        super().__init__(settings=BrokerSettings(), default_model_name=default_model_name)
        self.deployments: dict[str, Backend] = {}
        self._local = InProcessChannel(self.deployments)

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
        *,
        force: bool = False,
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """Start the backend for ``pretrained_model_type`` here; it serves ``udf_name``.
        (``force`` and ``timeout`` are the cluster deploy's: a local start replaces
        an earlier one and waits for the backend as long as it takes.)"""
        infer_backend = infer_backend or self.model_settings.deploy.get("infer_backend", "")
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

    async def undeploy(self, udf_name: str, force: bool = False, timeout: float = 120.0) -> bool:
        backend = self.deployments.pop(udf_name, None)
        if backend is not None:
            await backend.aclose()
        return backend is not None

    async def is_model_exist(self, model: str) -> bool:
        return model in self.deployments

    def abort(self, request_id: str) -> bool:
        return self._local.abort(request_id)

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
        **kwargs: Any,
    ) -> dict[str, Any]:
        return run_sync(
            self.aio.deploy(
                model_path, pretrained_model_type, udf_name, infer_params, infer_backend, **kwargs
            )
        )

    def undeploy(self, udf_name: str, force: bool = False, timeout: float = 120.0) -> bool:
        return run_sync(self.aio.undeploy(udf_name, force, timeout))

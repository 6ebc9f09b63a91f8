"""``custom/auto`` with ``--infer_backend llama_cpp``: GGUF models on llama.cpp.

llama.cpp generates on one model context at a time and its Python binding is
not thread-safe, so a worker holds one model and serves its slots in turn
(an asyncio lock); extra slots still queue requests locally instead of in
Redis. Generation runs in a thread that checks a stop flag between tokens, so
a cancelled request stops generating at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from pydantic import AliasChoices, Field

from byzerllm.broker.errors import BackendLoadError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, BackendOptions, Chunk

_DONE = object()


class LlamaCppOptions(BackendOptions):
    n_ctx: int = Field(default=2048, gt=0)
    n_gpu_layers: int = Field(
        default=0, validation_alias=AliasChoices("n_gpu_layers", "num_gpu_layers")
    )
    n_threads: int | None = None
    verbose: bool = False
    chat_format: str | None = None
    seed: int = 0


class LlamaCppBackend(Backend):
    Options = LlamaCppOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat"})
    options: LlamaCppOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        if not spec.model_path:
            raise ConfigurationError(
                f"{spec.alias}: llama_cpp needs --model_path pointing at a .gguf file"
            )
        self._llama: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise BackendLoadError(
                "llama_cpp is not installed: pip install 'byzerllm[llama_cpp]'"
            ) from None
        opts = self.options
        kwargs: dict[str, Any] = {
            "model_path": self.spec.model_path,
            "n_ctx": opts.n_ctx,
            "n_gpu_layers": opts.n_gpu_layers,
            "verbose": opts.verbose,
            "seed": opts.seed,
        }
        if opts.n_threads:
            kwargs["n_threads"] = opts.n_threads
        if opts.chat_format:
            kwargs["chat_format"] = opts.chat_format
        try:
            self._llama = await asyncio.to_thread(llama_cpp.Llama, **kwargs)
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendLoadError(
                f"llama.cpp could not load {self.spec.model_path}: {exc}"
            ) from exc

    def _params(self, request: ChatPayload) -> dict[str, Any]:
        config = request.llm_config
        params: dict[str, Any] = {"messages": request.conversations, "stream": True}
        max_tokens = config.get("max_length", config.get("max_tokens"))
        if max_tokens:
            params["max_tokens"] = int(max_tokens)
        for name in ("temperature", "top_p"):
            if config.get(name) is not None:
                params[name] = float(config[name])
        stop = config.get("gen.stop")
        if stop:
            params["stop"] = [stop] if isinstance(stop, str) else list(stop)
        return params

    def _generate(self, params: dict[str, Any], stop: threading.Event) -> Iterator[Chunk]:
        finish: str | None = None
        pieces = 0
        for event in self._llama.create_chat_completion(**params):
            if stop.is_set():
                return
            choice = event["choices"][0]
            text = choice.get("delta", {}).get("content") or ""
            finish = choice.get("finish_reason") or finish
            if text:
                pieces += 1
                yield Chunk(text=text)
        prompt_tokens = len(
            self._llama.tokenize(
                "".join(str(m.get("content", "")) for m in params["messages"]).encode()
            )
        )
        yield Chunk(
            input_tokens=prompt_tokens, output_tokens=pieces, finish_reason=finish or "stop"
        )

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        params = self._params(request)

        def run() -> None:
            try:
                for chunk in self._generate(params, stop):
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
            except BaseException as exc:  # handed to the event loop, raised there
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        async with self._lock:
            thread = threading.Thread(target=run, name="llama-cpp-generate", daemon=True)
            thread.start()
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, BaseException):
                        raise item
                    yield item
            finally:
                stop.set()
                await asyncio.to_thread(thread.join)

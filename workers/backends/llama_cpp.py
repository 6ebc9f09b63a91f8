"""``custom/auto`` with ``--infer_backend llama_cpp``: GGUF models on llama.cpp.

Concurrency. A llama.cpp context generates one sequence at a time and the
Python binding is not thread-safe, so each request borrows a whole context
from a small pool and gives it back when its generation thread has ended;
requests beyond the pool wait in the worker. A lock around one context was
the first design; measured with ``benchmarks/local.py`` on a 2-core VM
(SmolLM2-135M, 4 requests in flight), two contexts generating in two
threads give 1.95x the tokens/s of one context taking requests in turn,
because llama.cpp generates on half of the cores by default and releases
the GIL while it computes. Hence ``parallel`` (infer param) defaults to
``min(worker_concurrency, 2)`` contexts on CPU and to 1 with GPU layers;
``parallel=1`` is the lock, ``parallel>2`` splits the cores between the
contexts. The contexts map the same weights from the file, so each extra
one costs its KV cache and buffers, not a copy of the model. Generation
checks a stop flag between tokens: a cancelled request stops at once.

Prefix completion (``gen.response_prefix`` with a last assistant message):
the GGUF's own chat template is rendered with that assistant turn left open
and the model continues it as a raw completion, honouring ``gen.stop``; the
answer is only the continuation, as with every other backend (prompt
functions prepend the prefix themselves).

Embeddings. llama-cpp-python embeds only with a ``Llama`` created with
``embedding=True``, whose context pools hidden states instead of sampling
(and switching one context back and forth would drop the chat's KV cache
each time), so they come from a second instance of the same GGUF, loaded on
the first ``emb`` request (``embedding=start`` loads it up front,
``embedding=off`` refuses). llama.cpp returns one pooled vector per text;
chat models declare no pooling, so we mean-pool (``embedding_pooling``:
on SmolLM2 the mean separates related from unrelated sentences best, the
last token less well, and the first token is nearly the same vector for
every text) and L2-normalise like the BGE backends
(``embedding_normalize=false`` keeps llama.cpp's raw values). A text longer
than ``embedding_n_ctx`` tokens (default ``n_ctx``) is cut to that many.

Extra buffer types. llama.cpp repacks weights for the CPU's matrix units
(AMX on recent Xeons) when it can; on virtual machines that report AMX the
repacked path segfaults on the first multi-token batch. ``use_extra_bufts``
defaults to off when llama.cpp reports AMX and to llama.cpp's default
otherwise (repacked weights are also a per-context copy).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any, ClassVar, Literal, cast

from pydantic import AliasChoices, Field, field_validator

from byzerllm.broker.errors import BackendError, BackendLoadError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, BackendOptions, Chunk, content_text, wants_prefix
from byzerllm.workers.llm_config import stop_list

# Contexts per worker on CPU when ``parallel`` is not given: llama.cpp generates
# on half of the cores by default, so two contexts use them all (see above).
PARALLEL_DEFAULT = 2

_DONE = object()
_LOAD_LOCK = threading.Lock()  # guards the swap of llama.cpp's default model params
_POOLING = {"mean": 1, "cls": 2, "last": 3}  # llama_pooling_type values
_SENTINEL = "\x00byzerllm-prefix\x00"


class LlamaCppOptions(BackendOptions):
    n_ctx: int = Field(default=2048, gt=0)
    n_gpu_layers: int = Field(
        default=0, validation_alias=AliasChoices("n_gpu_layers", "num_gpu_layers")
    )
    n_threads: int | None = Field(default=None, gt=0)
    n_threads_batch: int | None = Field(default=None, gt=0)
    n_batch: int = Field(default=512, gt=0)
    verbose: bool = False
    chat_format: str | None = None
    seed: int = 0
    parallel: int | None = Field(default=None, gt=0, le=64)
    use_extra_bufts: bool | None = None
    embedding: Literal["lazy", "start", "off"] = "lazy"
    embedding_pooling: Literal["mean", "last", "cls"] = "mean"
    embedding_normalize: bool = True
    embedding_n_ctx: int | None = Field(default=None, gt=0)  # longest text; default n_ctx

    @field_validator("embedding", mode="before")
    @classmethod
    def _embedding_switch(cls, value: Any) -> Any:
        lowered = str(value).strip().lower()
        return {"true": "start", "1": "start", "false": "off", "0": "off"}.get(lowered, lowered)


def sampling(config: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp sampling settings from an ``llm_config`` (chat defaults where unset)."""
    params: dict[str, Any] = {
        "max_tokens": None,
        "temperature": 0.2,
        "top_p": 0.95,
        "top_k": 40,
        "min_p": 0.05,
        "repeat_penalty": 1.0,
        "stop": stop_list(config.get("gen.stop")),
    }
    max_tokens = config.get("max_length", config.get("max_tokens"))
    if max_tokens:
        params["max_tokens"] = int(max_tokens)
    for name in ("temperature", "top_p", "min_p"):
        if config.get(name) is not None:
            params[name] = float(config[name])
    if config.get("top_k") is not None:
        params["top_k"] = int(config["top_k"])
    penalty = config.get("repeat_penalty", config.get("repetition_penalty"))
    if penalty is not None:
        params["repeat_penalty"] = float(penalty)
    return params


def load_llama(llama_cpp: Any, extra_bufts: bool | None, **kwargs: Any) -> Any:
    """``llama_cpp.Llama(**kwargs)`` with ``use_extra_bufts`` set.

    ``Llama()`` takes no such argument; it reads llama.cpp's default model
    params, so those are swapped for the duration of the load (under a lock).
    """
    if extra_bufts is None:
        extra_bufts = b"AMX_INT8 = 1" not in llama_cpp.llama_print_system_info()
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def params() -> Any:
        value = original()
        if hasattr(value, "use_extra_bufts"):
            value.use_extra_bufts = extra_bufts
        return value

    with _LOAD_LOCK:
        module.llama_model_default_params = params
        try:
            return llama_cpp.Llama(**kwargs)
        finally:
            module.llama_model_default_params = original


class _Pool:
    """Chat contexts, each serving one request at a time.

    A context goes back when the thread using it has finished, not when the
    request's task ends: llama.cpp must never run two generations on one
    context, not even for the one token a stopped thread takes to notice.
    """

    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self._free: asyncio.Queue[Any] = asyncio.Queue()
        for item in items:
            self._free.put_nowait(item)

    async def acquire(self) -> Any:
        return await self._free.get()

    def release(self, item: Any) -> None:
        self._free.put_nowait(item)


async def in_thread(
    produce: Callable[[threading.Event], Iterator[Chunk]], finished: Callable[[], None]
) -> AsyncGenerator[Chunk, None]:
    """Run a blocking chunk generator in a new thread; leaving early sets its stop flag.

    ``finished`` runs on the event loop once the thread is done, whatever happened.
    A thread per request, not a long-lived one per context: llama.cpp's OpenMP
    team lives as long as its calling thread, and idle teams left behind make
    every other team in the process wait passively (measured: embeddings 1.7x
    slower in a worker whose chat threads stayed alive).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            for chunk in produce(stop):
                loop.call_soon_threadsafe(queue.put_nowait, chunk)
        except BaseException as exc:  # handed to the event loop, raised there
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)
                loop.call_soon_threadsafe(finished)
            except RuntimeError:  # the loop is closed: the worker is gone
                pass

    thread = threading.Thread(target=run, name="llama-cpp-generate", daemon=True)
    try:
        thread.start()
    except BaseException:
        finished()
        raise
    try:
        while (item := await queue.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)  # at most one more token


def relay(
    events: Iterator[dict[str, Any]],
    text_of: Callable[[dict[str, Any]], str],
    stop: threading.Event,
) -> Iterator[tuple[str, str | None]]:
    """(text, finish_reason) of llama-cpp-python stream events until done or stopped."""
    try:
        for event in events:
            if stop.is_set():
                return
            choice = event["choices"][0]
            yield text_of(choice) or "", choice.get("finish_reason")
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


class LlamaCppBackend(Backend):
    # one request per context; on CPU the pool holds PARALLEL_DEFAULT contexts
    default_concurrency: ClassVar[int] = PARALLEL_DEFAULT
    Options = LlamaCppOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "prefix", "embed"})
    options: LlamaCppOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        if not spec.model_path:
            raise ConfigurationError(
                f"{spec.alias}: llama_cpp needs --model_path pointing at a .gguf file"
            )
        self.parallel = self.options.parallel or (
            1 if self.options.n_gpu_layers else min(spec.worker_concurrency, PARALLEL_DEFAULT)
        )
        self._llama_cpp: Any = None
        self._contexts: _Pool | None = None
        self._embedder: asyncio.Future[Any] | None = None
        # every embedding runs on this one thread: one OpenMP team, batches in turn
        # (even after the request that started one was cancelled)
        self._embed_thread = ThreadPoolExecutor(1, thread_name_prefix="llama-cpp-embed")
        self._template: str | None = None
        self._eos_text = ""
        self._bos_text = ""

    @property
    def continues_answers(self) -> bool:
        """Only with the GGUF's own chat template (see ``continuation_prompt``)."""
        return self._template is not None

    # -- loading -----------------------------------------------------------------------

    def chat_kwargs(self) -> dict[str, Any]:
        """What each chat context is loaded with (benchmarks load the same)."""
        return self._kwargs()

    def _kwargs(self, **extra: Any) -> dict[str, Any]:
        opts = self.options
        kwargs: dict[str, Any] = {
            "model_path": self.spec.model_path,
            "n_ctx": opts.n_ctx,
            "n_batch": opts.n_batch,
            "n_gpu_layers": opts.n_gpu_layers,
            "verbose": opts.verbose,
            "seed": opts.seed,
        }
        if opts.n_threads is None and opts.n_threads_batch is None and self.parallel > 2:
            # llama.cpp's defaults (half the cores, all of them for prompts) would
            # oversubscribe the cores with more than two contexts at work
            kwargs["n_threads"] = kwargs["n_threads_batch"] = max(
                1, (os.cpu_count() or 1) // self.parallel
            )
        if opts.n_threads:
            kwargs["n_threads"] = opts.n_threads
        if opts.n_threads_batch:
            kwargs["n_threads_batch"] = opts.n_threads_batch
        if opts.chat_format:
            kwargs["chat_format"] = opts.chat_format
        kwargs.update(extra)
        return kwargs

    async def _load(self, kwargs: dict[str, Any]) -> Any:
        try:
            return await asyncio.to_thread(
                load_llama, self._llama_cpp, self.options.use_extra_bufts, **kwargs
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise BackendLoadError(
                f"llama.cpp could not load {self.spec.model_path}: {exc}"
            ) from exc

    async def start(self) -> None:
        try:
            import llama_cpp
        except ImportError:
            raise BackendLoadError(
                "llama_cpp is not installed: pip install 'byzerllm[llama_cpp]'"
            ) from None
        self._llama_cpp = llama_cpp
        contexts = [await self._load(self.chat_kwargs()) for _ in range(self.parallel)]
        self._contexts = _Pool(contexts)
        first = contexts[0]
        self._template = self._chat_template(first)
        self._eos_text = first.detokenize([first.token_eos()], special=True).decode(
            "utf-8", "replace"
        )
        self._bos_text = first.detokenize([first.token_bos()], special=True).decode(
            "utf-8", "replace"
        )
        if self.options.embedding == "start":
            await self._embedding_model()

    def _chat_template(self, llama: Any) -> str | None:
        """The GGUF's Jinja chat template that chat uses, if it uses one."""
        name = self.options.chat_format or "chat_template.default"
        if not name.startswith("chat_template."):
            return None  # a format built into llama-cpp-python
        key = "tokenizer.chat_template" + ("" if name == "chat_template.default" else name[13:])
        template = llama.metadata.get(key)
        return template if isinstance(template, str) else None

    async def aclose(self) -> None:
        models = list(self._contexts.items) if self._contexts else []
        embedder, self._embedder, self._contexts = self._embedder, None, None
        if embedder is not None and embedder.done() and not embedder.exception():
            models.append(embedder.result())
        for model in models:
            await asyncio.get_running_loop().run_in_executor(self._embed_thread, model.close)
        self._embed_thread.shutdown(wait=False)

    def meta(self) -> dict[str, Any]:
        meta = super().meta()
        meta["embedding_mode"] = self.options.embedding != "off"
        meta["max_model_len"] = self.options.n_ctx
        return meta

    # -- chat ------------------------------------------------------------------------

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        assert self._template is not None
        formatter = Jinja2ChatFormatter(
            template=self._template,
            eos_token=self._eos_text,
            bos_token=self._bos_text,
            add_generation_prompt=add_generation_prompt,
        )
        return formatter(messages=cast(Any, messages)).prompt

    def continuation_prompt(self, conversations: list[dict[str, Any]]) -> str:
        """The chat template applied to the conversation, its last assistant turn left open.

        A marker stands in for the assistant's text so that the template's own
        markup around a turn is found exactly, whatever the text contains.
        """
        if self._template is None:
            raise BackendError(
                f"{self.spec.alias}: gen.response_prefix needs the GGUF's own chat template, "
                f"but this deployment uses chat_format={self.options.chat_format!r} "
                "(or the GGUF has none); deploy without chat_format to use it"
            )
        messages = [{**m, "content": content_text(m.get("content"))} for m in conversations]
        said = messages[-1]["content"]
        marked = self._render(
            [*messages[:-1], {**messages[-1], "content": _SENTINEL}], add_generation_prompt=False
        )
        at = marked.find(_SENTINEL)
        if at >= 0:
            return marked[:at] + said
        return self._render(messages[:-1], add_generation_prompt=True) + said

    def _prompt_tokens(self, llama: Any, conversations: list[dict[str, Any]]) -> int:
        if self._template is not None:
            messages = [{**m, "content": content_text(m.get("content"))} for m in conversations]
            prompt = self._render(messages, add_generation_prompt=True)
        else:
            prompt = "".join(content_text(m.get("content")) for m in conversations)
        return len(llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True))

    def _chat_chunks(
        self, llama: Any, request: ChatPayload, params: dict[str, Any], stop: threading.Event
    ) -> Iterator[Chunk]:
        if wants_prefix(request):
            prompt = self.continuation_prompt(request.conversations)
            tokens = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
            prompt_tokens = len(tokens)
            if self._eos_text:
                params = {**params, "stop": [*params["stop"], self._eos_text]}
            events = llama.create_completion(prompt=tokens, stream=True, **params)
            pieces = relay(events, lambda c: c.get("text", ""), stop)
        else:
            prompt_tokens = self._prompt_tokens(llama, request.conversations)
            events = llama.create_chat_completion(
                messages=request.conversations, stream=True, **params
            )
            pieces = relay(events, lambda c: c.get("delta", {}).get("content", ""), stop)
        produced, finish = 0, None
        for text, reason in pieces:
            finish = reason or finish
            if text:
                produced += 1
                yield Chunk(text=text)
        if not stop.is_set():
            yield Chunk(
                input_tokens=prompt_tokens, output_tokens=produced, finish_reason=finish or "stop"
            )

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        contexts = self._contexts
        if contexts is None:
            raise BackendError(f"{self.spec.alias}: the llama.cpp model is not loaded")
        params = sampling(request.llm_config)
        llama = await contexts.acquire()
        chunks = in_thread(
            lambda stop: self._chat_chunks(llama, request, params, stop),
            lambda: contexts.release(llama),
        )
        async with aclosing(chunks):  # leaving early stops the thread now, not at GC
            async for chunk in chunks:
                yield chunk

    # -- embeddings --------------------------------------------------------------------

    def embedding_kwargs(self) -> dict[str, Any]:
        """What the embedding-mode instance is loaded with (benchmarks load the same)."""
        n_ctx = self.options.embedding_n_ctx or self.options.n_ctx
        return self._kwargs(
            n_ctx=n_ctx,
            embedding=True,
            pooling_type=_POOLING[self.options.embedding_pooling],
            n_batch=n_ctx,  # a whole text in one batch: pooling needs all its tokens
            n_ubatch=n_ctx,
        )

    async def _embedding_model(self) -> Any:
        """The embedding-mode instance, loaded once by whichever request comes first."""
        if self._embedder is None or (
            self._embedder.done() and self._embedder.exception() is not None
        ):
            self._embedder = asyncio.ensure_future(self._load(self.embedding_kwargs()))
        return await asyncio.shield(self._embedder)  # a cancelled request leaves it loading

    def _embed_now(self, llama: Any, texts: list[str]) -> list[list[float]]:
        vectors = llama.embed(texts, normalize=self.options.embedding_normalize)
        return [[float(x) for x in v] for v in vectors]

    async def embed(self, texts: list[str], llm_config: dict[str, Any]) -> list[list[float]]:
        if self.options.embedding == "off":
            raise BackendError(
                f"{self.spec.alias}: embeddings are off for this deployment "
                "(infer_params embedding=off); redeploy with embedding=lazy to serve emb()"
            )
        if not texts:
            return []
        llama = await self._embedding_model()
        loop = asyncio.get_running_loop()
        vectors = await loop.run_in_executor(self._embed_thread, self._embed_now, llama, texts)
        return vectors

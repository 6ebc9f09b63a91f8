"""``custom/auto`` with ``--infer_backend transformers``: chat with a causal LM.

The model folder is anything ``AutoModelForCausalLM`` loads offline (a
``save_pretrained`` folder or a hub snapshot); a ``.gguf`` file also works,
dequantised on load (needs the ``gguf`` package). The prompt is the
tokenizer's own chat template, so each model gets the format it was
trained on.

One generation runs at a time per worker (an asyncio lock): a single
``generate`` already uses every core (or the GPU), and running two at once
would only interleave them. Generation runs in a thread; a streamer hands
each token to the event loop, and a stopping criterion checks a flag
between tokens, so a cancelled request, or a ``gen.stop`` string found in
the text, stops the model at once instead of after ``max_length`` tokens.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from byzerllm.broker.errors import BackendError, ByzerLLMError, ConfigurationError
from byzerllm.broker.messages import ChatPayload
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Chunk, content_text
from byzerllm.workers.backends.transformers.common import (
    TransformersBackend,
    TransformersOptions,
    load_error,
    load_kwargs,
    require_files,
    stop_criteria,
)
from byzerllm.workers.backends.transformers.text_stream import TextAssembler
from byzerllm.workers.llm_config import first, number, stop_list

_DONE = object()


class TransformersChatOptions(TransformersOptions):
    # the answer's length in tokens when a request sets no max_length
    max_new_tokens: int = Field(default=1024, gt=0)


class TransformersChatBackend(TransformersBackend):
    what: ClassVar[str] = "causal language model"
    Options = TransformersChatOptions
    capabilities: ClassVar[frozenset[str]] = frozenset({"chat", "prefix"})
    options: TransformersChatOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        self._tokenizer: Any = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        torch, transformers, path = self._prepare()
        self._tokenizer, self._model = await asyncio.to_thread(
            self._load, torch, transformers, path
        )

    def _load(self, torch: Any, transformers: Any, path: Path) -> tuple[Any, Any]:
        kwargs = load_kwargs(torch, transformers, self.options, self._device)
        folder = path
        if path.is_file() and path.suffix == ".gguf":
            folder, kwargs["gguf_file"] = path.parent, path.name
        else:
            require_files(path, self.spec.alias, "config.json")
        tokenizer_kwargs = {k: v for k, v in kwargs.items() if k not in ("dtype", "torch_dtype")}
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **tokenizer_kwargs)
            model = transformers.AutoModelForCausalLM.from_pretrained(folder, **kwargs)
            model.to(self._device)
        except (OSError, ValueError, RuntimeError, ImportError, KeyError) as exc:
            raise load_error(self.spec.alias, path, exc) from exc
        model.eval()
        return tokenizer, model

    async def aclose(self) -> None:
        self._model = self._tokenizer = None

    def meta(self) -> dict[str, Any]:
        return {**super().meta(), "model_deploy_type": "proprietary", "device": self._device}

    # -- one request ---------------------------------------------------------------------

    def _prompt_ids(self, conversations: list[dict[str, Any]]) -> Any:
        """The conversation in the model's chat template, as input ids on the device."""
        tok = self._tokenizer
        messages = [{**m, "content": content_text(m.get("content", ""))} for m in conversations]
        if not messages:
            raise ConfigurationError("a chat request needs at least one message")
        prefix = messages[-1].get("role") == "assistant"  # chat prefix completion
        if getattr(tok, "chat_template", None):
            try:
                encoded = tok.apply_chat_template(
                    messages,
                    add_generation_prompt=not prefix,
                    continue_final_message=prefix,
                    return_dict=True,
                    return_tensors="pt",
                )
            except Exception as exc:  # jinja errors: the template rejects the conversation
                raise ConfigurationError(
                    f"the chat template of {self.spec.model_path} rejects this conversation: {exc}"
                ) from exc
            ids = encoded["input_ids"]
        else:  # a base model without a template: plain "role: text" lines
            lines = [f"{m.get('role', 'user')}: {m['content']}" for m in messages]
            text = "\n".join(lines) if prefix else "\n".join([*lines, "assistant: "])
            ids = tok(text, return_tensors="pt")["input_ids"]
        return ids.to(self._model.device)

    def _generate_kwargs(self, config: dict[str, Any], prompt_len: int) -> dict[str, Any]:
        limit = first(config, "max_length", "max_tokens", "max_new_tokens")
        max_new = (
            number("max_length", limit, int) if limit is not None else self.options.max_new_tokens
        )
        context = getattr(self._model.config, "max_position_embeddings", None)
        if context:
            if prompt_len >= context:
                raise ConfigurationError(
                    f"the conversation is {prompt_len} tokens; {self.spec.alias} takes at most "
                    f"{context}: shorten it"
                )
            max_new = min(max_new, context - prompt_len)
        kwargs: dict[str, Any] = {"max_new_tokens": max(1, max_new)}
        temperature = config.get("temperature")
        if temperature is not None:
            temperature = number("temperature", temperature, float)
            kwargs["do_sample"] = temperature > 0
            if temperature > 0:
                kwargs["temperature"] = temperature
                if config.get("top_p") is not None:
                    kwargs["top_p"] = number("top_p", config["top_p"], float)
                if config.get("top_k") is not None:
                    kwargs["top_k"] = number("top_k", config["top_k"], int)
        if config.get("repetition_penalty") is not None:
            kwargs["repetition_penalty"] = number(
                "repetition_penalty", config["repetition_penalty"], float
            )
        tok = self._tokenizer
        if tok.pad_token_id is None and tok.eos_token_id is not None:
            kwargs["pad_token_id"] = tok.eos_token_id
        return kwargs

    def _eos_ids(self) -> set[int]:
        eos = self._model.generation_config.eos_token_id
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        return ids

    def _generate(
        self,
        ids: Any,
        kwargs: dict[str, Any],
        stops: list[str],
        stop: threading.Event,
        emit: Callable[[Chunk], None],
    ) -> None:
        """Runs in a thread: generate, handing text deltas to ``emit``; then the usage chunk."""
        assembler = TextAssembler(
            lambda t: self._tokenizer.decode(t, skip_special_tokens=True), stops
        )
        eos = self._eos_ids()
        last: list[int] = []

        def on_tokens(tokens: list[int]) -> None:
            last[:] = tokens[-1:]
            text = assembler.feed(t for t in tokens if t not in eos)
            if text:
                emit(Chunk(text=text))
            if assembler.stopped:
                stop.set()

        self._model.generate(
            ids,
            attention_mask=ids.new_ones(ids.shape),
            streamer=_TokenStreamer(on_tokens),
            stopping_criteria=stop_criteria(stop),
            **kwargs,
        )
        if stop.is_set() and not assembler.stopped:
            return  # cancelled: nobody reads the rest
        rest = assembler.finish()
        if rest:
            emit(Chunk(text=rest))
        generated = assembler.token_count
        ended = assembler.stopped or bool(last and last[0] in eos)
        finish = "length" if not ended and generated >= kwargs["max_new_tokens"] else "stop"
        emit(Chunk(input_tokens=int(ids.shape[-1]), output_tokens=generated, finish_reason=finish))

    async def chat(self, request: ChatPayload) -> AsyncIterator[Chunk]:
        if self._model is None:
            raise BackendError(f"{self.name} ({self.spec.alias}) is not started")
        ids = self._prompt_ids(request.conversations)
        kwargs = self._generate_kwargs(request.llm_config, int(ids.shape[-1]))
        stops = stop_list(request.llm_config.get("gen.stop"))
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def run() -> None:
            try:
                self._generate(ids, kwargs, stops, stop, put)
            except BaseException as exc:  # handed to the event loop, raised there
                put(exc)
            finally:
                put(_DONE)

        async with self._lock:
            thread = threading.Thread(target=run, name="transformers-generate", daemon=True)
            thread.start()
            try:
                while (item := await queue.get()) is not _DONE:
                    if isinstance(item, ByzerLLMError):
                        raise item
                    if isinstance(item, BaseException):
                        raise BackendError(f"generation failed: {item}") from item
                    yield item
            finally:
                stop.set()
                await asyncio.to_thread(thread.join)


class _TokenStreamer:
    """The streamer ``generate`` calls: the prompt first (skipped), then each new token."""

    def __init__(self, on_tokens: Callable[[list[int]], None]) -> None:
        self._on_tokens = on_tokens
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self._on_tokens([int(t) for t in value.reshape(-1).tolist()])

    def end(self) -> None:
        """Nothing to flush: the backend reads the held-back text after generate returns."""

"""The asyncio client: chat, streaming and embeddings against deployed aliases.

:class:`AsyncByzerLLM` is the core every other client API (the synchronous
:class:`~byzerllm.client.sync.ByzerLLM`, prompt functions, the CLI) is built on.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

from byzerllm.broker import deployments
from byzerllm.broker.connection import redis_errors
from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.messages import ReplyType, RequestKind
from byzerllm.broker.settings import BrokerSettings
from byzerllm.broker.spec import DeploySpec, check_alias
from byzerllm.broker.state import read_alias_stat
from byzerllm.client.channel import Call, RequestChannel, channel_for
from byzerllm.client.multimodal import prepare_messages
from byzerllm.client.setup import ClientSetup, ModelSettings
from byzerllm.client.streamed_answer import StreamedAnswer
from byzerllm.client.tools import chat_as_class, chat_with_tools, tool_calls_text, tools_request
from byzerllm.client.types import LLMRequest, LLMResponse, SingleOutputMeta

Conversations = str | list[dict[str, Any]]


# how many times one streamed answer is asked again from its text after worker
# failures; past that, retries start over (a request that kills every worker
# at the same point must not be resubmitted forever)
CONTINUATIONS = 3


def _request_id(llm_config: dict[str, Any]) -> str | None:
    """The id the caller chose (``llm_config={"gen.request_id": ...}``) to abort by."""
    value = llm_config.get("gen.request_id")
    return None if value is None else str(value)


def _continuation_id(llm_config: dict[str, Any], n: int) -> str | None:
    """A continuation's id: the caller's own plus ``-c<n>`` (``abort`` finds it so);
    never the same id, so a cancel meant for the failed attempt cannot stop it."""
    chosen = _request_id(llm_config)
    return None if chosen is None else f"{chosen}-c{n}"


def _time_left(deadline: float | None) -> float | None:
    """Seconds to an absolute deadline, for a request that must end by it."""
    return None if deadline is None else max(0.001, deadline - time.time())


def _default_timeout() -> float | None:
    raw = os.environ.get("BYZERLLM_REQUEST_TIMEOUT", "1800")
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"BYZERLLM_REQUEST_TIMEOUT={raw!r} is not a number of seconds; e.g. 600, or 0 for none"
        ) from None
    return value or None


def _seconds(name: str, value: Any) -> float | None:
    """A timeout in seconds (0 or None: none); anything else names itself."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigurationError(
            f"{name}={value!r} is not a number of seconds; e.g. 600, or 0 for none"
        ) from None
    if seconds < 0:
        raise ConfigurationError(f"{name}={value!r} is negative; e.g. 600, or 0 for none")
    return seconds or None


def _llm_config(llm_config: Any) -> dict[str, Any]:
    if llm_config is None:
        return {}
    if not isinstance(llm_config, dict):
        raise ConfigurationError(
            f"llm_config must be a dict such as {{'max_length': 512}}, not "
            f"{type(llm_config).__name__} {str(llm_config)[:100]!r}"
        )
    return dict(llm_config)


def _as_messages(conversations: Conversations) -> list[dict[str, Any]]:
    if isinstance(conversations, str):
        return [{"role": "user", "content": conversations}]
    if not isinstance(conversations, list) or not all(isinstance(m, dict) for m in conversations):
        raise ConfigurationError(
            "conversations must be a string or a list of {'role': ..., 'content': ...} dicts, "
            f"not {type(conversations).__name__}"
        )
    return conversations


def _echo_input(messages: list[dict[str, Any]]) -> dict[str, Any]:
    last = messages[-1].get("content", "") if messages else ""
    return {"instruction": last, "history": messages[:-1]}


class AsyncByzerLLM(ClientSetup):
    """Talks to the workers of deployed aliases through Redis."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        default_model_name: str | None = None,
        settings: BrokerSettings | None = None,
        prefix: str | None = None,
        request_timeout: float | None | str = "default",
    ) -> None:
        self.settings = settings or BrokerSettings.from_env(redis_url, prefix=prefix)
        self.default_model_name = default_model_name
        self.default_emb_model_name: str | None = None
        self.request_timeout = (
            _default_timeout()
            if request_timeout == "default"
            else _seconds("request_timeout", request_timeout)
        )
        self.templates: dict[str, Any] = {}
        self.impl_cache: dict[tuple[Any, ...], Any] = {}
        self._channels: list[RequestChannel] = []
        self._model_settings = ModelSettings()

    @property
    def model_settings(self) -> ModelSettings:
        return self._model_settings

    # -- configuration (chainable like the original) --------------------------------

    def setup_default_model_name(self, model: str) -> AsyncByzerLLM:
        self.default_model_name = check_alias(model)
        return self

    def setup_default_emb_model_name(self, model: str) -> AsyncByzerLLM:
        self.default_emb_model_name = check_alias(model)
        return self

    def setup_template(self, model: str, template: Any = "auto") -> AsyncByzerLLM:
        """Chat templates are applied by the worker's backend; kept for compatibility."""
        self.templates[check_alias(model)] = template
        return self

    def _model(self, model: str | None) -> str:
        name = model or self.default_model_name
        if not name:
            raise ConfigurationError(
                "no model given: pass model=... or call llm.setup_default_model_name(alias)"
            )
        return name

    def _timeout(self, llm_config: dict[str, Any]) -> float | None:
        value = llm_config.get("request_timeout", self.request_timeout)
        return _seconds("llm_config request_timeout", value)

    @property
    def channel(self) -> RequestChannel:
        """The process' shared channel for the running loop, with this client attached."""
        last = self._channels[-1] if self._channels else None
        if last is not None and last.loop is asyncio.get_running_loop() and not last.closed:
            return last  # the usual case, without hashing the settings to look it up
        channel = channel_for(self.settings)
        if channel not in self._channels:
            channel.attach(self)
            self._channels.append(channel)
        return channel

    # -- chat --------------------------------------------------------------------------

    async def chat_oai(
        self,
        conversations: Conversations,
        model: str | None = None,
        role_mapping: dict[str, str] | None = None,
        llm_config: dict[str, Any] | None = None,
        extra_request_params: dict[str, Any] | None = None,
        *,
        tools: list[Any] | None = None,
        tool_choice: Any = None,
        execute_tool: bool = False,
        func_params: dict[str, Any] | None = None,
        response_class: Any = None,
        response_after_chat: bool = False,
        only_return_prompt: bool = False,
    ) -> list[Any]:
        """One complete answer, as a one-element list (the original's shape).

        With ``tools``, the model picks a tool (natively where the alias's
        backend can, else described in the prompt; see client/tools.py);
        ``execute_tool=True`` runs it and returns LLMFunctionCallResponse items.
        With ``response_class`` (a pydantic class) the answer is read as that
        class into LLMClassResponse items; ``response_after_chat=True`` lets
        the model answer freely first and converts that answer afterwards.
        ``only_return_prompt=True`` calls no model: the response's metadata is
        the request that would be sent (instruction, history, llm_config).
        """
        messages = _as_messages(conversations)
        if only_return_prompt:
            return [self._prompt_only(messages, model, llm_config)]
        if not tools and response_class is None:
            return await self._chat(
                messages,
                model=model,
                llm_config=llm_config,
                extra_request_params=extra_request_params,
            )
        # a partial, not a closure: a closure's cells would be made on every call of
        # chat_oai, plain ones too (at a thousand calls in flight, objects the
        # collector walks)
        send = functools.partial(
            self._chat,
            model=model,
            llm_config=llm_config,
            extra_request_params=extra_request_params,
        )
        if tools:
            return await chat_with_tools(
                send, messages, tools, tool_choice, execute_tool, func_params
            )
        return await chat_as_class(send, messages, response_class, response_after_chat)

    def _prompt_only(
        self, messages: list[dict[str, Any]], model: str | None, llm_config: Any
    ) -> LLMResponse:
        """What ``chat_oai`` would send, as the original's only_return_prompt gave it."""
        messages = prepare_messages(messages)
        alias = self._model(model)
        config = self._model_settings.llm_config(alias, _llm_config(llm_config))
        echoed = _echo_input(messages)
        return LLMResponse(
            output="", input=echoed, metadata={**echoed, "model": alias, "llm_config": config}
        )

    async def _chat(
        self,
        conversations: list[dict[str, Any]],
        payload: dict[str, Any] | None = None,
        *,
        model: str | None,
        llm_config: dict[str, Any] | None,
        extra_request_params: dict[str, Any] | None,
    ) -> list[LLMResponse]:
        messages = prepare_messages(conversations)
        alias = self._model(model)
        llm_config = self._model_settings.llm_config(alias, _llm_config(llm_config))
        call = await self.channel.submit(
            alias,
            RequestKind.CHAT,
            {
                "conversations": messages,
                "llm_config": llm_config,
                "stream": False,
                "extra_request_params": extra_request_params or {},
                **(payload or {}),
            },
            self._timeout(llm_config),
            owner=self,
            request_id=_request_id(llm_config),
        )
        output: Any = ""
        meta: dict[str, Any] = {}
        async for item in self.channel.replies(call):
            if item.type is ReplyType.END:
                output = item.data.get("output", "")
                meta = item.data.get("meta", {})
                calls = item.data.get("tool_calls")
                if calls:  # a native tool choice: kept as it came, and shown in the text
                    meta = {**meta, "tool_calls": calls}
                    output = (f"{output}\n" if output else "") + tool_calls_text(calls)
        return [LLMResponse(output=output, input=_echo_input(messages), metadata=meta)]

    async def stream_chat_oai(
        self,
        conversations: Conversations,
        model: str | None = None,
        role_mapping: dict[str, str] | None = None,
        delta_mode: bool = False,
        llm_config: dict[str, Any] | None = None,
        extra_request_params: dict[str, Any] | None = None,
        *,
        tools: list[Any] | None = None,
        tool_choice: Any = None,
    ) -> AsyncIterator[tuple[Any, SingleOutputMeta]]:
        """Yield (text, meta) as the answer grows; text is the delta or the whole so far.

        The last item carries the usage counts and finish reason. When a
        worker fails mid-answer, the client asks again with the text it already
        yielded, and a backend that can continue an answer (prefix completion:
        llama.cpp, transformers, vLLM) goes on from it: the caller reads one
        answer. Where the backend cannot continue, the answer restarts rather
        than being spliced: that item carries ``extra_info["restarted"] = True``
        and the new attempt's text from its start (delta mode) or whole
        (otherwise). The last item's text (non-delta mode) is always what was
        streamed.

        A text-to-speech alias streams ``bytes`` instead of text: each item is
        a piece of the audio as the vendor sent it (delta mode or not), and the
        last item's is empty; joined, they are the audio that ``chat_oai``
        returns as base64.

        With ``tools`` (as for ``chat_oai``), an alias whose backend calls tools
        natively streams its choice as it is made: ``meta.tool_calls`` holds
        fragments ``{"index", "id"?, "name"?, "arguments"?}`` in delta mode (the
        first of a call with its id and name, then pieces of its arguments'
        JSON text), else the calls so far; the last item's
        ``extra_info["tool_calls"]`` holds the whole choice, arguments parsed.
        Other aliases stream the JSON choice they write as text. A worker
        failure after tool calls were given restarts the answer.
        """
        messages = _as_messages(conversations)
        tool_fields: dict[str, Any] = {}
        if tools:
            messages, tool_fields = tools_request(messages, tools, tool_choice)
        messages = prepare_messages(messages)
        alias = self._model(model)
        llm_config = self._model_settings.llm_config(alias, _llm_config(llm_config))
        channel = self.channel
        payload = {
            "conversations": messages,
            "llm_config": llm_config,
            "stream": True,
            "extra_request_params": extra_request_params or {},
            **tool_fields,
        }
        call: Call | None = await channel.submit(
            alias,
            RequestKind.CHAT,
            payload,
            self._timeout(llm_config),
            owner=self,
            request_id=_request_id(llm_config),
        )
        answer = StreamedAnswer(delta_mode)
        continuations = 0
        while call is not None:
            current, call = call, None
            async with aclosing(channel.replies(current)) as replies:
                async for item in replies:
                    if item.type is ReplyType.DELTA:
                        added = answer.add(item.data)
                        if added is not None:
                            yield added
                    elif item.type is ReplyType.END:
                        yield answer.end(item.data.get("meta", {}), item.data.get("tool_calls"))
                    elif item.type is ReplyType.RETRY:
                        answer.new_attempt()
                        # tool calls given cannot be continued (a prefix is text): restart
                        continuable = answer.shown and not answer.calls_given
                        if continuable and continuations < CONTINUATIONS:
                            # ask again from what the caller has; leaving this call's
                            # replies cancels the attempt that started over
                            continuations += 1
                            call = await channel.submit(
                                alias,
                                RequestKind.CHAT,
                                {**payload, "continue_from": answer.shown},
                                _time_left(current.deadline),
                                owner=self,
                                request_id=_continuation_id(llm_config, continuations),
                            )
                            break

    async_stream_chat_oai = stream_chat_oai

    # -- functions written by the model ------------------------------------------------

    def impl(
        self,
        instruction: str | None = None,
        model: str | None = None,
        verbose: bool | None = None,
        skip_cache: bool = False,
        llm_config: dict[str, Any] | None = None,
    ) -> Callable[[Callable[..., Any]], Any]:
        """``@llm.impl()``: the model writes the function's body on first call, from its
        signature, docstring and ``instruction``; cached afterwards unless ``skip_cache``.
        ``verbose`` prints the code written. Calls are coroutines here."""
        return self.impl_decorator(instruction, model, verbose, skip_cache, llm_config, sync=False)

    def impl_decorator(
        self,
        instruction: str | None,
        model: str | None,
        verbose: bool | None,
        skip_cache: bool,
        llm_config: dict[str, Any] | None,
        sync: bool,
    ) -> Callable[[Callable[..., Any]], Any]:
        """``impl`` for either facade: ``sync`` makes calls return values, not coroutines."""
        from byzerllm.client.impl import ImplFunction

        return lambda func: ImplFunction(
            self,
            func,
            model,
            llm_config,
            sync=sync,
            instruction=instruction or "",
            skip_cache=skip_cache,
            verbose=bool(verbose),
        )

    def clear_impl_cache(
        self,
        model: str | None = None,
        full_func_name: str | None = None,
        instruction: str | None = None,
    ) -> AsyncByzerLLM:
        """Forget generated functions: all, or those of a model, function or instruction."""
        from byzerllm.client.impl import clear_impl_cache

        clear_impl_cache(self.impl_cache, model, full_func_name, instruction)
        return self

    # -- embeddings ------------------------------------------------------------------

    async def emb(
        self,
        model: str | None,
        texts: list[str] | str | LLMRequest | None = None,
        llm_config: dict[str, Any] | None = None,
        *,
        request: list[str] | str | LLMRequest | None = None,
        extract_params: dict[str, Any] | None = None,
    ) -> list[LLMResponse]:
        """One embedding per text. The original's spelling works too:
        ``emb(model, request=LLMRequest(instruction=...), extract_params={...})``."""
        alias = model or self.default_emb_model_name or self.default_model_name
        if not alias:
            raise ConfigurationError(
                "no embedding model given: pass model=... or call "
                "llm.setup_default_emb_model_name(alias)"
            )
        given = texts if texts is not None else request
        if isinstance(given, LLMRequest):
            given = given.instruction
        if given is None:
            raise ConfigurationError(
                "no texts to embed: pass texts=[...] or request=LLMRequest(...)"
            )
        items = [given] if isinstance(given, str) else list(given)
        llm_config = {**_llm_config(extract_params), **_llm_config(llm_config)}
        llm_config = self._model_settings.llm_config(alias, llm_config)
        channel = self.channel
        call = await channel.submit(
            alias,
            RequestKind.EMBED,
            {"texts": items, "llm_config": llm_config},
            self._timeout(llm_config),
            owner=self,
        )
        vectors: list[list[float]] = []
        meta: dict[str, Any] = {}
        async for item in channel.replies(call):
            if item.type is ReplyType.END:
                vectors = item.data.get("output", [])
                meta = item.data.get("meta", {})
        return [
            LLMResponse(output=v, input=t, metadata=meta)
            for v, t in zip(vectors, items, strict=False)
        ]

    async def emb_query(self, text: str, model: str | None = None) -> list[LLMResponse]:
        return await self.emb(model, [text])

    # -- inspection ------------------------------------------------------------------

    async def get_meta(self, model: str | None = None) -> dict[str, Any]:
        alias = self._model(model)
        channel = self.channel
        call = await channel.submit(alias, RequestKind.META, {}, self._timeout({}), owner=self)
        meta: dict[str, Any] = {}
        async for item in channel.replies(call):  # to the end, or the call counts as cancelled
            if item.type is ReplyType.END:
                meta = dict(item.data.get("output", {}))
        return meta

    async def is_model_exist(self, model: str) -> bool:
        channel = self.channel
        await channel.start()
        with redis_errors(self.settings):
            return await deployments.exists(channel.redis, channel.keys, model)

    async def stat(self, model: str | None = None) -> dict[str, Any] | None:
        channel = self.channel
        await channel.start()
        with redis_errors(self.settings):
            stat = await read_alias_stat(channel.redis, channel.keys, self._model(model))
        return None if stat is None else stat.guide_view()

    # -- in-flight requests and deployments ------------------------------------------

    def abort(self, request_id: str) -> bool:
        """Stop the in-flight request whose id the caller chose with
        ``llm_config={"gen.request_id": id}``: its caller gets
        RequestCancelledError and the worker stops. False if none is in flight."""
        return any([channel.abort(request_id) for channel in self._channels])

    async def deploy(
        self,
        model_path: str,
        pretrained_model_type: str,
        udf_name: str,
        infer_params: dict[str, Any] | None = None,
        *,
        force: bool = False,
        timeout: float = 600.0,
    ) -> dict[str, Any]:
        """The original's Python deploy: the resources come from ``setup_num_workers``,
        ``setup_gpus_per_worker``, ``setup_infer_backend`` and the like; the same
        control plane as ``byzerllm deploy`` (node agents place the workers).
        Returns the deployed alias' meta once its workers are ready."""
        from byzerllm.client.deploy import deploy

        spec = DeploySpec(
            alias=udf_name,
            pretrained_model_type=pretrained_model_type,
            model_path=model_path or "",
            infer_params=dict(infer_params or {}),
            **self._model_settings.deploy,
        )
        await deploy(self.settings, spec, force=force, timeout=timeout)
        return await self.get_meta(model=udf_name)

    async def undeploy(self, udf_name: str, force: bool = False, timeout: float = 120.0) -> bool:
        """Drain and remove the alias (``force`` is the original's; draining is always
        safe here). False when it was not deployed."""
        from byzerllm.client.deploy import undeploy

        return await undeploy(self.settings, check_alias(udf_name), timeout=timeout)

    async def aclose(self) -> None:
        """End this client's own calls and leave its channels; other clients of the
        process keep theirs."""
        channels, self._channels = self._channels, []
        for channel in channels:
            await channel.release(self)

    # -- rerank --

    # the alias emb_rerank uses when it is given none (the original's attribute)
    default_rerank_model_name: str | None = None

    def setup_default_re_rank_model_name(self, model: str) -> AsyncByzerLLM:
        self.default_rerank_model_name = check_alias(model)
        return self

    async def emb_rerank(
        self,
        model: str | None = None,
        sentence_pairs: Any = None,
        extract_params: dict[str, Any] | None = None,
    ) -> list[LLMResponse]:
        """Relevance of (query, passage) pairs by a reranker (``custom/bge_rerank``).

        As the original: one LLMResponse whose output is ``(pair, score)`` for a
        single pair, else every ``(pair, score)``, best first; here
        ``metadata["scores"]`` also keeps the scores in the pairs' order. The
        alias falls back to the default emb model, as the original's docs
        deployed a reranker under it. ``extract_params`` travel as llm_config.
        """
        from byzerllm.client import rerank

        alias = model or self.default_rerank_model_name or self.default_emb_model_name
        if not alias:
            raise ConfigurationError(
                "no rerank model given: pass model=... or call "
                "llm.setup_default_re_rank_model_name(alias)"
            )
        single, pairs = rerank.parse_pairs(sentence_pairs)
        llm_config = self._model_settings.llm_config(alias, _llm_config(extract_params))
        groups = rerank.by_query(pairs)
        # one request per query, all in flight at once: the worker batches them together
        calls = [
            asyncio.ensure_future(
                self._rerank_query(alias, query, [pairs[i][1] for i in at], llm_config)
            )
            for query, at in groups.items()
        ]
        try:
            answers = await asyncio.gather(*calls)
        finally:
            for call in calls:  # after a failure, the other requests stop too
                call.cancel()
        scores = [0.0] * len(pairs)
        for at, (group_scores, _) in zip(groups.values(), answers, strict=True):
            for i, score in zip(at, group_scores, strict=True):
                scores[i] = score
        metadata = {**answers[0][1], "scores": scores}
        if len(answers) > 1:
            metadata["request_ids"] = [meta.get("request_id") for _, meta in answers]
        output = rerank.ranked(sentence_pairs, single, scores)
        return [LLMResponse(output=output, input=sentence_pairs, metadata=metadata)]

    async def _rerank_query(
        self, alias: str, query: str, documents: list[str], llm_config: dict[str, Any]
    ) -> tuple[list[float], dict[str, Any]]:
        """The scores of ``documents`` for one ``query``, and the reply's meta."""
        from byzerllm.client import rerank

        channel = self.channel
        call = await channel.submit(
            alias,
            RequestKind.RERANK,
            rerank.payload(query, documents, llm_config),
            self._timeout(llm_config),
            owner=self,
        )
        output: Any = None
        meta: dict[str, Any] = {}
        async for item in channel.replies(call):  # to the end, or the call counts as cancelled
            if item.type is ReplyType.END:
                output = item.data.get("output")
                meta = dict(item.data.get("meta", {}))
        return rerank.scores_of(output, documents, alias), meta

"""``byzerllm.ByzerLLM``: the synchronous facade over :class:`AsyncByzerLLM`.

Every method forwards to the async core on a background loop; nothing here
talks to Redis itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from byzerllm.client.channel import close_channels
from byzerllm.client.llm import AsyncByzerLLM, Conversations
from byzerllm.client.loop_thread import iterate_sync, on_shutdown, run_sync
from byzerllm.client.setup import ClientSetup, ModelSettings
from byzerllm.client.types import LLMRequest, LLMResponse, SingleOutputMeta

on_shutdown(close_channels)


class ByzerLLM(ClientSetup):
    """Synchronous client; ``llm.aio`` is the async one it wraps."""

    def __init__(self, redis_url: str | None = None, **kwargs: Any) -> None:
        kwargs.pop("verbose", None)  # accepted for compatibility with the original
        kwargs.pop("default_max_output_length", None)
        kwargs.pop("byzer_engine_url", None)
        self.aio = AsyncByzerLLM(redis_url, **kwargs)

    @classmethod
    def from_default_model(
        cls,
        model: str,
        auto_connect_cluster: bool = True,
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> ByzerLLM:
        llm = cls(redis_url, **kwargs)
        llm.setup_default_model_name(model)
        llm.setup_template(model, "auto")
        return llm

    # -- configuration -----------------------------------------------------------------

    @property
    def model_settings(self) -> ModelSettings:
        """The async core's: a setup made here applies to calls made through ``aio``."""
        return self.aio.model_settings

    @property
    def default_model_name(self) -> str | None:
        return self.aio.default_model_name

    @property
    def default_emb_model_name(self) -> str | None:
        return self.aio.default_emb_model_name

    def setup_default_model_name(self, model: str) -> ByzerLLM:
        self.aio.setup_default_model_name(model)
        return self

    def setup_default_emb_model_name(self, model: str) -> ByzerLLM:
        self.aio.setup_default_emb_model_name(model)
        return self

    def setup_template(self, model: str, template: Any = "auto") -> ByzerLLM:
        self.aio.setup_template(model, template)
        return self

    # -- calls -----------------------------------------------------------------------

    def chat_oai(
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
        return run_sync(
            self.achat_oai(
                conversations,
                model=model,
                role_mapping=role_mapping,
                llm_config=llm_config,
                extra_request_params=extra_request_params,
                tools=tools,
                tool_choice=tool_choice,
                execute_tool=execute_tool,
                func_params=func_params,
                response_class=response_class,
                response_after_chat=response_after_chat,
                only_return_prompt=only_return_prompt,
            )
        )

    def achat_oai(self, conversations: Conversations, **kwargs: Any) -> Any:
        """``await llm.achat_oai(...)``: the async core's chat_oai (same arguments)."""
        return self.aio.chat_oai(conversations, **kwargs)

    def astream_chat_oai(
        self, conversations: Conversations, **kwargs: Any
    ) -> AsyncIterator[tuple[str, SingleOutputMeta]]:
        """``async for t, meta in llm.astream_chat_oai(...)``."""
        return self.aio.stream_chat_oai(conversations, **kwargs)

    async_stream_chat_oai = astream_chat_oai

    def prompt(self, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        """``@llm.prompt()``: a prompt function bound to this client."""
        from byzerllm.client.prompt import prompt

        return prompt(llm=self, **kwargs)

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
        ``verbose`` prints the code written."""
        return self.aio.impl_decorator(
            instruction, model, verbose, skip_cache, llm_config, sync=True
        )

    def clear_impl_cache(
        self,
        model: str | None = None,
        full_func_name: str | None = None,
        instruction: str | None = None,
    ) -> ByzerLLM:
        """Forget generated functions: all, or those of a model, function or instruction."""
        self.aio.clear_impl_cache(model, full_func_name, instruction)
        return self

    def stream_chat_oai(
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
    ) -> Iterator[tuple[str, SingleOutputMeta]]:
        """See :meth:`AsyncByzerLLM.stream_chat_oai`. The answer is read on the
        client's loop at most ``loop_thread.READ_AHEAD`` items ahead of this
        iterator; closing it early (``close()``, or dropping it: a ``break`` out
        of a ``for`` does) stops the request on its worker."""
        return iterate_sync(
            self.aio.stream_chat_oai(
                conversations,
                model=model,
                role_mapping=role_mapping,
                delta_mode=delta_mode,
                llm_config=llm_config,
                extra_request_params=extra_request_params,
                tools=tools,
                tool_choice=tool_choice,
            )
        )

    def emb(
        self,
        model: str | None,
        texts: list[str] | str | LLMRequest | None = None,
        llm_config: dict[str, Any] | None = None,
        *,
        request: list[str] | str | LLMRequest | None = None,
        extract_params: dict[str, Any] | None = None,
    ) -> list[LLMResponse]:
        """One embedding per text; the original's ``request=LLMRequest(...)`` works too."""
        return run_sync(
            self.aio.emb(model, texts, llm_config, request=request, extract_params=extract_params)
        )

    def emb_query(self, text: str, model: str | None = None) -> list[LLMResponse]:
        return run_sync(self.aio.emb_query(text, model))

    def get_meta(self, model: str | None = None) -> dict[str, Any]:
        return run_sync(self.aio.get_meta(model))

    def is_model_exist(self, model: str) -> bool:
        return run_sync(self.aio.is_model_exist(model))

    # -- in-flight requests and deployments ------------------------------------------

    def abort(self, request_id: str) -> bool:
        """Stop the in-flight request with that id (``llm_config={"gen.request_id": id}``)."""
        aio = self.aio
        return bool(run_sync(_call_on_loop(lambda: aio.abort(request_id))))

    def deploy(
        self,
        model_path: str,
        pretrained_model_type: str,
        udf_name: str,
        infer_params: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """See :meth:`AsyncByzerLLM.deploy`."""
        return run_sync(
            self.aio.deploy(model_path, pretrained_model_type, udf_name, infer_params, **kwargs)
        )

    def undeploy(self, udf_name: str, force: bool = False, timeout: float = 120.0) -> bool:
        return run_sync(self.aio.undeploy(udf_name, force=force, timeout=timeout))

    def close(self) -> None:
        run_sync(self.aio.aclose())

    # -- rerank --

    @property
    def default_rerank_model_name(self) -> str | None:
        return self.aio.default_rerank_model_name

    def setup_default_re_rank_model_name(self, model: str) -> ByzerLLM:
        self.aio.setup_default_re_rank_model_name(model)
        return self

    def emb_rerank(
        self,
        model: str | None = None,
        sentence_pairs: Any = None,
        extract_params: dict[str, Any] | None = None,
    ) -> list[LLMResponse]:
        """See :meth:`AsyncByzerLLM.emb_rerank`."""
        return run_sync(self.aio.emb_rerank(model, sentence_pairs, extract_params))


async def _call_on_loop(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on the client's loop thread, where its channels live."""
    return fn()

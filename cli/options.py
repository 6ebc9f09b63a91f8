"""Click option that takes several values, as argparse's ``nargs="+"`` did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class MultiValueOption(click.Option):
    """``--infer_params a=1 b=2 --model x``: takes every value up to the next option."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("multiple", True)
        super().__init__(*args, **kwargs)
        self._previous_process: Any = None

    def add_to_parser(self, parser: Any, ctx: click.Context) -> None:
        super().add_to_parser(parser, ctx)
        for name in self.opts:
            our = parser._long_opt.get(name) or parser._short_opt.get(name)
            if our is None:
                continue
            previous = our.process

            def process(value: Any, state: Any, previous: Any = previous) -> None:
                values = [value]
                while state.rargs and not state.rargs[0].startswith("--"):
                    values.append(state.rargs.pop(0))
                for item in values:
                    previous(item, state)

            our.process = process


def deploy_options(model_required: bool) -> Callable[[F], F]:
    """The guide's deploy flags, shared by ``deploy`` and ``worker``."""

    def decorate(fn: F) -> F:
        for option in reversed(
            [
                click.option("--model", required=model_required, help="The alias to serve."),
                click.option(
                    "--pretrained_model_type",
                    default="custom/auto",
                    show_default=True,
                    help="saas/<vendor>, custom/auto, custom/bge, custom/echo, ...",
                ),
                click.option(
                    "--infer_backend",
                    default="",
                    help="vllm | llama_cpp | transformers (local models)",
                ),
                click.option("--model_path", default="", help="Local model file or folder."),
                click.option(
                    "--infer_params",
                    cls=MultiValueOption,
                    help="k=v ... backend parameters (saas.api_key=..., n_ctx=4096).",
                ),
                click.option("--num_workers", default=1, show_default=True, type=click.IntRange(1)),
                click.option(
                    "--worker_concurrency",
                    default=None,
                    type=click.IntRange(1),
                    help="Requests one worker serves at once "
                    "[default: 1, or what the backend batches itself, e.g. vllm: 256].",
                ),
                click.option(
                    "--cpus_per_worker", default=0.01, show_default=True, type=click.FloatRange(0)
                ),
                click.option(
                    "--gpus_per_worker", default=0.0, show_default=True, type=click.FloatRange(0)
                ),
            ]
        ):
            fn = option(fn)
        return fn

    return decorate

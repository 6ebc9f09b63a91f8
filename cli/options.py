"""Click option that takes several values, as argparse's ``nargs="+"`` did."""

from __future__ import annotations

from typing import Any

import click


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

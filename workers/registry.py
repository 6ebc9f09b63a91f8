"""Finding the backend class for a pretrained_model_type.

Backends are discovered through the ``byzerllm.backends`` entry point group;
the built-in ones register there exactly like a third-party package would.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

from byzerllm.broker.errors import BackendLoadError, BackendNotFoundError
from byzerllm.workers.backend import Backend

GROUP = "byzerllm.backends"


@cache
def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def known_backends() -> list[str]:
    return sorted(_entry_points())


def backend_class(pretrained_model_type: str, infer_backend: str = "") -> type[Backend]:
    """The class registered for the type (``custom/auto`` + backend resolves to the backend)."""
    names = [pretrained_model_type]
    if infer_backend:
        names.insert(0, f"{pretrained_model_type}+{infer_backend}")
    eps = _entry_points()
    for name in names:
        if name in eps:
            try:
                cls = eps[name].load()
            except ImportError as exc:
                raise BackendLoadError(
                    f"the backend for {name} needs a package that is not installed: {exc}; "
                    "install the matching extra, e.g. pip install 'byzerllm[openai]'"
                ) from exc
            if not (isinstance(cls, type) and issubclass(cls, Backend)):
                raise BackendLoadError(f"entry point {name} does not name a Backend subclass")
            return cls
    raise BackendNotFoundError(
        f"no backend for pretrained_model_type {pretrained_model_type!r}"
        + (f" with infer_backend {infer_backend!r}" if infer_backend else "")
        + f"; known: {', '.join(known_backends())}"
    )

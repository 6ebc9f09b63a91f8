"""Finding the backend class for a pretrained_model_type.

Backends are discovered through the ``byzerllm.backends`` entry point group;
the built-in ones register there exactly like a third-party package would.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from byzerllm.broker.errors import BackendLoadError, BackendNotFoundError
from byzerllm.broker.spec import DeploySpec
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
    known = known_backends()
    close = difflib.get_close_matches(names[0], known, n=3, cutoff=0.6)
    raise BackendNotFoundError(
        f"no backend for pretrained_model_type {pretrained_model_type!r}"
        + (f" with infer_backend {infer_backend!r}" if infer_backend else "")
        + (f" (did you mean {' or '.join(close)}?)" if close else "")
        + f"; known: {', '.join(known)}"
    )


def check_deployable(spec: DeploySpec) -> None:
    """What a worker would refuse about ``spec`` at start, found before any worker
    is placed: an unknown backend type (with the closest names), an infer_params
    key no option reads, a value the backend's own checks refuse. Raises the
    worker's own error. A backend whose package is not installed here (it may
    be on the nodes) is left to the worker to check.
    """
    try:
        cls = backend_class(spec.pretrained_model_type, spec.infer_backend)
    except BackendLoadError:
        return
    cls.parse_options(spec)

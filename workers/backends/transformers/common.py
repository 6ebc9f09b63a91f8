"""What the transformers backends share: imports, device and dtype choice, model folders.

torch and transformers are heavy and optional, so they are imported here,
on a backend's start, never when ``byzerllm`` is imported. Every load is
offline (``local_files_only``): a worker must not reach a model hub, so a
model is a folder on disk written by ``save_pretrained`` (or a hub snapshot).
A bad path or a missing package is the deployer's to fix, so the errors
name the path and the fix.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import AliasChoices, Field

from byzerllm.broker.errors import BackendLoadError, ConfigurationError
from byzerllm.broker.spec import DeploySpec
from byzerllm.workers.backend import Backend, BackendOptions

T = TypeVar("T")

INSTALL_HINT = "pip install 'byzerllm[transformers]' (on a CPU-only host install torch first)"

DType = Literal["auto", "float32", "float16", "bfloat16"]


class TransformersOptions(BackendOptions):
    """infer_params every transformers backend reads."""

    # ``cuda:1``, ``cpu``...: wins over the choice made from --gpus_per_worker
    device: str | None = None
    # "auto": the checkpoint's dtype on a GPU, float32 on a CPU (half precision is slow there)
    dtype: DType = Field(default="auto", validation_alias=AliasChoices("dtype", "torch_dtype"))
    # runs Python code shipped in the model folder: off unless the deployer trusts it
    trust_remote_code: bool = False
    # CPU threads torch may use (process-wide); unset: torch's default, every core.
    # Set it when several workers share a host: oversubscribed cores slow CPU inference
    # down by an order of magnitude, not by the share they lose.
    threads: int | None = Field(default=None, gt=0)


def import_torch() -> tuple[ModuleType, ModuleType]:
    """``(torch, transformers)``, or a BackendLoadError that says what to install."""
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise BackendLoadError(
            f"the transformers backends need torch and transformers ({exc.name} is missing): "
            + INSTALL_HINT
        ) from None
    return torch, transformers


def model_folder(spec: DeploySpec, what: str) -> Path:
    """The spec's model folder; errors name the path and what a folder must hold."""
    if not spec.model_path:
        raise ConfigurationError(
            f"{spec.alias}: {spec.pretrained_model_type} needs --model_path pointing at a "
            f"{what} folder (config.json and weights, as written by save_pretrained)"
        )
    path = Path(spec.model_path).expanduser()
    if not path.exists():
        raise BackendLoadError(
            f"{spec.alias}: model_path {spec.model_path!r} does not exist on this host; "
            f"give the folder of a {what} (config.json and weights) with --model_path"
        )
    return path


def require_files(path: Path, alias: str, *names: str) -> None:
    """Fail before transformers does, with a message that names the folder."""
    if not path.is_dir():
        raise BackendLoadError(
            f"{alias}: model_path {str(path)!r} is not a folder; give the folder that holds "
            f"{', '.join(names)} and the weights"
        )
    missing = [n for n in names if not (path / n).exists()]
    if missing:
        raise BackendLoadError(
            f"{alias}: model_path {str(path)!r} has no {', '.join(missing)}; "
            "it must be a model folder written by save_pretrained (or a hub snapshot)"
        )


def load_error(alias: str, path: Path | str, exc: BaseException) -> BackendLoadError:
    """A transformers loading failure as a BackendLoadError naming the folder."""
    return BackendLoadError(
        f"{alias}: transformers could not load {str(path)!r}: {type(exc).__name__}: {exc}; "
        "check that the folder holds a complete model (config.json, weights, tokenizer files) "
        "and that transformers is recent enough for it"
    )


def apply_threads(torch: ModuleType, options: TransformersOptions) -> None:
    if options.threads:
        torch.set_num_threads(options.threads)


def choose_device(torch: ModuleType, spec: DeploySpec, requested: str | None) -> str:
    """infer_params ``device`` wins; else a GPU when the deployment asked for one and has it."""
    if requested:
        device = requested.strip().lower()
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendLoadError(
                f"{spec.alias}: infer_params device={requested} but torch sees no CUDA GPU "
                "(is this a CPU build of torch, or is CUDA_VISIBLE_DEVICES empty?); "
                "use device=cpu or deploy on a GPU host"
            )
        return device
    if spec.gpus_per_worker > 0 and torch.cuda.is_available():
        return "cuda"
    return "cpu"


def torch_dtype(torch: ModuleType, dtype: DType, device: str) -> Any:
    """The dtype to load weights in (see :class:`TransformersOptions`)."""
    if dtype == "auto":
        return "auto" if device.startswith("cuda") else torch.float32
    return getattr(torch, dtype)


def load_kwargs(
    torch: ModuleType, transformers: ModuleType, options: TransformersOptions, device: str
) -> dict[str, Any]:
    """``from_pretrained`` arguments: offline, the chosen dtype, remote code only if trusted.

    transformers 4.56 renamed ``torch_dtype`` to ``dtype``; both lines are supported.
    """
    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
    return {
        "local_files_only": True,
        "trust_remote_code": options.trust_remote_code,
        dtype_key: torch_dtype(torch, options.dtype, device),
    }


def model_token_limit(tokenizer: Any, model: Any) -> int:
    """The longest input the model takes, in tokens: the tokenizer's limit where it
    states a real one (not transformers' "unlimited" placeholder), else the model's
    positions."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit <= 100_000:
        return limit
    return int(getattr(model.config, "max_position_embeddings", 512) or 512)


def batch_wait(spec: DeploySpec, wait_ms: float) -> float:
    """Seconds an idle model waits for the rest of a burst before a forward pass:
    none for a worker that serves one request at a time, which has no burst."""
    return wait_ms / 1000 if spec.worker_concurrency > 1 else 0.0


def stop_criteria(event: threading.Event) -> Any:
    """A StoppingCriteriaList that ends generation once ``event`` is set.

    Generation runs in a thread; the event is how a cancelled request (or a
    stop word found in the text) ends it after the current token.
    """
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), event.is_set(), dtype=torch.bool)

    return StoppingCriteriaList([StopOnEvent()])


async def run_stoppable(fn: Callable[[], T], stop: threading.Event) -> T:
    """``fn()`` in a thread of its own; a cancelled caller sets ``stop`` and waits for it.

    Unlike ``asyncio.to_thread``, the caller does not return while the work
    still runs: a worker slot (and the model lock) is freed only when the
    model really stopped, so the next request never shares the model with
    an abandoned one.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()
    done.add_done_callback(lambda f: f.cancelled() or f.exception())  # seen even if abandoned

    def settle(result: Any, exc: BaseException | None) -> None:
        if done.done():
            return
        if exc is not None:
            done.set_exception(exc)
        else:
            done.set_result(result)

    def target() -> None:
        try:
            result = fn()
        except BaseException as exc:  # handed to the event loop, raised there
            loop.call_soon_threadsafe(settle, None, exc)
        else:
            loop.call_soon_threadsafe(settle, result, None)

    thread = threading.Thread(target=target, name="transformers-run", daemon=True)
    thread.start()
    try:
        return await asyncio.shield(done)
    finally:
        stop.set()
        if thread.is_alive():
            await asyncio.to_thread(thread.join)


class TransformersBackend(Backend):
    """What the transformers backends share: the model folder checked when the
    worker is built (a deploy without one fails at once), and torch imported,
    its threads set and the device chosen when the worker starts."""

    what: ClassVar[str] = "model"  # named in errors about the folder
    options: TransformersOptions

    def __init__(self, spec: DeploySpec) -> None:
        super().__init__(spec)
        if not spec.model_path:
            model_folder(spec, self.what)  # raises, naming the fix
        self._model: Any = None
        self._device = "cpu"

    def _prepare(self) -> tuple[ModuleType, ModuleType, Path]:
        """``(torch, transformers, model folder)``, with threads and device set."""
        torch, transformers = import_torch()
        apply_threads(torch, self.options)
        folder = model_folder(self.spec, self.what)
        self._device = choose_device(torch, self.spec, self.options.device)
        return torch, transformers, folder

    def _load_pretrained(
        self, torch: ModuleType, transformers: ModuleType, model_class: Any, folder: Path
    ) -> tuple[Any, Any]:
        """``(tokenizer, model)`` from ``folder``: offline, on the device, in eval mode.

        The encoder backends (embeddings, rerank) load the same way and differ
        only in the model class (``AutoModel``, ``AutoModelForSequenceClassification``);
        a failure names the folder.
        """
        alias = self.spec.alias
        require_files(folder, alias, "config.json")
        kwargs = load_kwargs(torch, transformers, self.options, self._device)
        tokenizer_kwargs = {k: v for k, v in kwargs.items() if k not in ("dtype", "torch_dtype")}
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, **tokenizer_kwargs)
            model = model_class.from_pretrained(folder, **kwargs)
            model.to(self._device)
        except (OSError, ValueError, RuntimeError, ImportError, KeyError) as exc:
            raise load_error(alias, folder, exc) from exc
        return tokenizer, model.eval()

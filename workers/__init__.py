"""Worker processes: the runtime that serves an alias, and the backends it runs."""

from byzerllm.workers.backend import Backend, BackendOptions, Chunk
from byzerllm.workers.registry import backend_class, known_backends
from byzerllm.workers.runtime import Worker, WorkerTiming, serve

__all__ = [
    "Backend",
    "BackendOptions",
    "Chunk",
    "Worker",
    "WorkerTiming",
    "backend_class",
    "known_backends",
    "serve",
]

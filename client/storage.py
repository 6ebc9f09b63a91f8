"""``ByzerStorage``, the guide's embedding sample (imported at the original's path).

In the original, ``byzerllm storage start --enable_emb`` started a retrieval
cluster on Ray and deployed an embedding model under the alias ``emb``;
``ByzerStorage(...).emb(text)`` asked that model. Here the alias is served
by our workers (``byzerllm storage start --enable_emb`` deploys a local
sentence-embedding model as ``emb``), and ``emb`` asks it through Redis.

The retrieval store itself (schemas, writers, hybrid search on the JVM) is
not part of this project; its methods say so instead of failing obscurely.
The enums keep their names so code that imports them still imports.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from byzerllm.broker.errors import ByzerLLMError, ConfigurationError
from byzerllm.client.sync import ByzerLLM

DEFAULT_EMB_MODEL = "emb"


class DataType(StrEnum):
    STRING = "string"
    LONG = "long"
    INT = "int"
    FLOAT = "float"
    DOUBLE = "double"
    BOOLEAN = "boolean"
    ARRAY = "array"
    MAP = "map"


class FieldOption(StrEnum):
    ANALYZE = "analyze"
    SORT = "sort"
    NO_INDEX = "no_index"


class SortOption(StrEnum):
    ASC = "asc"
    DESC = "desc"


class ByzerStorage:
    """``ByzerStorage(cluster_name, database, table)``; ``emb(text)`` is the vector.

    ``redis_url`` replaces the original's ``ray_address``; ``emb_model`` is
    the alias asked for vectors (``emb`` unless told otherwise).
    """

    def __init__(
        self,
        cluster_name: str,
        database: str,
        table: str,
        base_dir: str | None = None,
        redis_url: str | None = None,
        emb_model: str = DEFAULT_EMB_MODEL,
        **kwargs: Any,
    ) -> None:
        for name, value in (
            ("cluster_name", cluster_name),
            ("database", database),
            ("table", table),
        ):
            if not isinstance(value, str) or not value:
                raise ConfigurationError(f"ByzerStorage needs a non-empty {name}, not {value!r}")
        self.cluster_name, self.database, self.table = cluster_name, database, table
        self.base_dir = base_dir
        self.emb_model = emb_model
        ray_address = kwargs.get("ray_address")
        if not redis_url and ray_address and ray_address != "auto":
            redis_url = ray_address  # the original's parameter, now a Redis URL
        self.llm = ByzerLLM(redis_url)
        self.llm.setup_default_emb_model_name(emb_model)

    def emb(self, s: str) -> list[float]:
        """The embedding vector of ``s`` from the ``emb_model`` alias."""
        [response] = self.llm.emb(self.emb_model, s)
        return list(response.output)

    def _retrieval(self, *args: Any, **kwargs: Any) -> Any:
        raise ByzerLLMError(
            "the ByzerStorage retrieval store (schemas, writes, search) is not available in this "
            "byzerllm; ByzerStorage offers emb(). Store vectors in a database of your choice."
        )

    schema_builder = writer = query_builder = retrieval = _retrieval
    delete_by_ids = truncate_table = commit = _retrieval

    def close(self) -> None:
        self.llm.close()

    def __enter__(self) -> ByzerStorage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

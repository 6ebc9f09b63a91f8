"""The original's ByzerStorage entry point: embeddings through a deployed model."""

from byzerllm.apps.byzer_storage.simple_api import ByzerStorage, DataType, FieldOption, SortOption

__all__ = ["ByzerStorage", "DataType", "FieldOption", "SortOption"]

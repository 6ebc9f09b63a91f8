"""``byzerllm.apps.byzer_storage.simple_api``: the original's import path."""

from byzerllm.client.storage import ByzerStorage, DataType, FieldOption, SortOption

__all__ = ["ByzerStorage", "DataType", "FieldOption", "SortOption"]

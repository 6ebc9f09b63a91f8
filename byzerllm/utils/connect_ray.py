"""``byzerllm.utils.connect_ray``: the original's import path; the cluster is a Redis now."""

from byzerllm.client.cluster import connect_cluster

__all__ = ["connect_cluster"]

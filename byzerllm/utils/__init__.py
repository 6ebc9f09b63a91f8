"""Helpers at the import paths of the original byzerllm."""

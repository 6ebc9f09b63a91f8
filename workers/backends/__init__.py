"""Built-in backends; each registers under the ``byzerllm.backends`` entry points."""

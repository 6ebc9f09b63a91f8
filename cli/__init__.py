"""Command line: ``byzerllm`` and ``easy-byzerllm``, thin over the library."""

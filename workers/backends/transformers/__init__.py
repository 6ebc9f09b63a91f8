"""Backends on Hugging Face transformers: embeddings, rerank, causal-LM chat, whisper."""

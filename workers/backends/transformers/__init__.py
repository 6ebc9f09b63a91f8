"""Backends on Hugging Face transformers: embeddings, causal-LM chat, whisper."""

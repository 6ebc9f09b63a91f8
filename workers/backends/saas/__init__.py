"""Backends that call a vendor's API (``saas/*`` pretrained_model_types)."""

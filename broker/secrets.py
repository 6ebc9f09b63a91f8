"""Sealing with the cluster key, so Redis holds no secret and no unchecked spec.

A deployment's spec is sealed whole (secrets included) with the cluster key:
Redis sees only the token and a masked copy for display, and a worker trusts
only what it unseals, so someone who can write to Redis can neither read an
API key nor point a worker (and its key) at another URL.

The key comes from ``BYZERLLM_SECRET_KEY`` (a Fernet key: 32 url-safe base64
bytes), else from ``~/.byzerllm/secret.key``, created with mode 0600 on first
use. Every host that deploys or runs workers needs the same key: copy the file
or set the variable (see docs/security.md). The key itself never goes to Redis.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import ensure_home_dir, home_dir

KEY_ENV = "BYZERLLM_SECRET_KEY"


def key_path() -> Path:
    return home_dir() / "secret.key"


def cluster_key(create: bool = True) -> bytes:
    """The cluster key; created (0600) on first use unless ``create`` is False."""
    from_env = os.environ.get(KEY_ENV)
    if from_env:
        return _checked(from_env.encode(), f"${KEY_ENV}")
    path = key_path()
    if path.exists():
        return _checked(path.read_bytes().strip(), str(path))
    if not create:
        raise ConfigurationError(
            f"no cluster key: set {KEY_ENV} or copy the deploying host's {path} here"
        )
    ensure_home_dir()
    key = Fernet.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key)
    return key


def _checked(key: bytes, where: str) -> bytes:
    try:
        Fernet(key)
    except ValueError:
        raise ConfigurationError(
            f"the cluster key in {where} is not a Fernet key (32 url-safe base64-encoded "
            "bytes); create one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None
    return key


def seal(data: dict[str, Any], key: bytes | None = None) -> str:
    """``data`` (JSON-able) encrypted and authenticated with the cluster key."""
    return Fernet(key or cluster_key()).encrypt(json.dumps(data).encode()).decode()


def unseal(token: str, key: bytes | None = None) -> dict[str, Any]:
    """What :func:`seal` sealed; a token changed in any way, or sealed with
    another key, is refused."""
    try:
        data = Fernet(key or cluster_key(create=False)).decrypt(token.encode())
    except InvalidToken:
        raise ConfigurationError(
            "the sealed data was changed in Redis or sealed with another cluster key: give "
            f"this host the same {KEY_ENV} or {key_path().name} as the host that deployed"
        ) from None
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ConfigurationError("the sealed data is not a JSON object")
    return value

"""Sealing secret infer_params with the cluster key, so Redis never sees them.

The key comes from ``BYZERLLM_SECRET_KEY`` (a Fernet key: 32 url-safe base64
bytes), else from ``~/.byzerllm/secret.key``, created with mode 0600 on first
use. Every host that deploys or runs workers needs the same key: copy the file
or set the variable (see the README). Only sealed tokens and masks are stored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import home_dir
from byzerllm.broker.spec import is_secret_key

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
    path.parent.mkdir(parents=True, exist_ok=True)
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


def seal(params: dict[str, Any], key: bytes | None = None) -> str:
    """The secret entries of ``params``, encrypted; "" when there are none."""
    secrets = {k: v for k, v in params.items() if is_secret_key(k) and v not in (None, "")}
    if not secrets:
        return ""
    return Fernet(key or cluster_key()).encrypt(json.dumps(secrets).encode()).decode()


def unseal(token: str, key: bytes | None = None) -> dict[str, Any]:
    if not token:
        return {}
    try:
        data = Fernet(key or cluster_key(create=False)).decrypt(token.encode())
    except InvalidToken:
        raise ConfigurationError(
            "the deployment's secrets were sealed with another cluster key: give this host "
            f"the same {KEY_ENV} or {key_path().name} as the host that deployed"
        ) from None
    return dict(json.loads(data))

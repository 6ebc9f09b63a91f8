"""Where to find Redis and how the broker behaves: one place for all of it.

Every process (client, worker, CLI) builds a :class:`BrokerSettings` from
explicit arguments first, then ``BYZERLLM_*`` environment variables, then
defaults, so a multi-host setup is configured by one environment.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from redis.asyncio.connection import parse_url

from byzerllm.broker.errors import ConfigurationError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def home_dir() -> Path:
    """Where this host keeps byzerllm's files (``BYZERLLM_HOME``, else ``~/.byzerllm``):
    the cluster key, the embedded Redis, node agent and worker logs.

    It only names the folder; whoever creates something there calls
    :func:`ensure_home_dir`, which makes it private."""
    return Path(os.environ.get("BYZERLLM_HOME") or Path.home() / ".byzerllm")


PRIVATE_DIR_MODE = 0o700


def ensure_home_dir(*parts: str) -> Path:
    """``home_dir() / parts``, created if missing, the home and each folder below it 0700.

    The home holds the cluster key and logs with prompts, answers and paths:
    only the user who runs byzerllm may read it. A folder an older version
    created 0755 is tightened; one this user does not own is left as it is
    (chmod would fail) and its mode is the owner's business.
    """
    folders = [home_dir()]
    for part in parts:
        folders.append(folders[-1] / part)
    for folder in folders:
        try:
            folder.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot create byzerllm's folder {folder}: {exc.strerror}; set BYZERLLM_HOME "
                "to a folder you can write"
            ) from None
        _make_private(folder)
    return folders[-1]


def _make_private(folder: Path) -> None:
    """chmod 0700 a folder of ours that others can enter (mkdir's mode obeys the umask).

    POSIX only: Windows has no such mode bits (the profile folder is private)."""
    if os.name != "posix":
        return
    info = folder.stat()
    if info.st_mode & 0o077 and info.st_uid == os.getuid():
        folder.chmod(PRIVATE_DIR_MODE)


_SCHEMES = ("redis", "rediss", "unix")


def mask_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))


class BrokerSettings(BaseModel):
    """Connection and limits shared by clients and workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis_url: str = DEFAULT_REDIS_URL
    prefix: str = Field(default="byzerllm", min_length=1)
    max_request_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    max_waiting: int = Field(default=10_000, gt=0)
    connect_timeout: float = Field(default=5.0, gt=0)

    @field_validator("redis_url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise ConfigurationError(
                f"bad Redis URL {mask_url(url)!r}: {exc}; expected e.g. {DEFAULT_REDIS_URL}"
            ) from None
        if parts.scheme not in _SCHEMES:
            raise ConfigurationError(
                f"bad Redis URL {mask_url(url)!r}: the scheme must be one of "
                f"{', '.join(s + '://' for s in _SCHEMES)}; e.g. {DEFAULT_REDIS_URL}"
            )
        if parts.scheme != "unix" and not parts.hostname:
            raise ConfigurationError(
                f"bad Redis URL {mask_url(url)!r}: no host; e.g. {DEFAULT_REDIS_URL}"
            )
        try:  # the one parser every process (and the node agents' job queue) uses
            parse_url(url)
        except ValueError as exc:
            raise ConfigurationError(f"bad Redis URL {mask_url(url)!r}: {exc}") from None
        return url

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ConfigurationError(_explain(exc)) from None

    @property
    def safe_url(self) -> str:
        return mask_url(self.redis_url)

    @classmethod
    def from_env(
        cls,
        redis_url: str | None = None,
        *,
        use_process_default: bool = True,
        **overrides: object,
    ) -> BrokerSettings:
        """Explicit arguments win over ``BYZERLLM_*`` variables, which win over defaults.

        With no ``redis_url``, the process default that ``byzerllm.connect_cluster``
        set (see :func:`set_process_default`) stands in for the environment: a
        program that names its cluster once gets it in every client it builds.
        ``use_process_default=False`` reads the environment regardless.
        """
        values: dict[str, Any] = {}
        default = _process_default if use_process_default and not redis_url else None
        if default is not None:
            values = default.model_dump()
            values.update({k: v for k, v in overrides.items() if v is not None})
            return cls(**values)
        env = os.environ
        # BYZERLLM_EMBEDDED_URL moves the embedded default (when 6379 is taken)
        url = redis_url or env.get("BYZERLLM_REDIS_URL") or env.get("BYZERLLM_EMBEDDED_URL")
        if url:
            values["redis_url"] = url
        for field, var in (
            ("prefix", "BYZERLLM_PREFIX"),
            ("max_request_bytes", "BYZERLLM_MAX_REQUEST_BYTES"),
            ("max_waiting", "BYZERLLM_MAX_WAITING"),
        ):
            if var in env:
                values[field] = env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# The settings ``connect_cluster`` chose for this process; None: read the environment.
_process_default: BrokerSettings | None = None


def set_process_default(settings: BrokerSettings | None) -> BrokerSettings | None:
    """Make ``settings`` what clients built without a URL use; None forgets it.

    Returns the previous default, so a caller (a test) can put it back. Only
    :meth:`BrokerSettings.from_env` reads it, and only when it is given no URL:
    explicit arguments still win, and workers and the CLI, which run in
    processes of their own, keep reading their environment.
    """
    global _process_default
    previous, _process_default = _process_default, settings
    return previous


def process_default() -> BrokerSettings | None:
    """The settings :func:`set_process_default` made the default, if any."""
    return _process_default


def _explain(exc: ValidationError) -> str:
    """The first problem in words; our own ConfigurationError message as it was."""
    error = exc.errors()[0]
    original = (error.get("ctx") or {}).get("error")
    if isinstance(original, ConfigurationError):
        return str(original)
    field = ".".join(str(p) for p in error["loc"])
    return f"bad broker setting {field}={error.get('input')!r}: {error['msg']}"

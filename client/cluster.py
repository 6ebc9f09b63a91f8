"""``byzerllm.connect_cluster``: name the cluster once, at the top of a program.

Every sample of the original starts with ``byzerllm.connect_cluster()``, which
joined a Ray cluster. Here the cluster is a Redis: the call takes its URL (or
reads ``BYZERLLM_REDIS_URL`` and the other ``BYZERLLM_*`` variables) and makes
those settings the default of every client the process builds afterwards
without a URL of its own. It opens no connection: the first call of a client
does, and reports an unreachable Redis then.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.settings import (
    DEFAULT_REDIS_URL,
    SENTINEL_SCHEMES,
    BrokerSettings,
    mask_url,
    process_default,
    set_process_default,
)

log = logging.getLogger(__name__)

# what the original accepted for "find the cluster from the environment"
_FROM_ENVIRONMENT = (None, "", "auto")
_REDIS_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES)


def _check_address(address: str) -> None:
    """Refuse a Ray address (or any non-Redis one) with the fix in the message."""
    try:
        scheme = urlsplit(address).scheme.lower()
    except ValueError:
        scheme = ""
    if scheme in _REDIS_SCHEMES:
        return
    shown = mask_url(address)
    if scheme == "ray" or address.strip().lower() == "local":
        reason = "is a Ray address; this byzerllm runs on Redis, not Ray"
    else:
        reason = "is not a Redis URL"
    raise ConfigurationError(
        f"connect_cluster({shown!r}): {reason}. Pass the Redis URL the workers use, e.g. "
        f"byzerllm.connect_cluster({DEFAULT_REDIS_URL!r}), or set BYZERLLM_REDIS_URL and call "
        "byzerllm.connect_cluster() with no address"
    )


def connect_cluster(address: str | None = None, **ignored: Any) -> BrokerSettings:
    """Use the Redis at ``address`` for every client built afterwards without a URL.

    ``address`` is a ``redis://``, ``rediss://``, ``unix://`` or ``redis+sentinel://``
    URL (docs/high-availability.md); ``None``
    or ``"auto"`` reads ``BYZERLLM_REDIS_URL`` (default
    ``redis://127.0.0.1:6379/0``). The original's other arguments
    (``java_home``, ``code_search_path``, ``init_options``, ...) configured
    Ray and are accepted and ignored. Returns the settings in effect (the
    original returned the Java environment it set up).
    """
    if address in _FROM_ENVIRONMENT:
        settings = BrokerSettings.from_env(use_process_default=False)
    else:
        if not isinstance(address, str):
            raise ConfigurationError(
                f"connect_cluster(address={address!r}): the address is a Redis URL string, "
                f"e.g. {DEFAULT_REDIS_URL!r}"
            )
        _check_address(address)
        settings = BrokerSettings.from_env(address, use_process_default=False)
    if settings != process_default():
        log.info("byzerllm clients use Redis at %s (prefix %r)", settings.safe_url, settings.prefix)
    set_process_default(settings)
    return settings


__all__ = ["connect_cluster"]

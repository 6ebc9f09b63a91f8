"""Running the gateway: uvicorn, the master key rule, one or more processes.

The master key comes from ``BYZERLLM_MASTER_KEY`` only: a command-line flag
would show it to everyone who can list processes. Without one, the gateway
has no authentication, so it listens on loopback only: binding to any other
address is refused with the reason, not silently opened to the network.
"""

from __future__ import annotations

import ipaddress
import os

from byzerllm.broker.errors import ConfigurationError
from byzerllm.broker.process_setup import tune_gc
from byzerllm.broker.settings import BrokerSettings
from byzerllm.client.gateway.auth import MASTER_KEY_ENV


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def master_key_from_env() -> str | None:
    key = os.environ.get(MASTER_KEY_ENV, "").strip()
    return key or None


def check_bind(host: str, master_key: str | None) -> None:
    """Refuse to serve a non-loopback address without a master key."""
    if master_key is None and not is_loopback(host):
        raise ConfigurationError(
            f"refusing to listen on {host}: no {MASTER_KEY_ENV} is set, so anyone who can "
            f"reach this address could use every alias. Set {MASTER_KEY_ENV} in the "
            "environment (clients send it as their API key), or listen on 127.0.0.1"
        )


def app_from_env() -> object:
    """The app for ``uvicorn --factory`` and worker processes: settings and the master
    key from the environment, as ``byzerllm serve`` passes them on."""
    from byzerllm.client.gateway.app import create_app

    tune_gc()  # each process of `serve --workers N` builds its app here
    return create_app(BrokerSettings.from_env(), master_key=master_key_from_env())


def serve(
    host: str,
    port: int,
    settings: BrokerSettings,
    *,
    workers: int = 1,
    access_log: bool = True,
    log_level: str = "info",
    request_timeout: float | None = None,
) -> None:
    """Serve until interrupted. ``workers`` > 1 runs that many processes on one port."""
    import uvicorn

    master_key = master_key_from_env()
    check_bind(host, master_key)
    tune_gc()
    common = {
        "host": host,
        "port": port,
        "access_log": access_log,
        "log_level": log_level,
        "lifespan": "on",
        "server_header": False,
    }
    if workers > 1:
        # the processes build their app from the environment: hand the settings on
        os.environ["BYZERLLM_REDIS_URL"] = settings.redis_url
        os.environ["BYZERLLM_PREFIX"] = settings.prefix
        if request_timeout is not None:
            os.environ["BYZERLLM_REQUEST_TIMEOUT"] = str(request_timeout)
        uvicorn.run(
            "byzerllm.client.gateway.server:app_from_env",
            factory=True,
            workers=workers,
            **common,  # type: ignore[arg-type]
        )
        return
    from byzerllm.client.gateway.app import create_app

    timeout: float | str = "default" if request_timeout is None else request_timeout
    app = create_app(settings, master_key=master_key, request_timeout=timeout)
    config = uvicorn.Config(app, **common)  # type: ignore[arg-type]
    uvicorn.Server(config).run()

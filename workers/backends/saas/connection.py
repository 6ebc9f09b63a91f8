"""How an OpenAI-protocol backend's HTTP client reaches the vendor.

The original byzerllm let a deployment name a proxy (``saas.proxies``), the
address its connections leave from (``saas.local_address``) and, in its
SimpleByzerLLM, whether to check the vendor's TLS certificate
(``saas.https_verify``). The same keys configure the httpx client the openai
SDK runs on here. They matter behind corporate egress proxies, on hosts with
several uplinks, and for in-house gateways with a private CA: hence a CA
bundle path is accepted besides ``false``, so that turning checks off is not
the only way to reach such a gateway.

Values are checked when the spec is parsed (at deploy), the CA bundle is
read when the worker starts (it is a path on the worker's host).
"""

from __future__ import annotations

import ipaddress
import json
import ssl
import sys
from typing import Any
from urllib.parse import urlsplit

from byzerllm.broker.errors import BackendLoadError, ConfigurationError
from byzerllm.broker.settings import mask_url

_PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_EXAMPLE = "e.g. saas.proxies=http://127.0.0.1:3128"


def parse_proxies(value: Any) -> dict[str, str | None] | None:
    """``saas.proxies`` as httpx mount patterns: one URL proxies http and https;
    a mapping (or its JSON text), as the original's httpx ``proxies`` took it,
    proxies by pattern (``{"https://": url, "all://*.internal": null}``)."""
    if value in (None, "", {}):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            return {"http://": _proxy_url("all", text), "https://": _proxy_url("all", text)}
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not a proxy URL nor a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"a proxy URL or a mapping of URL patterns to proxy URLs, {_EXAMPLE}")
    proxies: dict[str, str | None] = {}
    for raw_pattern, url in value.items():
        pattern = str(raw_pattern).strip()
        if "://" not in pattern:  # requests' spelling: {"https": url}
            pattern += "://"
        proxies[pattern] = None if url in (None, "") else _proxy_url(pattern, url)
    return proxies or None


def _proxy_url(pattern: str, url: Any) -> str:
    text = str(url).strip()
    parts = urlsplit(text)
    if parts.scheme not in _PROXY_SCHEMES or not parts.hostname:
        raise ValueError(
            f"{pattern}: {mask_url(text)!r} is not a proxy URL ({'/'.join(_PROXY_SCHEMES)}), "
            + _EXAMPLE
        )
    return text


def parse_verify(value: Any) -> bool | str:
    """``saas.https_verify``: true, false, or the path of a PEM CA bundle to trust."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        return text
    raise ValueError("true, false, or the path of a PEM CA bundle")


def parse_local_address(value: Any) -> str | None:
    """``saas.local_address``: an IP address of this host to connect from."""
    if value in (None, ""):
        return None
    text = str(value).strip()
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address, e.g. 0.0.0.0 or 10.0.0.5") from None
    return text


def check_connection(options: Any, where: str) -> None:
    """What the settings cannot do together. httpx (and httpcore below it) open
    proxy connections from an address the OS picks, whatever local_address
    says; the original byzerllm passed both and the address was silently not
    used. Refused here, so that a deployment does not leave from an uplink
    nobody chose."""
    proxied = any(url is not None for url in (options.proxies or {}).values())
    if proxied and options.local_address:
        raise ConfigurationError(
            f"{where}: saas.local_address cannot be combined with saas.proxies: connections "
            "to a proxy leave from the address the OS routes by; drop one of them, or pick "
            "the uplink to the proxy with a route on this host"
        )


def _ssl_verify(value: bool | str) -> bool | ssl.SSLContext:
    if isinstance(value, bool):
        return value
    try:
        return ssl.create_default_context(cafile=value)
    except (OSError, ssl.SSLError) as exc:  # a path on the worker's host, read at start
        raise BackendLoadError(
            f"saas.https_verify: cannot load the CA bundle {value!r} on this host: {exc}"
        ) from None


def _httpx_of(sdk: Any) -> Any:
    """The httpx package the SDK is built on (``httpx``, or ``httpx2`` in newer
    SDKs): its transports must be the SDK's own kind."""
    package = type(sdk.DEFAULT_CONNECTION_LIMITS).__module__.partition(".")[0]
    return sys.modules[package]


def http_client(sdk: Any, options: Any, concurrency: int) -> Any:
    """The SDK's async httpx client: a pooled connection per slot, so a busy
    worker does not reconnect per request, and the deployment's proxy, TLS and
    source-address settings.

    Without ``saas.proxies`` or ``saas.local_address`` the client reads the
    usual proxy environment variables, as any httpx client does; with either,
    the deployment's own settings are the whole story and the environment's
    proxies are not read (httpx's rule once a transport is given).
    """
    httpx = _httpx_of(sdk)
    limits = type(sdk.DEFAULT_CONNECTION_LIMITS)(
        max_connections=max(1000, concurrency),
        max_keepalive_connections=max(100, concurrency),
    )
    verify = _ssl_verify(options.https_verify)
    kwargs: dict[str, Any] = {"limits": limits, "verify": verify}
    proxies: dict[str, str | None] = options.proxies or {}
    if proxies or options.local_address:
        try:
            kwargs["transport"] = httpx.AsyncHTTPTransport(
                verify=verify, limits=limits, local_address=options.local_address
            )
            kwargs["mounts"] = {
                pattern: None
                if url is None
                else httpx.AsyncHTTPTransport(verify=verify, limits=limits, proxy=url)
                for pattern, url in proxies.items()
            }
        except ImportError as exc:  # socks5 proxies need the socksio package
            raise BackendLoadError(
                f"saas.proxies needs a package that is not installed: {exc}; "
                "for socks5 proxies: pip install socksio"
            ) from exc
    aiohttp_client = _aiohttp_client(sdk)
    if aiohttp_client is not None and "transport" not in kwargs:
        return aiohttp_client(**kwargs)
    return sdk.DefaultAsyncHttpxClient(**kwargs)


def _aiohttp_client(sdk: Any) -> Any:
    """The SDK's aiohttp transport (``pip install 'openai[aiohttp]'``), when it has one
    and aiohttp is installed: the same requests, errors and timeouts as its httpx
    transport, for about 0.4 ms less CPU per request (benchmarks/README.md), which a
    busy worker spends on every call. The deployment's own proxies and source address
    keep httpx's transports, whose behaviour check_connection describes."""
    factory = getattr(sdk, "DefaultAioHttpClient", None)
    if factory is None:
        return None
    try:
        import aiohttp  # noqa: F401
    except ImportError:
        return None
    return factory

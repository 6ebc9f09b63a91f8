"""Where to find Redis and how the broker behaves: one place for all of it.

Every process (client, worker, CLI) builds a :class:`BrokerSettings` from
explicit arguments first, then ``BYZERLLM_*`` environment variables, then
defaults, so a multi-host setup is configured by one environment.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit, urlunsplit

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


SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
_SCHEMES = ("redis", "rediss", "unix", *SENTINEL_SCHEMES, *CLUSTER_SCHEMES)
SENTINEL_PORT = 26379
REDIS_PORT = 6379
SENTINEL_FORM = (
    "redis+sentinel://[user:password@]host1:26379[,host2:26379,...]/master_name[/db]"
    "[?sentinel_password=...]"
)
CLUSTER_FORM = "redis+cluster://[user:password@]host1:6379[,host2:6379,...][/][?options]"


def mask_url(url: str) -> str:
    """The URL with any password replaced, safe for logs and error messages: the one
    in the user info, and query parameters named ``*password`` (``sentinel_password``)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:****@{hosts}"
    query = "&".join(
        f"{piece.split('=', 1)[0]}=****"
        if unquote(piece.split("=", 1)[0]).lower().endswith("password")
        else piece
        for piece in parts.query.split("&")
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def _scheme(url: str) -> str:
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` names Redis through Sentinels (``redis+sentinel://``)."""
    return _scheme(url) in SENTINEL_SCHEMES


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return _scheme(url) in CLUSTER_SCHEMES


@dataclass(frozen=True)
class SentinelTarget:
    """A ``redis+sentinel://`` URL taken apart: the Sentinels to ask, the name of the
    master they watch, and how to log in to each.

    The URL's user and password are the master's (and its replicas'); Sentinels
    that want a password of their own get it from ``?sentinel_password=`` (and
    ``?sentinel_username=``). Other query parameters are redis-py's, as in a
    ``redis://`` URL, and apply to the master (TLS options to both).
    """

    sentinels: tuple[tuple[str, int], ...]
    master: str
    master_kwargs: dict[str, Any]  # redis-py's connection options: db, password, ssl, ...
    sentinel_kwargs: dict[str, Any]


@dataclass(frozen=True)
class ClusterTarget:
    """A ``redis+cluster://`` URL taken apart: some of the cluster's nodes (the client
    learns the rest from them), and how to log in to every node.

    The query parameters are redis-py's, as in a ``redis://`` URL; a cluster has
    only database 0.
    """

    nodes: tuple[tuple[str, int], ...]
    node_kwargs: dict[str, Any]  # redis-py's connection options: password, ssl, ...

    @property
    def tls(self) -> bool:
        return bool(self.node_kwargs.get("ssl"))


def _host_address(
    host: str, default_port: int, what: str, bad: Callable[[str], ConfigurationError]
) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port``) of one server of a multi-host URL."""
    try:
        address = urlsplit(f"//{host.strip()}")
        port = address.port or default_port
    except ValueError as exc:
        raise bad(f"{what} address {host!r}: {exc}") from None
    if not address.hostname:
        raise bad(f"{what} address {host!r} has no host")
    return address.hostname, port


def _node_kwargs(
    tls: bool, userinfo: str, db: str, query: list[tuple[str, str]], bad: Callable[[str], Any]
) -> dict[str, Any]:
    """redis-py's connection options of a multi-host URL: those it reads from a plain
    URL of the same user, db and query (where the server is, the URL does not say)."""
    host = "server.invalid"
    plain = urlunsplit(
        (
            "rediss" if tls else "redis",
            f"{userinfo}@{host}" if userinfo else host,
            f"/{db}",
            urlencode(query),
            "",
        )
    )
    try:
        kwargs: dict[str, Any] = dict(parse_url(plain))
    except ValueError as exc:
        raise bad(str(exc)) from None
    for name in ("host", "port", "connection_class"):
        kwargs.pop(name, None)
    if tls:
        kwargs["ssl"] = True
    return kwargs


def _multi_host_url(
    url: str, kind: str, form: str, example: str
) -> tuple[SplitResult, bool, str, list[str], Callable[[str], ConfigurationError]]:
    """A Sentinel or Cluster URL split: its parts, TLS or not, the user info (without
    the ``@``), the hosts, and the error maker that names the URL, the form and an
    example."""

    def bad(why: str) -> ConfigurationError:
        return ConfigurationError(
            f"bad Redis {kind} URL {mask_url(url)!r}: {why}; the form is {form}, e.g. {example}"
        )

    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise bad(str(exc)) from None
    userinfo, at, hostlist = parts.netloc.rpartition("@")
    tls = parts.scheme.lower().startswith("rediss+")
    return parts, tls, userinfo if at else "", hostlist.split(","), bad


def parse_sentinel_url(url: str) -> SentinelTarget:
    """Take a Sentinel URL apart; a ConfigurationError names what is wrong and the form."""
    parts, tls, userinfo, hosts, bad = _multi_host_url(
        url,
        "Sentinel",
        SENTINEL_FORM,
        "redis+sentinel://:password@10.0.0.1:26379,10.0.0.2:26379/mymaster/0",
    )
    sentinels = [_host_address(h, SENTINEL_PORT, "sentinel", bad) for h in hosts]
    path = [unquote(p) for p in parts.path.strip("/").split("/") if p]
    if not path:
        raise bad("no master name (the name in the Sentinels' `sentinel monitor` line)")
    if len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise bad(f"the path must be /master_name or /master_name/db, not {parts.path!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    sentinel_kwargs: dict[str, Any] = {}
    rest = []
    for name, value in query:
        if name in ("sentinel_password", "sentinel_username"):
            if value:
                sentinel_kwargs[name.removeprefix("sentinel_")] = value
        elif name.startswith("sentinel_"):
            raise bad(f"unknown parameter {name!r} (sentinel_password, sentinel_username)")
        else:
            rest.append((name, value))
    db = path[1] if len(path) == 2 else "0"
    master_kwargs = _node_kwargs(tls, userinfo, db, rest, bad)
    if tls:  # TLS to the master and to the Sentinels, with the same certificates
        sentinel_kwargs.update({k: v for k, v in master_kwargs.items() if k.startswith("ssl")})
    return SentinelTarget(tuple(sentinels), path[0], master_kwargs, sentinel_kwargs)


def parse_cluster_url(url: str) -> ClusterTarget:
    """Take a Cluster URL apart; a ConfigurationError names what is wrong and the form."""
    parts, tls, userinfo, hosts, bad = _multi_host_url(
        url, "Cluster", CLUSTER_FORM, "redis+cluster://:password@10.0.0.1:6379,10.0.0.2:6379"
    )
    nodes = [_host_address(h, REDIS_PORT, "node", bad) for h in hosts]
    if parts.path.strip("/") not in ("", "0"):
        raise bad(f"a cluster has only database 0, and the path {parts.path!r} names another")
    query = parse_qsl(parts.query, keep_blank_values=True)
    kwargs = _node_kwargs(tls, userinfo, "0", query, bad)
    kwargs.pop("db", None)
    return ClusterTarget(tuple(nodes), kwargs)


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
        if is_sentinel_url(url):  # several hosts, not one host and port
            parse_sentinel_url(url)
            return url
        if is_cluster_url(url):
            parse_cluster_url(url)
            return url
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

    @property
    def sentinel(self) -> SentinelTarget | None:
        """The Sentinels and master name of a ``redis+sentinel://`` URL; None for others."""
        if not is_sentinel_url(self.redis_url):
            return None
        return parse_sentinel_url(self.redis_url)

    @property
    def cluster(self) -> ClusterTarget | None:
        """The nodes of a ``redis+cluster://`` URL; None for others."""
        if not is_cluster_url(self.redis_url):
            return None
        return parse_cluster_url(self.redis_url)

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

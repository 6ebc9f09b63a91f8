"""Who may call the gateway: the seam where API keys and their limits plug in.

Today there is one credential, the master key from ``BYZERLLM_MASTER_KEY``
(never a command-line flag, never logged). Without it the gateway has no
authentication at all, which is why it then listens on loopback only (see
server.py). Clients send the key as OpenAI's SDKs do:
``Authorization: Bearer <key>``.

Per-key credentials (issue 15: hashed in Redis, aliases and rpm/tpm limits)
come in as another :class:`Authenticator` that returns a :class:`Caller`
naming the key and what it may use; the handlers already ask
:meth:`Caller.check_alias` before each call.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.requests import Request

from byzerllm.client.gateway.errors import _ApiError, unauthorized

MASTER_KEY_ENV = "BYZERLLM_MASTER_KEY"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request. ``aliases`` None: every alias."""

    name: str
    aliases: frozenset[str] | None = None

    def may_use(self, alias: str) -> bool:
        return self.aliases is None or alias in self.aliases

    def check_alias(self, alias: str) -> None:
        if not self.may_use(alias):
            raise _ApiError(
                403,
                f"the API key {self.name!r} may not use the model {alias!r}",
                type_="permission_error",
                param="model",
                code="model_not_allowed",
            )


ANONYMOUS = Caller("anonymous")
MASTER = Caller("master")


def presented_key(request: Request) -> str | None:
    """The key the client sent as ``Authorization: Bearer <key>``, if any."""
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return value.strip() or None


class Authenticator:
    """``await auth(request)``: the request's :class:`Caller`, or a 401."""

    def __init__(self, master_key: str | None) -> None:
        self._master = master_key.encode() if master_key else None

    @property
    def open(self) -> bool:
        """True when no key is required (no master key is set)."""
        return self._master is None

    async def __call__(self, request: Request) -> Caller:
        if self._master is None:
            return ANONYMOUS
        key = presented_key(request)
        if key is None:
            raise unauthorized(
                "no API key: send the gateway's key as 'Authorization: Bearer <key>' "
                "(the api_key of OpenAI's SDKs)"
            )
        if hmac.compare_digest(key.encode(), self._master):
            return MASTER
        raise unauthorized("incorrect API key; use the key this gateway was started with")

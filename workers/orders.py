"""Orders a worker hears on pub/sub: cancels from clients, and control messages.

Clients publish the ids of requests they gave up on to the alias' cancel
channel; the control plane publishes JSON orders (``{"op": "drain",
"below": generation}``) to its control channel. A malformed order is logged
and ignored: whoever can publish must not be able to crash a worker.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from byzerllm.broker.connection import OutageLog, raise_if_cancelling, redis_errors
from byzerllm.broker.deployments import OrderSubscription
from byzerllm.broker.errors import BrokerUnavailableError
from byzerllm.broker.keys import AliasKeys
from byzerllm.broker.settings import BrokerSettings

if TYPE_CHECKING:  # redis is broker/'s business; here it only names types
    import redis.asyncio as aioredis

log = logging.getLogger(__name__)


NO_DRAIN = (False, None)


def drain_order(raw: str, generation: int) -> tuple[bool, float | None]:
    """Whether a control message orders a worker of ``generation`` to drain, and the
    seconds it may take (None: the worker's own drain timeout)."""
    try:
        order = json.loads(raw)
        if not isinstance(order, dict) or order.get("op") != "drain":
            return NO_DRAIN
        if generation >= int(order.get("below", 1 << 62)):
            return NO_DRAIN
        timeout = order.get("timeout")
        return True, None if timeout is None else max(0.0, float(timeout))
    except (ValueError, TypeError):
        log.warning("ignoring malformed control message %r", raw[:200])
        return NO_DRAIN


class Orders:
    def __init__(
        self,
        redis: aioredis.Redis,
        settings: BrokerSettings,
        ak: AliasKeys,
        generation: int,
        *,
        on_cancel: Callable[[str], None],
        on_drain: Callable[[float | None], None],
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._ak = ak
        self._generation = generation
        self._on_cancel = on_cancel
        self._on_drain = on_drain

    async def listen(self) -> None:
        """Follow both channels until cancelled, subscribing again after an outage
        (logged once per outage)."""
        outage = OutageLog(log, "subscribing to the cancel and control channels")
        while True:
            raise_if_cancelling()
            try:
                with redis_errors(self._settings):
                    async with OrderSubscription(self._redis, self._ak) as orders:
                        outage.recovered()
                        await self._receive(orders)
            except BrokerUnavailableError as exc:
                raise_if_cancelling()
                outage.failed(exc)
                await asyncio.sleep(0.5)

    async def _receive(self, orders: OrderSubscription) -> None:
        while True:
            raise_if_cancelling()  # a library may have swallowed our cancel
            order = await orders.next()
            if order is None:
                continue
            kind, data = order
            if kind == "control":
                drain, timeout = drain_order(data, self._generation)
                if drain:
                    log.info("draining on request of the control plane")
                    self._on_drain(timeout)
            else:
                self._on_cancel(data)

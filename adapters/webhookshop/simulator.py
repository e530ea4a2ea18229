"""`place_orders`: a webhook shop that posts signed orders to somsd's intake.

The generic `webhook` channel kind takes canonical orders at
`POST /v1/channels/{channel}/orders`, signed with the channel's secret
(`X-Somsd-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`). This module plays the
shop: it generates orders with `fake_order`, signs each body at the moment it is sent (the
signature window is five minutes, so a body signed long before would be refused), paces them
at `rate` orders per second, and yields what became of each delivery.

Redelivery is a knob because it is the normal case for webhooks, not a fault: senders retry
when an answer is slow or lost, so somsd must acknowledge the same order twice without taking
it twice (`200` with `"duplicate": true`). `redeliver_share` re-sends that share of orders
right after their first delivery, with the same body and a fresh signature, as a shop's retry
queue would.

A delivery that fails is reported, not raised: the shop goes on with the next order, as a real
shop's order flow does not stop for one webhook. `Delivery.error` then carries the reason in
the shared error vocabulary (transient or permanent, see `adapters.errors`).
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import httpx
import msgspec
import trio

from adapters.errors import (
    TransientUpstreamError,
    somsd_error_detail,
    status_error,
    translate_http_error,
)
from adapters.webhookshop.catalogue import DEFAULT_CATALOGUE, CatalogueItem
from adapters.webhookshop.orders import fake_order
from somsd.domain.order import Order
from somsd.signing import SIGNATURE_HEADER, sign

__all__ = ["Delivery", "place_orders"]

_encoder = msgspec.json.Encoder()


class _Accepted(msgspec.Struct, frozen=True):
    order_id: str
    duplicate: bool


_accepted = msgspec.json.Decoder(_Accepted)


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    """One POST of one order and its answer.

    `status_code` is None when no answer came (refused, timed out, dropped); `error` is then,
    or for a non-2xx answer, a one-line reason; `transient` says whether a retry could help.
    """

    order: Order
    redelivery: bool
    status_code: int | None
    order_id: str | None = None
    duplicate: bool | None = None
    error: str | None = None
    transient: bool = False

    @property
    def accepted(self) -> bool:
        return self.order_id is not None


async def place_orders(
    client: httpx.AsyncClient,
    url: str,
    secret: bytes,
    count: int,
    *,
    rate: float | None,
    seed: int,
    catalogue: Sequence[CatalogueItem] = DEFAULT_CATALOGUE,
    stores: Sequence[str] = (),
    redeliver_share: float = 0.0,
    number_prefix: str = "WS-",
    first_number: int = 10001,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[Delivery]:
    """Post `count` generated orders to the intake `url`, yielding each delivery's outcome.

    `rate` is orders per second (None: as fast as answers come); `seed` makes the orders and
    the redelivery choices reproducible; `stores` are the pickup stores click & collect orders
    may name (none: no pickup orders). Order numbers are `number_prefix` + a running number
    from `first_number`; they are the channel's external ids, so two runs into the same data
    directory need different prefixes or first numbers, or the second run is all duplicates.
    A caller that may stop early wraps the generator in `contextlib.aclosing`, so it is closed
    in the caller's task rather than by the garbage collector.
    """
    orders = random.Random(seed)
    # A separate stream for the redelivery choice, so turning the knob does not change the
    # orders themselves.
    redeliveries = random.Random(f"{seed}:redeliver")
    started = trio.current_time()
    for index in range(count):
        if rate is not None and rate > 0:
            # An absolute schedule: a slow answer is caught up on, the rate does not drift.
            await trio.sleep_until(started + index / rate)
        order = fake_order(
            orders,
            number=f"{number_prefix}{first_number + index}",
            placed_at=datetime.fromtimestamp(clock(), UTC).replace(microsecond=0),
            catalogue=catalogue,
            stores=stores,
        )
        body = _encoder.encode(order)
        yield await _deliver(client, url, secret, order, body, redelivery=False, clock=clock)
        if redeliveries.random() < redeliver_share:
            yield await _deliver(client, url, secret, order, body, redelivery=True, clock=clock)


async def _deliver(
    client: httpx.AsyncClient,
    url: str,
    secret: bytes,
    order: Order,
    body: bytes,
    *,
    redelivery: bool,
    clock: Callable[[], float],
) -> Delivery:
    operation = "POST /v1/channels/{channel}/orders"
    headers = {
        SIGNATURE_HEADER: sign(secret, body, int(clock())),
        "Content-Type": "application/json",
    }
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        error = translate_http_error(exc, system="webhookshop", operation=operation)
        return Delivery(
            order=order,
            redelivery=redelivery,
            status_code=None,
            error=error.message,
            transient=isinstance(error, TransientUpstreamError),
        )
    if response.is_success:
        try:
            accepted = _accepted.decode(response.content)
        except msgspec.DecodeError as exc:
            return Delivery(
                order=order,
                redelivery=redelivery,
                status_code=response.status_code,
                error=f"answer is not {{order_id, duplicate}}: {exc}",
            )
        return Delivery(
            order=order,
            redelivery=redelivery,
            status_code=response.status_code,
            order_id=accepted.order_id,
            duplicate=accepted.duplicate,
        )
    reason = somsd_error_detail(response.content)
    error = status_error(response, system="webhookshop", operation=operation, detail=reason)
    return Delivery(
        order=order,
        redelivery=redelivery,
        status_code=response.status_code,
        error=error.message,
        transient=isinstance(error, TransientUpstreamError),
    )

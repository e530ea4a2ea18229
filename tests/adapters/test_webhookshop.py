"""The webhook shop: generated orders are valid, deterministic and signed the way intake checks.

The intake here is a stand-in (the daemon's real route needs the order desk and the store): it
does exactly what the contract says intake does before the order desk — `verify_signature`,
then `decode_order` with the known pickup stores — and remembers external ids to answer
redeliveries with 200 `duplicate: true`.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import UTC, datetime

import httpx
import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.webhookshop import DEFAULT_CATALOGUE, Delivery, fake_order, place_orders
from adapters.webhookshop.people import CITIES
from somsd.domain.errors import InvalidOrder
from somsd.domain.geo import locate_postcode
from somsd.domain.order import decode_order, order_gross, validate_order
from somsd.signing import SIGNATURE_HEADER, SignatureError, verify_signature

from .conftest import Serve

SECRET = b"b2b-webhook-secret"
STORES = ("store-essen", "store-koeln")
PLACED_AT = datetime(2026, 11, 21, 10, tzinfo=UTC)


class FakeIntake:
    """What `POST /v1/channels/{channel}/orders` checks before the order desk; a stand-in."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.refused: list[str] = []
        self._ids: dict[str, str] = {}

    async def intake(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify_signature(request.headers.get(SIGNATURE_HEADER), body, SECRET, now=time.time())
            order = decode_order(body, known_pickup_locations=STORES)
        except (SignatureError, InvalidOrder) as exc:
            self.refused.append(str(exc))
            status = 401 if isinstance(exc, SignatureError) else 422
            return JSONResponse({"error": {"code": "refused", "message": str(exc)}}, status)
        self.bodies.append(body)
        if order.external_id in self._ids:
            return JSONResponse({"order_id": self._ids[order.external_id], "duplicate": True})
        self._ids[order.external_id] = f"ord-{len(self._ids) + 1}"
        return JSONResponse({"order_id": self._ids[order.external_id], "duplicate": False}, 202)

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[Route("/v1/channels/{channel}/orders", self.intake, methods=["POST"])]
        )


def test_fake_order_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same order, so a failing run can be replayed."""
    first = fake_order(random.Random(42), number="1", placed_at=PLACED_AT, stores=STORES)
    again = fake_order(random.Random(42), number="1", placed_at=PLACED_AT, stores=STORES)
    other = fake_order(random.Random(43), number="1", placed_at=PLACED_AT, stores=STORES)
    assert first == again
    assert first != other


def test_fake_orders_validate_and_cover_the_mix() -> None:
    """Every order passes the domain's validation, totals add up exactly, and the mix covers
    all payment methods, pickup at the given stores and multi-line orders."""
    rng = random.Random(7)
    orders = [
        fake_order(rng, number=str(n), placed_at=PLACED_AT, stores=STORES) for n in range(400)
    ]
    for order in orders:
        assert validate_order(order, known_pickup_locations=STORES) == []
        assert order.payment.amount == order_gross(order)
        assert decode_order(msgspec.json.encode(order), known_pickup_locations=STORES) == order
    methods = Counter(order.payment.method for order in orders)
    assert set(methods) == {"creditcard", "paypal", "invoice", "banktransfer", "cod"}
    pickups = [order for order in orders if order.shipping.method == "pickup"]
    assert pickups
    assert {order.shipping.pickup_location for order in pickups} <= set(STORES)
    assert all(order.payment.method != "cod" for order in pickups)
    assert any(len(order.lines) > 1 for order in orders)
    assert {line.sku for order in orders for line in order.lines} <= {
        item.sku for item in DEFAULT_CATALOGUE
    }


def test_every_city_postcode_is_located_for_routing() -> None:
    """Routing by distance needs the customer's place: all shipped postcodes resolve."""
    for postcode, city in CITIES:
        assert locate_postcode("DE", postcode) is not None, city


async def test_placed_orders_pass_the_signature_check_and_redeliveries_are_duplicates(
    serve: Serve,
) -> None:
    """Orders arrive signed and valid; redelivered ones are acknowledged as duplicates."""
    intake = FakeIntake()
    url, _ = await serve(intake.app)
    deliveries: list[Delivery] = []
    async with httpx.AsyncClient(base_url=url) as client:
        with trio.fail_after(5):
            async for delivery in place_orders(
                client,
                "/v1/channels/b2b/orders",
                SECRET,
                30,
                rate=500.0,
                seed=3,
                stores=STORES,
                redeliver_share=0.3,
            ):
                deliveries.append(delivery)
    assert intake.refused == []
    first = [d for d in deliveries if not d.redelivery]
    again = [d for d in deliveries if d.redelivery]
    assert len(first) == 30
    assert again
    assert all(d.status_code == 202 and d.duplicate is False for d in first)
    assert all(d.status_code == 200 and d.duplicate is True for d in again)
    by_number = {d.order.number: d.order_id for d in first}
    assert all(by_number[d.order.number] == d.order_id for d in again)
    assert [d.order.number for d in first] == [f"WS-{10001 + n}" for n in range(30)]


async def test_wrong_secret_is_reported_as_a_permanent_refusal(serve: Serve) -> None:
    """A delivery intake refuses is yielded with its reason, not raised; 401 is permanent."""
    intake = FakeIntake()
    url, _ = await serve(intake.app)
    async with httpx.AsyncClient(base_url=url) as client:
        deliveries = [
            d
            async for d in place_orders(
                client, "/v1/channels/b2b/orders", b"wrong", 2, rate=None, seed=1
            )
        ]
    assert [d.status_code for d in deliveries] == [401, 401]
    assert not any(d.accepted or d.transient for d in deliveries)
    assert "credentials" in (deliveries[0].error or "")
    assert "wrong" not in (deliveries[0].error or "")


async def test_orders_are_paced_at_the_given_rate(autojump_clock: trio.abc.Clock) -> None:
    """At 2 orders/s, five orders take exactly two seconds (the first goes at once)."""
    intake = FakeIntake()
    transport = httpx.ASGITransport(app=intake.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://somsd.test") as client:
        start = trio.current_time()
        sent = [
            trio.current_time() - start
            async for _ in place_orders(
                client, "/v1/channels/b2b/orders", SECRET, 5, rate=2.0, seed=9
            )
        ]
    assert sent == [0.0, 0.5, 1.0, 1.5, 2.0]

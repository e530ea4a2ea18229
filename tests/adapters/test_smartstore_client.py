"""The Smartstore client against the real simulator over loopback (somsd.http on 127.0.0.1:0)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
import trio

from adapters.errors import TransientUpstreamError
from adapters.smartstore import (
    AccessDeniedReason,
    SmartstoreAuthError,
    SmartstoreClient,
    SmartstoreHttpsRequired,
    SmartstoreKnobs,
    SmartstoreNotFound,
    SmartstorePermissionDenied,
    SmartstoreProtocolViolation,
    SmartstoreRejected,
    SmartstoreSimulator,
    smartstore_http_client,
    to_canonical,
)
from adapters.smartstore.simulator import (
    CANCELLED,
    COMPLETE,
    DELIVERED,
    PAY_PAID,
    PROCESSING,
    SHIPPED,
)

from .conftest import Serve

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
Connect = Callable[..., Awaitable[SmartstoreClient]]


@pytest.fixture
async def connect(serve: Serve) -> AsyncIterator[Connect]:
    async with AsyncExitStack() as stack:

        async def start(
            sim: SmartstoreSimulator,
            *,
            public_key: str | None = None,
            secret_key: str | None = None,
            read_backoff: float = 0.01,
        ) -> SmartstoreClient:
            url, _ = await serve(sim)
            http = await stack.enter_async_context(
                smartstore_http_client(
                    url,
                    public_key if public_key is not None else sim.public_key,
                    secret_key if secret_key is not None else sim.secret_key,
                    timeout=httpx.Timeout(3.0),
                )
            )
            return SmartstoreClient(http, system="shop", read_backoff=read_backoff)

        yield start


def small_shop(products: int = 20, **knobs: object) -> SmartstoreSimulator:
    sim = SmartstoreSimulator(knobs=SmartstoreKnobs(**knobs))  # type: ignore[arg-type]
    sim.seed_catalogue(products, combination_share=0.2, seed=3)
    return sim


# -- auth ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (AccessDeniedReason.API_DISABLED, "Web API is disabled"),
        (AccessDeniedReason.INVALID_CREDENTIALS, "secret key is wrong"),
        (AccessDeniedReason.USER_UNKNOWN, "no API user with this public key"),
        (AccessDeniedReason.USER_DISABLED, "disabled"),
        (AccessDeniedReason.INVALID_AUTHORIZATION_HEADER, "Authorization header"),
    ],
)
async def test_auth_failures_name_the_reason_and_the_fix(
    connect: Connect, reason: AccessDeniedReason, words: str
) -> None:
    sim = small_shop()
    public_key, secret_key = sim.public_key, sim.secret_key
    if reason is AccessDeniedReason.API_DISABLED:
        sim.knobs.api_enabled = False
    elif reason is AccessDeniedReason.INVALID_CREDENTIALS:
        secret_key = "s3cr3t-typo"
    elif reason is AccessDeniedReason.USER_UNKNOWN:
        public_key = "nobody"
    elif reason is AccessDeniedReason.USER_DISABLED:
        sim.users[sim.public_key] = (sim.secret_key, 1, False)
    else:
        public_key = ""  # "Basic base64(':secret')": no public key
    client = await connect(sim, public_key=public_key, secret_key=secret_key)
    with pytest.raises(SmartstoreAuthError) as caught:
        await client.orders_since(EPOCH)
    assert caught.value.reason_id == reason
    assert caught.value.access_denied is reason
    assert words in str(caught.value)
    assert caught.value.status_code == 401
    assert secret_key not in str(caught.value)  # never a secret in a message
    # Not retried: one request only.
    assert len(sim.requests) == 1


async def test_auth_flipped_mid_run(connect: Connect) -> None:
    sim = small_shop()
    client = await connect(sim)
    await client.orders_since(EPOCH)
    sim.knobs.auth_failure = AccessDeniedReason.USER_DISABLED
    with pytest.raises(SmartstoreAuthError) as caught:
        await client.orders_since(EPOCH)
    assert caught.value.access_denied is AccessDeniedReason.USER_DISABLED


async def test_plain_http_is_421_when_the_shop_requires_https(connect: Connect) -> None:
    sim = small_shop(require_https=True)
    client = await connect(sim)
    with pytest.raises(SmartstoreHttpsRequired) as caught:
        await client.probe()
    assert caught.value.status_code == 421
    assert "https" in str(caught.value)


async def test_probe_reports_headers_and_skew(connect: Connect) -> None:
    sim = small_shop(clock_skew=120.0, max_top=50)
    client = await connect(sim)
    probe = await client.probe()
    assert probe.max_top == 50
    assert probe.app_version == "6.4.0.0"
    assert client.supports_carrier
    assert probe.customer_id == "1"
    assert not probe.https
    assert probe.clock_skew is not None
    assert timedelta(seconds=110) < probe.clock_skew < timedelta(seconds=130)


# -- paging --------------------------------------------------------------------------------------


async def test_orders_page_by_keyset_across_more_than_max_top(connect: Connect) -> None:
    sim = small_shop(max_top=7)
    placed = {sim.place_order().id for _ in range(30)}
    client = await connect(sim)
    seen: list[int] = []
    after: tuple[datetime, int] | None = None
    for _ in range(20):
        page = await client.orders_since(EPOCH, after=after)
        assert len(page.orders) <= 7
        seen += [order.id for order in page.orders]
        if not page.has_more:
            break
        last = page.orders[-1]
        after = (last.updated_on_utc, last.id)
    assert sorted(seen) == sorted(placed)
    assert len(seen) == len(set(seen))
    assert client.max_top == 7
    first = sim.orders[min(placed)]
    order = await client.order(first.id)
    assert order.order_items
    assert order.order_items[0].product is not None
    assert order.billing_address is not None
    assert order.billing_address.country is not None


async def test_updated_orders_come_again_after_the_watermark(connect: Connect) -> None:
    sim = small_shop()
    orders = [sim.place_order() for _ in range(5)]
    client = await connect(sim)
    page = await client.orders_since(EPOCH)
    watermark = max(order.updated_on_utc for order in page.orders)
    sim.cancel_in_shop(orders[1].id)
    again = await client.orders_since(watermark + timedelta(microseconds=1))
    assert [order.id for order in again.orders] == [orders[1].id]
    assert again.orders[0].order_status_id == CANCELLED


async def test_top_above_max_top_is_refused_and_the_client_recovers(connect: Connect) -> None:
    sim = small_shop()
    client = await connect(sim)
    response = await client._http.get("Products", params={"$top": "500"})
    assert response.status_code == 400
    assert "limit of '120'" in response.json()["error"]["message"]
    client.max_top = 500  # a client that has not seen the header yet
    page = await client.products(top=500)
    assert len(page.products) == 20
    assert [r.status for r in sim.requests] == [400, 400, 200]
    assert client.max_top == 120  # learnt from the refusal's headers


async def test_products_keyset_walks_the_whole_catalogue(connect: Connect) -> None:
    sim = SmartstoreSimulator()
    sim.seed_catalogue(1000, combination_share=0.1, seed=1)
    client = await connect(sim)
    ids: list[int] = []
    after = 0
    for _ in range(50):
        page = await client.products(after_id=after)
        ids += [product.id for product in page.products]
        after = page.last_id
        if not page.has_more:
            break
    assert ids == sorted(sim.products)
    combinations: list[int] = []
    after = 0
    for _ in range(50):
        cpage = await client.combinations(after_id=after)
        combinations += [c.id for c in cpage.combinations]
        after = cpage.last_id
        if not cpage.has_more:
            break
    assert combinations == sorted(sim.combinations)
    sku = next(iter(sim.seeded.truth)) if sim.seeded else ""
    found = await client.products_by_sku(sku) or []
    assert [p.sku for p in found] in ([sku], [])


async def test_server_paging_without_top_emits_next_link(connect: Connect) -> None:
    sim = small_shop(products=30, max_top=10)
    client = await connect(sim)
    http = client._http
    response = await http.get("Products", params={"$select": "Id"})
    body = response.json()
    assert len(body["value"]) == 10
    assert "$skip=10" in httpx.URL(body["@odata.nextLink"]).query.decode().replace("%24", "$")


# -- failures ------------------------------------------------------------------------------------


async def test_5xx_reads_are_retried_and_retry_after_honoured(connect: Connect) -> None:
    sim = small_shop(retry_after=0.2)
    sim.knobs.fail_next.extend([503, 502])
    client = await connect(sim)
    started = trio.current_time()
    page = await client.orders_since(EPOCH)
    assert page.orders == ()
    assert trio.current_time() - started >= 0.4  # waited Retry-After twice
    assert [r.status for r in sim.requests] == [503, 502, 200]


async def test_reads_give_up_after_three_tries(connect: Connect) -> None:
    sim = small_shop()
    sim.knobs.fail_next.extend([500, 500, 500, 500])
    client = await connect(sim)
    seen: list[tuple[str, int | None]] = []
    client._observe = lambda operation, status, seconds: seen.append((operation, status))
    with pytest.raises(TransientUpstreamError):
        await client.orders_since(EPOCH)
    assert len(sim.requests) == 3
    assert seen == [("GET Orders", 500)] * 3


async def test_actions_are_not_retried_inside_the_client(connect: Connect) -> None:
    sim = small_shop()
    order = sim.place_order(paid=False)
    sim.knobs.fail_next.append(500)
    client = await connect(sim)
    with pytest.raises(TransientUpstreamError):
        await client.payment_paid(order.id)
    assert len(sim.requests) == 1
    assert sim.orders[order.id].payment_status_id != PAY_PAID


async def test_not_found_is_typed(connect: Connect) -> None:
    client = await connect(small_shop())
    with pytest.raises(SmartstoreNotFound) as caught:
        await client.order(999)
    assert "Cannot find Order entity with identifier 999" in str(caught.value)


async def test_absurd_answers_are_a_protocol_violation(connect: Connect) -> None:
    """An order with more than 1000 items is not a shop's; it is refused, not stored."""
    sim = small_shop()
    order = sim.place_order()
    sim.order_items[order.id] = sim.order_items[order.id] * 1001
    client = await connect(sim)
    with pytest.raises(SmartstoreProtocolViolation) as caught:
        await client.order(order.id)
    assert "not the Smartstore Web API's" in str(caught.value)


# -- actions -------------------------------------------------------------------------------------


async def test_payment_paid_then_noop_is_visible_in_the_answer(connect: Connect) -> None:
    sim = small_shop()
    order = sim.place_order(paid=False, payment_method="Payments.Prepayment")
    client = await connect(sim)
    paid = await client.payment_paid(order.id)
    assert paid.payment_status_id == PAY_PAID
    assert paid.order_status_id == PROCESSING
    assert paid.updated_on_utc > order.updated_on_utc
    again = await client.payment_paid(order.id)  # not allowed: 200, unchanged
    assert again.updated_on_utc == paid.updated_on_utc
    canceled = await client.cancel(order.id)
    assert canceled.order_status_id == CANCELLED
    unchanged = await client.complete_order(order.id)
    assert unchanged.order_status_id == CANCELLED


async def test_ship_and_deliver_auto_completes_a_paid_order(connect: Connect) -> None:
    sim = small_shop()
    order = sim.place_order(paid=True, payment_method="Payments.PayPalStandard")
    client = await connect(sim)
    shipment = await client.add_shipment(order.id, "00340434123", "https://t/1", "DHL")
    assert shipment is not None
    assert shipment.shipped_date_utc is not None
    assert sim.shipment_carriers[shipment.id] == "DHL"
    assert (await client.order(order.id)).shipping_status_id == SHIPPED
    assert await client.add_shipment(order.id, "x", None, None) is None  # nothing left
    with pytest.raises(SmartstoreRejected) as caught:
        await client.ship(shipment.id)
    assert caught.value.status_code == 422
    delivered = await client.deliver(shipment.id)
    assert delivered.delivery_date_utc is not None
    final = await client.order(order.id, expand="")
    assert (final.shipping_status_id, final.order_status_id) == (DELIVERED, COMPLETE)
    notes = await client.order_notes(order.id)
    assert any("delivered" in note.note for note in notes)


async def test_lost_add_shipment_answer_then_a_look_shows_exactly_one(connect: Connect) -> None:
    sim = small_shop()
    order = sim.place_order()
    sim.knobs.lose_next = 1
    client = await connect(sim)
    with pytest.raises(TransientUpstreamError):
        await client.add_shipment(order.id, "0034", None, "DHL")
    shipments = await client.shipments(order.id)
    assert [s.tracking_number for s in shipments] == ["0034"]
    assert len(sim.shipments) == 1


async def test_order_note_is_created(connect: Connect) -> None:
    sim = small_shop()
    order = sim.place_order()
    client = await connect(sim)
    note = await client.add_order_note(order.id, "somsd: routed to wh-dortmund")
    assert note.id > 0
    assert note.order_id == order.id
    assert sim.requests[-1].status == 201
    assert [n.note for n in await client.order_notes(order.id)] == [note.note]


# -- stock -----------------------------------------------------------------------------------------


async def test_patch_stock_with_and_without_prefer(connect: Connect) -> None:
    sim = SmartstoreSimulator()
    product = sim.add_product("MUG-1", stock=5, low_stock_activity=2)
    client = await connect(sim)
    assert (
        await client.patch_product(product.id, {"StockQuantity": 7}, return_representation=False)
        is None
    )
    assert sim.requests[-1].status == 204
    assert sim.products[product.id].stock_quantity == 7
    # ProductHook: at MinStockQuantity the shop unpublishes by itself, and shows again above.
    hidden = await client.patch_product(product.id, {"StockQuantity": 0})
    assert hidden is not None
    assert (hidden.stock_quantity, hidden.published) == (0, False)
    shown = await client.patch_product(product.id, {"StockQuantity": 3})
    assert shown is not None
    assert shown.published
    with pytest.raises(SmartstoreRejected):
        await client.patch_product(product.id, {"NoSuchField": 1})


async def test_patch_combination(connect: Connect) -> None:
    sim = SmartstoreSimulator()
    parent = sim.add_product("TEE", manage_inventory=2, stock=0)
    combination = sim.add_combination(parent.id, "TEE-M", stock=2)
    client = await connect(sim)
    updated = await client.patch_combination(combination.id, {"StockQuantity": 9})
    assert updated is not None
    assert updated.stock_quantity == 9
    assert sim.stock_of("TEE-M") == 9


async def test_polled_orders_map_to_valid_canonical_orders(connect: Connect) -> None:
    sim = small_shop(products=50)
    for _ in range(40):
        sim.place_order()
    client = await connect(sim)
    page = await client.orders_since(EPOCH, top=40)
    assert len(page.orders) == 40
    for order in page.orders:
        mapped = to_canonical(order, channel="shop", default_pickup_location="store-koeln")
        assert mapped.order is not None, mapped.unrepresentable
        assert mapped.holds == (), mapped.hold_reasons
        assert mapped.order.payment.amount == order.order_total
        assert sum(mapped.tax_by_rate.values(), Decimal(0)) == order.order_tax


async def test_orders_updated_while_paging_move_to_the_end_and_none_is_lost(
    connect: Connect,
) -> None:
    sim = small_shop(max_top=10)
    placed = [sim.place_order(paid=False, payment_method="Payments.Invoice") for _ in range(35)]
    client = await connect(sim)
    seen: list[int] = []
    after: tuple[datetime, int] | None = None
    for round_ in range(20):
        page = await client.orders_since(EPOCH, after=after)
        seen += [order.id for order in page.orders]
        if round_ == 1:  # the merchant pays an order already read and one not yet read
            sim.mark_paid_in_shop(placed[0].id)
            sim.mark_paid_in_shop(placed[30].id)
        if not page.has_more:
            break
        last = page.orders[-1]
        after = (last.updated_on_utc, last.id)
    assert set(seen) == {order.id for order in placed}
    assert seen.count(placed[0].id) == 2  # read again with its new state
    assert seen.count(placed[30].id) == 1  # moved behind the cursor, read once, new state
    assert seen[-2:] == [placed[0].id, placed[30].id]


async def test_slow_shop_read_times_out_as_transient(serve: Serve) -> None:
    sim = small_shop(latency=0.5)
    url, _ = await serve(sim)
    async with smartstore_http_client(
        url, sim.public_key, sim.secret_key, timeout=httpx.Timeout(0.1)
    ) as http:
        client = SmartstoreClient(http, system="shop", read_attempts=2, read_backoff=0.01)
        with pytest.raises(TransientUpstreamError) as caught:
            await client.orders_since(EPOCH)
    assert "timed out" in str(caught.value)


async def test_lost_patch_answer_is_applied_and_repeating_it_is_harmless(
    connect: Connect,
) -> None:
    sim = SmartstoreSimulator()
    product = sim.add_product("MUG-1", stock=5)
    sim.knobs.lose_next = 1
    client = await connect(sim)
    with pytest.raises(TransientUpstreamError):
        await client.patch_product(product.id, {"StockQuantity": 11})
    assert sim.products[product.id].stock_quantity == 11  # applied before the drop
    again = await client.patch_product(product.id, {"StockQuantity": 11})
    assert again is not None
    assert again.stock_quantity == 11


async def test_missing_permission_is_a_403_naming_it(connect: Connect) -> None:
    sim = small_shop()
    product = next(iter(sim.products.values()))
    sim.knobs.denied_permissions = {"catalog.product.update"}
    client = await connect(sim)
    await client.products()  # reading is allowed
    with pytest.raises(SmartstorePermissionDenied) as caught:
        await client.patch_product(product.id, {"StockQuantity": 1})
    assert "catalog.product.update" in str(caught.value)
    assert caught.value.status_code == 403


async def test_a_5x_shop_refuses_the_carrier_parameter(connect: Connect) -> None:
    sim = small_shop(app_version="5.1.0.0")
    order = sim.place_order()
    client = await connect(sim)
    await client.probe()
    assert not client.supports_carrier
    with pytest.raises(SmartstoreRejected):
        await client.add_shipment(order.id, "0034", None, "DHL")
    shipment = await client.add_shipment(order.id, "0034", None, None)
    assert shipment is not None
    assert len(sim.shipments) == 1


async def test_bad_shop_data_over_the_wire_holds_or_is_unrepresentable(connect: Connect) -> None:
    sim = small_shop()
    sku = next(sku for sku in (sim.seeded.truth if sim.seeded else {}) if sim.product_by_sku(sku))
    zero = sim.place_order([(sku, 1), (sku, 1)], item_overrides=[{}, {"quantity": 0}])
    foreign = sim.place_order([(sku, 1)], country="FR")  # the shop knows no such country row
    off = sim.place_order([(sku, 1)], order_overrides={"order_total": Decimal("1.00")})
    empty = sim.place_order([])
    client = await connect(sim)
    page = await client.orders_since(EPOCH)
    mapped = {order.id: to_canonical(order, channel="shop") for order in page.orders}
    # The left-out line was part of the shop's total, so the total is off as well.
    assert [h.code for h in mapped[zero.id].holds] == ["zero_quantity", "totals_mismatch"]
    assert {h.code for h in mapped[foreign.id].holds} == {"unknown_country"}
    assert [h.code for h in mapped[off.id].holds] == ["totals_mismatch"]
    assert mapped[empty.id].order is None
    assert mapped[empty.id].unrepresentable == "the order has no items"


async def test_an_unreadable_order_row_is_reported_and_the_page_goes_on(connect: Connect) -> None:
    sim = small_shop()
    orders = [sim.place_order() for _ in range(3)]
    sim.order_items[orders[1].id] = sim.order_items[orders[1].id] * 1001  # absurd
    client = await connect(sim)
    page = await client.orders_since(EPOCH)
    assert [order.id for order in page.orders] == [orders[0].id, orders[2].id]
    assert [row.id for row in page.rejected] == [orders[1].id]
    assert page.rejected[0].updated_on_utc == orders[1].updated_on_utc
    assert "not a readable Smartstore order" in page.rejected[0].reason
    assert page.last_key == (orders[2].updated_on_utc, orders[2].id)

"""The Smartstore simulator's own rules: seeding, the query language, stock, the shopper."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import trio

from adapters.smartstore import (
    SmartstoreClient,
    SmartstoreKnobs,
    SmartstoreSimulator,
    smartstore_http_client,
    write_credentials,
)
from adapters.smartstore.simulator import CANCELLED, parse_filter

from .conftest import Serve

EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


async def raw(serve: Serve, sim: SmartstoreSimulator) -> httpx.AsyncClient:
    url, _ = await serve(sim)
    return smartstore_http_client(url, sim.public_key, sim.secret_key)


def test_seeded_drift_is_exact_and_disjoint() -> None:
    sim = SmartstoreSimulator()
    seeded = sim.seed_catalogue(
        2000,
        combination_share=0.1,
        wrongly_unpublished=40,
        wrongly_shown=15,
        stock_drift=25,
        unknown_in_shop=5,
        missing_in_shop=3,
        seed=7,
    )
    sets = [
        seeded.wrongly_unpublished,
        seeded.wrongly_shown,
        set(seeded.stock_drift),
        seeded.unknown_in_shop,
        seeded.missing_in_shop,
    ]
    assert [len(s) for s in sets] == [40, 15, 25, 5, 3]
    assert sum(len(s) for s in sets) == len(set().union(*sets))
    assert seeded.parent_skus
    assert seeded.combination_skus
    # Everything not listed agrees with the truth: stock equal, shown iff in stock.
    for sku, stock in seeded.truth.items():
        if sku in seeded.missing_in_shop:
            assert sim.stock_of(sku) is None
            continue
        shop_stock = sim.stock_of(sku)
        if sku in seeded.stock_drift:
            assert (shop_stock, stock) == seeded.stock_drift[sku]
        else:
            assert shop_stock == stock, sku
        product = sim.product_by_sku(sku)
        if product is None:  # a combination
            continue
        if sku in seeded.wrongly_unpublished:
            assert stock > 0
            assert not product.published
        elif sku in seeded.wrongly_shown:
            assert stock == 0
            assert product.published
        else:
            assert product.published == (stock > 0), sku
    for parent in seeded.parent_skus:
        product = sim.product_by_sku(parent)
        assert product is not None
        assert product.published
    for sku in seeded.unknown_in_shop:
        assert sku not in seeded.truth
        assert sim.product_by_sku(sku) is not None


def test_filter_grammar_covers_the_keyset_filter() -> None:
    tree = parse_filter(
        "UpdatedOnUtc ge 2024-05-01T00:00:00Z and ((UpdatedOnUtc gt 2024-05-01T10:00:00.5Z) or "
        "(UpdatedOnUtc eq 2024-05-01T10:00:00.5Z and Id gt 7))"
    )
    assert tree[0] == "and"
    assert parse_filter("Sku eq 'O''Brien'") == ("cmp", "Sku", "eq", "O'Brien")
    assert parse_filter("not (Published eq true)")[0] == "not"


async def test_query_options_and_errors_over_http(serve: Serve) -> None:
    sim = SmartstoreSimulator()
    sim.seed_catalogue(50, combination_share=0.2, seed=2)
    order = sim.place_order(lines=[(next(iter(sim.seeded.truth)) if sim.seeded else "", 1)])
    async with await raw(serve, sim) as http:
        selected = (await http.get("Products", params={"$select": "Id,Sku", "$top": "3"})).json()
        assert [set(row) for row in selected["value"]] == [{"Id", "Sku"}] * 3
        ordered = (
            await http.get("Products", params={"$orderby": "Id desc", "$top": "2", "$skip": "1"})
        ).json()["value"]
        assert [row["Id"] for row in ordered] == [49, 48]
        nested = (
            await http.get(
                f"Orders({order.id})",
                params={"$expand": "OrderItems($expand=Product($select=Name)),BillingAddress"},
            )
        ).json()
        assert set(nested["OrderItems"][0]["Product"]) == {"Name"}
        assert "Country" not in nested["BillingAddress"]
        assert "OrderItems" not in (await http.get(f"Orders({order.id})")).json()
        unknown = await http.get("Products", params={"$filter": "Colour eq 'red'"})
        assert unknown.status_code == 400
        assert "Could not find a property named 'Colour'" in unknown.json()["error"]["message"]
        missing = await http.get("Orders(999)")
        assert missing.status_code == 404
        assert missing.json() == {
            "error": {"code": "404", "message": "Cannot find Order entity with identifier 999."}
        }
        assert missing.headers["Smartstore-Api-MaxTop"] == "120"
        info = (await http.get(f"Orders/GetShipmentInfo(id={order.id})")).json()
        assert info == {
            "HasItemsToDispatch": False,
            "HasItemsToDeliver": False,
            "CanAddItemsToShipment": True,
        }
        unauthenticated = await http.get("Orders", auth=httpx.BasicAuth("x", "y"))
        assert unauthenticated.headers["Smartstore-Api-AuthResultDesc"] == "UserUnknown"
        assert unauthenticated.headers["WWW-Authenticate"].startswith("Basic realm=")


def test_orders_move_stock_and_cancel_restores_it() -> None:
    sim = SmartstoreSimulator()
    product = sim.add_product("MUG-1", stock=3, low_stock_activity=2)
    order = sim.place_order(lines=[("MUG-1", 3)])
    assert sim.products[product.id].stock_quantity == 0
    assert not sim.products[product.id].published  # LowStockActivity Unpublish
    sim.cancel_in_shop(order.id)
    assert sim.orders[order.id].order_status_id == CANCELLED
    assert sim.products[product.id].stock_quantity == 3
    assert sim.products[product.id].published


def test_merchant_actions_stamp_updated_on() -> None:
    sim = SmartstoreSimulator()
    sim.add_product("MUG-1")
    order = sim.place_order(lines=[("MUG-1", 1)], paid=False)
    paid = sim.mark_paid_in_shop(order.id)
    assert paid.updated_on_utc > order.updated_on_utc
    assert paid.payment_status_id == 30


async def test_shopper_places_orders_at_its_rate(autojump_clock: trio.testing.MockClock) -> None:
    sim = SmartstoreSimulator()
    sim.seed_catalogue(30, seed=1)
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run_shopper, 10, 25)
    assert len(sim.orders) == 25
    assert 2.4 <= trio.current_time() - started <= 2.6
    methods = {order.payment_method_system_name for order in sim.orders.values()}
    assert len(methods) >= 3


def test_credentials_file_for_the_demo(tmp_path: Path) -> None:
    sim = SmartstoreSimulator(public_key="pk-1", secret_key="sk-1")
    public, secret = write_credentials(tmp_path / "creds", sim)
    assert public.read_text().strip() == "pk-1"
    assert secret.read_text().strip() == "sk-1"
    assert secret.stat().st_mode & 0o077 == 0


@pytest.mark.slow
async def test_100k_products_page_quickly(serve: Serve) -> None:
    sim = SmartstoreSimulator(knobs=SmartstoreKnobs(max_top=500))
    started = time.perf_counter()
    sim.seed_catalogue(100_000, combination_share=0.05, seed=5)
    seeding = time.perf_counter() - started
    url, _ = await serve(sim)
    async with smartstore_http_client(url, sim.public_key, sim.secret_key) as http:
        client = SmartstoreClient(http, system="shop")
        started = time.perf_counter()
        count, after = 0, 0
        for _ in range(1000):
            page = await client.products(after_id=after)
            count += len(page.products)
            after = page.last_id
            if not page.has_more:
                break
        paging = time.perf_counter() - started
    assert count == len(sim.products)
    print(f"seed {seeding:.1f}s, page {count} products {paging:.1f}s (sim {sim.busy_seconds:.1f}s)")
    assert 0 < sim.busy_seconds < paging
    assert paging < 60


@pytest.mark.slow
async def test_20k_orders_poll_quickly(serve: Serve) -> None:
    sim = SmartstoreSimulator()
    sim.seed_catalogue(500, seed=5)
    for _ in range(20_000):
        sim.place_order()
    url, _ = await serve(sim)
    async with smartstore_http_client(url, sim.public_key, sim.secret_key) as http:
        client = SmartstoreClient(http, system="shop")
        started = time.perf_counter()
        count = 0
        after = None
        for _ in range(1000):
            page = await client.orders_since(EPOCH, after=after)
            count += len(page.orders)
            if not page.has_more:
                break
            after = (page.orders[-1].updated_on_utc, page.orders[-1].id)
        elapsed = time.perf_counter() - started
    assert count == 20_000
    print(f"polled {count} orders in {elapsed:.1f}s ({count / elapsed:.0f}/s)")


def test_seeded_hiding_follows_the_sold_out_action() -> None:
    sim = SmartstoreSimulator()
    seeded = sim.seed_catalogue(300, wrongly_unpublished=5, sold_out_action="hide", seed=9)
    for sku, stock in seeded.truth.items():
        product = sim.product_by_sku(sku)
        if product is None:
            continue
        assert product.published
        hidden = product.visibility == "Hidden"
        assert hidden == (stock == 0 or sku in seeded.wrongly_unpublished), sku

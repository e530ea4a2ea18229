"""End to end through a real `somsd run` between the Smartstore simulator (the shop) and the
SelectLine simulator (the ERP, its stock and its warehouse), both over loopback, with
SKU = GTIN on both sides (the shop's SKU field holds the EAN, the ERP's article numbers are
its own):

ERP stock -> ATP in somsd -> shop stock, a sold-out article unpublished and back when
restocked; a shop order -> an F for the ERP's article numbers -> a delivery note the ERP's
warehouse ships -> the shop's shipment with the tracking number -> the invoice R -> paid in the
ERP by the bookkeeper -> paid in somsd and `PaymentPaid` in the shop.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.selectline.simulator import SelectLineKnobs, SelectLineSimulator
from adapters.smartstore import SmartstoreSimulator, write_credentials
from adapters.smartstore.simulator import PAY_PAID
from tests.adapters.conftest import Serve, wait_until
from tests.erp.helpers import BUDGET, SELECTLINE_LOCATION, erp_section, eventually, serve_erp
from tests.harness import running_daemon, write_daemon_config

pytestmark = pytest.mark.slow

MUG = "4006381333931"  # GTIN of ERP article 100001
CUP = "4006381333948"  # GTIN of ERP article 100002
UNPUBLISH = 2  # Smartstore LowStockActivity: unpublish at or below MinStockQuantity


async def world_config(
    tmp_path: Path, serve: Serve, erp: SelectLineSimulator, shop: SmartstoreSimulator
) -> Path:
    erp_url = await serve_erp(tmp_path, serve, erp)
    shop_url, _ = await serve(shop)
    _, secret = write_credentials(tmp_path / "creds", shop)
    channel = f"""
[[channel]]
name = "shop"
kind = "smartstore"
url = "{shop_url}"
public_key = "{shop.public_key}"
secret_key_file = "{secret}"
poll_interval = "100ms"
poll_overlap = "2s"
sync_stock = true
locations = ["wh"]
"""
    return write_daemon_config(
        tmp_path, channel + SELECTLINE_LOCATION + erp_section(erp_url, 'sku = "gtin"')
    )


def erp_world() -> SelectLineSimulator:
    erp = SelectLineSimulator(knobs=SelectLineKnobs())
    erp.add_warehouse("200")
    erp.add_warehouse("400")
    erp.add_article("100001", gtin=MUG, name="Tasse", stock={"200": 5, "400": 2})
    erp.add_article("100002", gtin=CUP, name="Becher", stock={"200": 3})
    return erp


def shop_world() -> SmartstoreSimulator:
    shop = SmartstoreSimulator()
    for gtin, price in ((MUG, Decimal("12.50")), (CUP, Decimal("7.99"))):
        # Stock the shop believes before somsd tells it; the ERP is the truth.
        shop.add_product(
            gtin, gtin=gtin, stock=99, price=price, low_stock_activity=UNPUBLISH, min_stock=0
        )
    return shop


def published(shop: SmartstoreSimulator, sku: str) -> bool:
    product = shop.product_by_sku(sku)
    assert product is not None
    return product.published


async def test_erp_stock_orders_shipments_and_payments_reach_the_shop(
    tmp_path: Path, serve: Serve
) -> None:
    erp, shop = erp_world(), shop_world()
    config = await world_config(tmp_path, serve, erp, shop)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        # ERP stock (over both warehouses) is the shop's stock, keyed by GTIN.
        await wait_until(lambda: shop.stock_of(MUG) == 7 and shop.stock_of(CUP) == 3, budget=BUDGET)
        view = (await admin.get(f"/v1/inventory/{MUG}")).json()
        assert view["locations"]["wh"]["on_hand"] == 7

        # Sold out in the ERP: the shop's stock goes to 0 and the article disappears...
        erp.set_stock("100002", "200", 0)
        await wait_until(lambda: shop.stock_of(CUP) == 0, budget=BUDGET)
        assert not published(shop, CUP)
        # ...and comes back when goods arrive.
        erp.set_stock("100002", "400", 4)
        await wait_until(lambda: shop.stock_of(CUP) == 4, budget=BUDGET)
        assert published(shop, CUP)

        # A shop order on invoice: the F carries the ERP's article number for the GTIN.
        order = shop.place_order(
            [(MUG, 2)], payment_method="Payments.Invoice", paid=False, shipping="standard"
        )
        number = order.order_number
        await wait_until(
            lambda: [len(d.positions) for d in erp.documents_of("F", number)] == [2], budget=BUDGET
        )
        (sales_order,) = erp.documents_of("F", number)
        assert [(p.kind, p.article, p.quantity) for p in sales_order.positions] == [
            ("A", "100001", Decimal(2)),
            ("E", "VERSAND", Decimal(1)),
        ]
        assert sales_order.totals()[0] == order.order_total

        # The ERP's warehouse gets the delivery note and ships it.
        def labelled_note() -> Any:
            notes = [
                d
                for d in erp.documents_of("L", number)
                if d.partner and "/" in (d.partner.BusinessPartnerReferenceNumber or "")
            ]
            return notes[0] if notes else None

        await wait_until(lambda: labelled_note() is not None, budget=BUDGET)
        note = labelled_note()
        erp.ship_delivery(note.key, "00340434161234567890", carrier="DHL")
        await wait_until(lambda: bool(shop.shipments_of(order.id)), budget=BUDGET)
        (shipment,) = shop.shipments_of(order.id)
        assert shipment.tracking_number == "00340434161234567890"

        # The invoice follows from that note; the bookkeeper books the transfer in the ERP.
        await wait_until(lambda: len(erp.documents_of("R", number)) == 1, budget=BUDGET)
        (invoice,) = erp.documents_of("R", number)
        assert invoice.predecessor == note.key
        gross = invoice.totals()[0]
        assert gross == order.order_total
        assert shop.orders[order.id].payment_status_id != PAY_PAID
        erp.pay(invoice.key, gross)
        await wait_until(lambda: shop.orders[order.id].payment_status_id == PAY_PAID, budget=BUDGET)

        async def paid_in_somsd() -> Decimal | None:
            page = (await admin.get("/v1/orders", params={"q": number})).json()
            for summary in page["orders"]:
                detail = (await admin.get(f"/v1/orders/{summary['order_id']}")).json()
                if Decimal(detail["paid"]) > 0:
                    return Decimal(detail["paid"])
            return None

        assert await eventually(daemon, "paid in somsd", paid_in_somsd) == gross
        assert len(erp.documents_of("L", number)) == 1
        assert erp.logins == 1

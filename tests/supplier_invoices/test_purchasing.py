"""Purchase orders (`B`) and goods receipts (`S`, Wareneingang) read from SelectLine for the
3-way match: the simulator's rules for them, then a real `somsd run` reading them every 200 ms
(paged, only the last `purchasing_days`), deciding invoices on them exactly as on the CSV
import's lines, and writing nothing when it reads the same documents again."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import msgspec
import pytest
import trio

from adapters.selectline.client import SelectLineClient
from adapters.selectline.errors import SelectLineRejected
from adapters.selectline.wire import (
    ArticlePositionItem,
    DocumentCreateModel,
    StoreInformationUpdate,
    SuccessorsDocumentData,
)
from somsd.supplier_invoices.model import SupplierInvoice
from tests.adapters.conftest import Serve, serve
from tests.erp.helpers import selectline_erp
from tests.harness import running_daemon
from tests.supplier_invoices.corpus import BUERO, ITEMS, NORDLICHT, Supplier, make_invoice, render
from tests.supplier_invoices.daemon_setup import inbox_config, wait_status, write_master_data
from tests.supplier_invoices.test_daemon import FINAL
from tests.supplier_invoices.test_erp import e_header, sim_client, supplier_sim

__all__ = ["serve"]


async def _purchase_order(
    client: SelectLineClient, supplier: Supplier, layout: str, *, dated: date | None = None
) -> str:
    """A `B` of `supplier` with the corpus's lines for `layout`; its key."""
    header = msgspec.structs.replace(
        e_header(supplier.record.number, "", "B"),
        PriceKindFlag="N",
        Date=dated.isoformat() if dated else None,
    )
    key = (await client.create_document(header)).DocumentKey
    for article, name, quantity, price, rate in ITEMS[layout]:
        await client.add_article(
            key,
            ArticlePositionItem(
                ArticleNumber=article,
                CalculatedQuantityValue=Decimal(quantity),
                UnitPrice=Decimal(price),
                TaxRate=Decimal(rate),
                Name=name,
            ),
        )
    return key


async def _receive(client: SelectLineClient, order: str, share: Decimal = Decimal(1)) -> str:
    """An `S` made from the `B` `order`, `share` of each position received; its key."""
    positions = await client.positions(order)
    data = SuccessorsDocumentData(
        DocumentKindDestination="S",
        Positions=tuple(
            StoreInformationUpdate(
                Identifier=p.Identifier, Quantity=(p.Quantity or Decimal(0)) * share
            )
            for p in positions
        ),
    )
    return (await client.create_successor(order, data)).DocumentKey


async def test_goods_receipts_come_from_their_purchase_order_only(serve: Serve) -> None:
    sim = supplier_sim()
    async with sim_client(serve, sim) as client:
        order = await _purchase_order(client, BUERO, "a")
        old = await _purchase_order(
            client, NORDLICHT, "b", dated=date.today() - timedelta(days=200)
        )
        receipt = await _receive(client, order, Decimal("0.4"))
        assert (order[0], receipt[0], receipt[1:3]) == ("B", "S", "WE")
        b_positions = {p.Identifier: p for p in await client.positions(order)}
        s_positions = await client.positions(receipt)
        received = [
            (b_positions[p.PredecessorIdentifier or ""].ArticleNumber, p.Quantity)
            for p in s_positions
        ]
        assert received == [("BB-100", Decimal(4)), ("BB-220", Decimal(10))]
        # Net prices, as the supplier's purchase order has them.
        assert (await client.document(receipt)).NetAmount == Decimal("38.30")
        for source, kind in ((order, "L"), (order, "R"), (receipt, "E"), (receipt, "S")):
            one = (await client.positions(source))[0]
            with pytest.raises(SelectLineRejected) as refused:
                await client.create_successor(
                    source,
                    SuccessorsDocumentData(
                        DocumentKindDestination=kind,
                        Positions=(StoreInformationUpdate(Identifier=one.Identifier, Quantity=1),),
                    ),
                )
            assert refused.value.status_code == 400
        with pytest.raises(SelectLineRejected):  # a goods receipt needs a supplier
            await client.create_document(DocumentCreateModel(KindFlag="S"))
        recent = date.today() - timedelta(days=90)
        client.page_size = 1  # the list endpoint's paging, one row a page
        orders = await client.supplier_documents("B", recent)
        receipts = await client.supplier_documents("S", recent)
    assert [d.key for d in orders] == [order]  # the old one is before selectFromDate
    assert [d.key for d in receipts] == [receipt]
    assert old in sim.documents


def _reads(data_dir: Path) -> list[str]:
    with sqlite3.connect(data_dir / "somsd.db") as conn:
        return [
            stream
            for (stream,) in conn.execute(
                "SELECT stream FROM events WHERE type = 'ErpPurchaseDocumentRead'"
            )
        ]


def _invoice(supplier: Supplier, number: str, order: str) -> SupplierInvoice:
    return make_invoice(supplier, number, order.removeprefix("B"), ITEMS[supplier.layout])


@pytest.mark.slow
async def test_invoices_are_matched_on_what_selectline_ordered_and_received(
    tmp_path: Path, serve: Serve
) -> None:
    sim = supplier_sim()
    served, _ = await serve(sim)
    async with httpx.AsyncClient(base_url=served) as http:
        client = SelectLineClient(http, system="erp/sl", user=sim.user, password=sim.password)
        full = await _purchase_order(client, BUERO, "a")
        await _receive(client, full)
        partial = await _purchase_order(client, NORDLICHT, "b")
        await _receive(client, partial, Decimal("0.5"))
        await client.logout()
    (tmp_path / "selectline.password").write_text(sim.password + "\n")
    write_master_data(tmp_path, [], [])  # the CSV import has nothing: all comes from the ERP
    config = inbox_config(
        tmp_path,
        inbox_keys='erp = "sl"',
        extra=selectline_erp(served, 'purchasing_interval = "200ms"\npurchasing_days = 30'),
    )
    invoices = {
        "received": (BUERO, _invoice(BUERO, "P-1", full)),
        "half-received": (NORDLICHT, _invoice(NORDLICHT, "P-2", partial)),
        "unknown-order": (BUERO, _invoice(BUERO, "P-3", "BBE999999")),
    }
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await daemon.wait_log("erp_purchasing_read")
        assert sorted(_reads(tmp_path / "data")) == ["supplier-purchasing-sl"] * 4
        for name, (supplier, invoice) in invoices.items():
            (tmp_path / "inbox" / f"{name}.pdf").write_bytes(render(invoice, supplier))
        listing: list[dict[str, object]] = []
        while len(listing) < len(invoices):
            listing = (await admin.get("/v1/supplier-invoices")).json()
        summaries = await wait_status(admin, [str(s["id"]) for s in listing], FINAL)
        # Several more reads of the same documents: nothing new is written.
        requests = len(sim.requests)
        with trio.fail_after(10):
            while True:
                if len(sim.requests) >= requests + 12:
                    break
                await trio.sleep(0.05)  # the daemon's reads of this process's simulator
        assert len(_reads(tmp_path / "data")) == 4
    by_number = {s["number"]: s for s in summaries.values()}
    assert by_number["P-1"]["status"] == "posted"
    failed = {number: {f["rule"] for f in s.get("failed", [])} for number, s in by_number.items()}
    assert by_number["P-2"]["status"] == "held"
    assert failed["P-2"] == {"QTY-RECEIVED"}
    assert "PO-UNKNOWN" in failed["P-3"]

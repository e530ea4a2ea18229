"""Approved supplier invoices posted to SelectLine as supplier invoices `E`, exactly once: the
simulator's rules for purchase-side documents and the lookup by supplier and reference, then
real `somsd run`s against it with 30 % lost responses, a half-made document to adopt and a
SIGKILL."""

from __future__ import annotations

import hashlib
import signal
import sqlite3
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from adapters.selectline.client import SelectLineClient
from adapters.selectline.errors import SelectLineRejected
from adapters.selectline.purchasing import supplier_invoice_header
from adapters.selectline.simulator import SelectLineKnobs, SelectLineSimulator
from adapters.selectline.wire import (
    ArticlePositionItem,
    DocumentCreateModel,
    DocumentDetailAddress,
    DocumentDetailBusinessPartner,
)
from somsd.supplier_invoices.model import SupplierInvoice
from tests.adapters.conftest import Serve, serve
from tests.erp.helpers import selectline_erp
from tests.harness import running_daemon
from tests.supplier_invoices.corpus import (
    BUERO,
    ITEMS,
    KAFFEE,
    NORDLICHT,
    SUPPLIERS,
    Supplier,
    make_invoice,
    orders_for,
    render,
)
from tests.supplier_invoices.daemon_setup import (
    DECISION_BUDGET,
    inbox_config,
    wait_status,
    write_master_data,
)
from tests.supplier_invoices.test_daemon import FINAL, audit_verify

__all__ = ["serve"]


def supplier_sim(**knobs: Any) -> SelectLineSimulator:
    """The corpus's suppliers as SelectLine suppliers and its articles as articles."""
    sim = SelectLineSimulator(knobs=SelectLineKnobs(**knobs))
    for supplier in SUPPLIERS:
        sim.add_supplier(supplier.record.number, supplier.record.name)
    for items in ITEMS.values():
        for article, name, *_ in items:
            sim.add_article(article, name=name)
    return sim


def e_header(supplier: str | None, reference: str, kind: str = "E") -> DocumentCreateModel:
    return DocumentCreateModel(
        KindFlag=kind,
        BusinessPartner=DocumentDetailBusinessPartner(
            BusinessPartnerReferenceNumber=reference,
            Address=DocumentDetailAddress(Number=supplier) if supplier else None,
        ),
    )


@asynccontextmanager
async def sim_client(serve: Serve, sim: SelectLineSimulator) -> AsyncIterator[SelectLineClient]:
    url, _ = await serve(sim)
    async with httpx.AsyncClient(base_url=url) as http:
        yield SelectLineClient(http, system="erp/sl", user=sim.user, password=sim.password)


async def test_a_supplier_invoice_needs_a_known_supplier(serve: Serve) -> None:
    sim = supplier_sim()
    async with sim_client(serve, sim) as client:
        await _refusals(client, sim)


async def _refusals(client: SelectLineClient, sim: SelectLineSimulator) -> None:
    for supplier, words in ((None, "braucht einen Lieferanten"), ("10001", "10001 nicht gefunden")):
        with pytest.raises(SelectLineRejected) as refused:
            await client.create_document(e_header(supplier, "R-1"))
        assert refused.value.status_code == 400
        assert words in refused.value.message
    # EU-inbound prices exist only on purchase-side documents.
    with pytest.raises(SelectLineRejected):
        await client.create_document(
            msgspec.structs.replace(e_header("10001", "R-1", "F"), PriceKindFlag="E")
        )
    created = await client.create_document(e_header("70001", "R-1"))
    assert created.DocumentKey.startswith("EER")
    assert sim.documents[created.DocumentKey].address_kind == "Supplier"


async def test_the_lookup_selects_by_address_kind_partner_and_reference(serve: Serve) -> None:
    sim = supplier_sim()
    async with sim_client(serve, sim) as client:
        await _lookups(client)


async def _lookups(client: SelectLineClient) -> None:
    mine = await client.create_document(e_header("70001", "R-1"))
    await client.create_document(e_header("70002", "R-1"))  # another supplier, same number
    await client.create_document(e_header("70001", "R-2"))
    # A customer whose number is the supplier's: only selectAddressKind tells them apart.
    await client.create_document(e_header("70001", "R-1", "F"))
    found = await client.partner_documents(
        "E", "Supplier", "70001", BusinessPartnerReferenceNumber="R-1"
    )
    assert [d.key for d in found] == [mine.DocumentKey]
    customers = await client.partner_documents("F", "Customer", "70001")
    assert [d.KindFlag for d in customers] == ["F"]
    # Net prices: the tax per rate on the rate's net sum.
    for article, quantity, price, rate in (("BB-100", 3, "0.33", 19), ("NL-9", 1, "9.99", 7)):
        await client.add_article(
            mine.DocumentKey,
            ArticlePositionItem(
                ArticleNumber=article,
                CalculatedQuantityValue=Decimal(quantity),
                UnitPrice=Decimal(price),
                TaxRate=Decimal(rate),
            ),
        )
    document = await client.document(mine.DocumentKey)
    assert (document.NetAmount, document.TaxAmount, document.GrossAmount) == (
        Decimal("10.98"),
        Decimal("0.19") + Decimal("0.70"),
        Decimal("11.87"),
    )
    with pytest.raises(SelectLineRejected):
        await client.partner_documents("E", "Lieferant", "70001")


# -- through a real somsd run ----------------------------------------------------------------


async def erp_inbox_config(tmp_path: Path, serve: Serve, sim: SelectLineSimulator) -> Path:
    url, _ = await serve(sim)
    (tmp_path / "selectline.password").write_text(sim.password + "\n")
    return inbox_config(tmp_path, inbox_keys='erp = "sl"', extra=selectline_erp(url))


def good_invoices(count: int) -> list[tuple[Supplier, SupplierInvoice]]:
    suppliers = (BUERO, NORDLICHT, KAFFEE)
    return [
        (
            suppliers[n % 3],
            make_invoice(suppliers[n % 3], f"E-{n}", f"PO-E{n}", ITEMS[suppliers[n % 3].layout]),
        )
        for n in range(count)
    ]


def write_orders(tmp_path: Path, invoices: list[tuple[Supplier, SupplierInvoice]]) -> None:
    orders, receipts = [], []
    for supplier, invoice in invoices:
        po, gr = orders_for(invoice, supplier)
        orders += po
        receipts += gr
    write_master_data(tmp_path, orders, receipts)


async def wait_erp_posted(admin: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """Every invoice's summary once `count` are posted (output and ERP)."""
    with trio.fail_after(DECISION_BUDGET):
        while True:
            response = await admin.get("/v1/supplier-invoices", params={"limit": 1000})
            assert response.status_code == 200, response.text  # once seen failing under load
            listing = response.json()
            done = [
                s
                for s in listing
                if s.get("erp_documents", {}).get("sl") and s["status"] == "posted"
            ]
            if len(done) >= count:
                return listing
            await trio.sleep(0.1)  # another process: poll its API


def assert_one_e_each(
    sim: SelectLineSimulator, invoices: list[tuple[Supplier, SupplierInvoice]]
) -> None:
    documents = sim.documents_of("E")
    references = Counter(
        (d.partner.Address.Number, d.partner.BusinessPartnerReferenceNumber)
        for d in documents
        if d.partner and d.partner.Address
    )
    assert len(documents) == len(invoices)
    assert all(n == 1 for n in references.values()), references
    by_reference = {
        d.partner.BusinessPartnerReferenceNumber: d for d in documents if d.partner is not None
    }
    for supplier, invoice in invoices:
        document = by_reference[invoice.number]
        assert document.partner is not None
        assert document.partner.Address is not None
        assert document.partner.Address.Number == supplier.record.number
        assert document.partner.BusinessPartnerContract == invoice.purchase_order
        assert [(p.article, p.quantity, p.unit_price, p.tax_rate) for p in document.positions] == [
            (line.article, line.quantity, line.net_price, line.tax_rate) for line in invoice.lines
        ]
        assert document.totals()[0] == invoice.grand_total


def erp_steps(data_dir: Path) -> Counter[str]:
    with sqlite3.connect(data_dir / "somsd.db") as conn:
        return Counter(
            stream
            for (stream,) in conn.execute(
                "SELECT stream FROM events WHERE type = 'SupplierInvoiceErpPosted'"
            )
        )


@pytest.mark.slow
async def test_each_approved_invoice_is_one_e_despite_lost_responses(
    tmp_path: Path, serve: Serve
) -> None:
    sim = supplier_sim(lost_response_rate=0.3)
    invoices = good_invoices(6)
    write_orders(tmp_path, invoices)
    # A half-made E of the first invoice (an earlier attempt's positions never came): adopted.
    supplier, first = invoices[0]
    header = supplier_invoice_header(first, supplier.record.number, "an earlier attempt")
    half = sim._new_document("E", header.BusinessPartner, "EUR")
    half.address_kind, half.price_kind = "Supplier", "N"
    sim._add_position(half, "A", first.lines[0].article, first.lines[0].quantity,
                      first.lines[0].net_price, first.lines[0].tax_rate, "")  # fmt: skip
    config = await erp_inbox_config(tmp_path, serve, sim)
    held = make_invoice(BUERO, "E-held", "PO-E0", ITEMS["a"], iban="DE02120300000000202051")
    files = [render(invoice, supplier) for supplier, invoice in invoices]
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        for n, data in enumerate(files):
            (tmp_path / "inbox" / f"e-{n}.pdf").write_bytes(data)
        (tmp_path / "inbox" / "held.pdf").write_bytes(render(held, BUERO))
        listing = await wait_erp_posted(admin, len(invoices))
        await wait_status(admin, [s["id"] for s in listing], FINAL)
        first_id = "SI-" + hashlib.sha256(files[0]).hexdigest()[:20]
        trail = (await admin.get(f"/v1/supplier-invoices/{first_id}/audit")).json()
    statuses = Counter(s["status"] for s in listing)
    assert statuses == {"posted": len(invoices), "held": 1}
    assert_one_e_each(sim, invoices)  # and the held one is not in the ERP
    steps = erp_steps(tmp_path / "data")
    assert len(steps) == len(invoices)
    assert set(steps.values()) == {1}
    (posted,) = [e for e in trail["entries"] if e["step"] == "erp_posted"]
    data = msgspec.json.decode(posted["data"])
    assert (data["erp"], data["document"], data["found"], data["completed"]) == (
        "sl",
        half.key,
        True,
        len(first.lines) - 1,
    )
    assert Decimal(str(data["gross"])) == first.grand_total
    result = audit_verify(config)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
async def test_a_killed_daemon_posts_each_invoice_once(tmp_path: Path, serve: Serve) -> None:
    # A killed daemon never logs out: the server frees its seat after the idle timeout.
    sim = supplier_sim(lost_response_rate=0.3, session_timeout=0.5)
    invoices = good_invoices(12)
    write_orders(tmp_path, invoices)
    config = await erp_inbox_config(tmp_path, serve, sim)
    for n, (supplier, invoice) in enumerate(invoices):
        (tmp_path / "inbox" / f"e-{n:02d}.pdf").write_bytes(render(invoice, supplier))
    async with running_daemon(config) as daemon:
        # Killed in the middle: some in the ERP, some half-made, some not yet decided.
        await daemon.wait_for(
            "two E documents",
            lambda: sum(e.get("event") == "supplier_invoice_erp_posted" for e in daemon.log) >= 2,
        )
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    sim.knobs.lost_response_rate = 0.0
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        listing = await wait_erp_posted(admin, len(invoices))
    assert {s["status"] for s in listing} == {"posted"}
    assert_one_e_each(sim, invoices)
    steps = erp_steps(tmp_path / "data")
    assert len(steps) == len(invoices)
    assert set(steps.values()) == {1}
    result = audit_verify(config)
    assert result.returncode == 0, result.stderr

"""A SIGKILL while supplier invoices are being processed: after the restart each is decided
exactly once and each approved one posted exactly once, and the trails verify."""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from tests.harness import running_daemon
from tests.supplier_invoices.corpus import BUERO, ITEMS, KAFFEE, make_invoice, orders_for, render
from tests.supplier_invoices.daemon_setup import inbox_config, wait_status, write_master_data
from tests.supplier_invoices.test_daemon import FINAL, audit_verify

pytestmark = pytest.mark.slow

COUNT = 24


async def test_a_killed_daemon_processes_every_invoice_exactly_once(tmp_path: Path) -> None:
    orders, receipts = [], []
    config = inbox_config(tmp_path)
    for n in range(COUNT):
        supplier = BUERO if n % 2 else KAFFEE
        invoice = make_invoice(supplier, f"K-{n}", f"PO-K{n}", ITEMS[supplier.layout])
        po, gr = orders_for(invoice, supplier)
        orders += po
        receipts += gr
        data = render(invoice, supplier)
        (tmp_path / "inbox" / f"invoice-{n:03d}.pdf").write_bytes(data)
    write_master_data(tmp_path, orders, receipts)
    async with running_daemon(config) as daemon:
        # Killed once a few are decided: the rest are received, decided or half-posted.
        await daemon.wait_for(
            "three decisions",
            lambda: sum(e.get("event") == "supplier_invoice_decided" for e in daemon.log) >= 3,
        )
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        listing = (await admin.get("/v1/supplier-invoices", params={"limit": 1000})).json()
        # Every file in the folder before the kill that was taken in, and the rest now.
        summaries = await wait_status(admin, [s["id"] for s in listing], {"posted"})
        while len(summaries) < COUNT:
            listing = (await admin.get("/v1/supplier-invoices", params={"limit": 1000})).json()
            summaries = await wait_status(admin, [s["id"] for s in listing], FINAL)
    assert len(summaries) == COUNT
    assert {s["status"] for s in summaries.values()} == {"posted"}
    with sqlite3.connect(tmp_path / "data" / "somsd.db") as conn:
        steps = Counter(
            (stream, kind)
            for stream, kind in conn.execute(
                "SELECT stream, type FROM events WHERE stream LIKE 'supplier-invoice-%'"
            )
        )
    for invoice_id in summaries:
        stream = f"supplier-invoice-{invoice_id}"
        assert steps[(stream, "SupplierInvoiceReceived")] == 1
        assert steps[(stream, "SupplierInvoiceDecided")] == 1
        assert steps[(stream, "SupplierInvoicePosted")] == 1
        assert steps[(stream, "SupplierInvoiceEinvoice")] == 1
    assert len(list((tmp_path / "inbox" / "processed").iterdir())) == COUNT
    result = audit_verify(config)
    assert result.returncode == 0, result.stderr

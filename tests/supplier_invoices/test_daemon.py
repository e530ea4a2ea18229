"""Supplier invoices through a real `somsd run`: every check caught by the case built for it,
approved invoices posted once (valid e-invoice, DATEV CSV), the trail hash-chained and
`somsd audit verify` finding any tampering with an event or a file."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.console.helpers import Browser
from tests.harness import running_daemon
from tests.orders.shop import sample_value, scrape
from tests.supplier_invoices.corpus import (
    BUERO,
    FACTURX,
    ITEMS,
    KAFFEE,
    NORDLICHT,
    XMLSUPPLIER,
    make_invoice,
    orders_for,
    render,
    unknown_supplier_pdf,
)
from tests.supplier_invoices.daemon_setup import inbox_config, wait_status, write_master_data

pytestmark = pytest.mark.slow

FINAL = {"posted", "held", "rejected", "needs_template", "unreadable"}


def corpus() -> tuple[dict[str, bytes], list[object], list[object]]:
    """name -> file, with the POs and receipts that make the good ones match."""
    files: dict[str, bytes] = {}
    orders: list[object] = []
    receipts: list[object] = []
    for supplier in (BUERO, NORDLICHT, KAFFEE, FACTURX, XMLSUPPLIER):
        good = make_invoice(
            supplier,
            f"{supplier.record.number}-1",
            f"PO-{supplier.record.number}",
            ITEMS[supplier.layout],
        )
        po, gr = orders_for(good, supplier)
        orders += po
        receipts += gr
        files[f"good-{supplier.layout}"] = render(good, supplier)
    base = make_invoice(BUERO, "B-2", "PO-B2", ITEMS["a"])
    po, gr = orders_for(base, BUERO)
    orders += po
    receipts += gr
    files["wrong-sum"] = render(
        make_invoice(BUERO, "B-3", "PO-B2", ITEMS["a"], grand_total_delta=Decimal("10.00")), BUERO
    )
    files["changed-iban"] = render(
        make_invoice(BUERO, "B-4", "PO-B2", ITEMS["a"], iban="DE02120300000000202051"), BUERO
    )
    files["duplicate-number"] = render(
        make_invoice(NORDLICHT, "70002-1", "PO-70002", ITEMS["b"][:1]), NORDLICHT
    )
    files["unknown-po"] = render(make_invoice(KAFFEE, "K-9", "PO-NOPE", ITEMS["c"]), KAFFEE)
    over = make_invoice(BUERO, "B-5", "PO-B5", ITEMS["a"])
    po, gr = orders_for(over, BUERO, received={"BB-100": 4})
    orders += po
    receipts += gr
    files["over-receipt"] = render(over, BUERO)
    pricey = make_invoice(NORDLICHT, "N-6", "PO-N6", ITEMS["b"])
    po, gr = orders_for(pricey, NORDLICHT)
    orders += [
        type(line)(
            **{
                **{f: getattr(line, f) for f in line.__struct_fields__},
                "net_price": line.net_price * Decimal("0.9"),
            }
        )
        for line in po
    ]
    receipts += gr
    files["price-off"] = render(pricey, NORDLICHT)
    files["no-template"] = unknown_supplier_pdf()
    return files, orders, receipts


EXPECTED = {
    "good-a": ("posted", set()),
    "good-b": ("posted", set()),
    "good-c": ("posted", set()),
    "good-zugferd": ("posted", set()),
    "good-xml": ("posted", set()),
    "wrong-sum": ("rejected", {"BR-CO-15"}),
    "changed-iban": ("held", {"IBAN-KNOWN"}),
    # Also over the PO: its quantity was invoiced already by the approved original.
    "duplicate-number": ("rejected", {"DUPLICATE-NUMBER", "QTY-ORDERED"}),
    "unknown-po": ("rejected", {"PO-UNKNOWN"}),
    "over-receipt": ("held", {"QTY-RECEIVED"}),
    "price-off": ("held", {"PRICE"}),
    "no-template": ("needs_template", set()),
}


def audit_verify(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "somsd", "audit", "verify", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_each_check_is_caught_and_each_approved_invoice_posted_once(tmp_path: Path) -> None:
    files, orders, receipts = corpus()
    write_master_data(tmp_path, orders, receipts)  # type: ignore[arg-type]
    config = inbox_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        ids: dict[str, str] = {}
        # The good ones first, so "duplicate-number" meets an approved 70002-1.
        for name in [n for n in files if n.startswith("good")]:
            response = await admin.post(
                "/v1/supplier-invoices", content=files[name], params={"filename": f"{name}.pdf"}
            )
            assert response.status_code == 201, response.text
            ids[name] = response.json()["id"]
        await wait_status(admin, list(ids.values()), FINAL)
        for name in [n for n in files if not n.startswith("good")]:
            # The rest through the watched folder.
            (tmp_path / "inbox" / f"{name}.pdf").write_bytes(files[name])
            ids[name] = "SI-" + hashlib.sha256(files[name]).hexdigest()[:20]
        summaries = await wait_status(admin, list(ids.values()), FINAL)
        for name, (status, rules) in EXPECTED.items():
            summary = summaries[ids[name]]
            assert summary["status"] == status, (name, summary)
            assert {check["rule"] for check in summary.get("failed", [])} == rules, (name, summary)
        assert "we have no purchase order PO-NOPE" in summaries[ids["unknown-po"]]["reason"]
        assert "DE999999999" in summaries[ids["no-template"]]["hints"]
        assert sorted(p.name for p in (tmp_path / "inbox" / "processed").iterdir()) == sorted(
            f"{n}.pdf" for n in files if not n.startswith("good")
        )

        # A second copy of a file is recognised, not processed again.
        again = await admin.post("/v1/supplier-invoices", content=files["good-a"])
        assert again.status_code == 200
        assert again.json() == {"id": ids["good-a"], "duplicate": True, "status": "posted"}

        # Bad input: a clear 4xx, nothing changed.
        assert (await admin.post("/v1/supplier-invoices", content=b"hello")).status_code == 415
        assert (
            await admin.post("/v1/supplier-invoices", content=b"", params={"inbox": "x"})
        ).status_code == 422
        assert (
            await admin.get("/v1/supplier-invoices", params={"status": "nope"})
        ).status_code == 422
        assert (await admin.get("/v1/supplier-invoices/SI-nope")).status_code == 404
        bad = await admin.post(
            f"/v1/supplier-invoices/{ids['changed-iban']}/approve", json={"by": "", "reason": "x"}
        )
        assert bad.status_code == 422
        assert bad.json()["error"]["path"] == "$.by"
        posted_one = await admin.post(
            f"/v1/supplier-invoices/{ids['good-a']}/approve", json={"by": "a", "reason": "b"}
        )
        assert posted_one.status_code == 409
        async with httpx.AsyncClient(base_url=daemon.api) as anonymous:
            assert (await anonymous.get("/v1/supplier-invoices")).status_code == 401

        # The console lists what waits; rejecting the template-less one there records the user.
        async with Browser(daemon) as browser:
            await browser.login()
            page = await browser.get("/console/supplier-invoices")
            assert page.status_code == 200
            for name in ("changed-iban", "over-receipt", "price-off", "no-template"):
                assert ids[name] in page.text, name
            assert ids["good-a"] not in page.text
            assert "IBAN-KNOWN" in page.text
            done = await browser.post(
                f"/console/supplier-invoices/{ids['no-template']}/reject",
                {"reason": "please send it as XRechnung"},
                page="/console/supplier-invoices",
            )
            assert done.status_code == 303
        trail = (await admin.get(f"/v1/supplier-invoices/{ids['no-template']}/audit")).json()
        assert '"by":"Erika"' in trail["entries"][-1]["data"]

        # The operator approves the changed IBAN after calling the supplier; it is posted.
        approved = await admin.post(
            f"/v1/supplier-invoices/{ids['changed-iban']}/approve",
            json={"by": "m.muster", "reason": "new account confirmed by phone, ticket 4711"},
        )
        assert approved.status_code == 200, approved.text
        rejected = await admin.post(
            f"/v1/supplier-invoices/{ids['price-off']}/reject",
            json={"by": "m.muster", "reason": "prices are not the agreed ones"},
        )
        assert rejected.json()["status"] == "rejected"
        assert "prices are not the agreed ones" in rejected.json()["reason"]
        await wait_status(admin, [ids["changed-iban"]], {"posted"})

        held = (await admin.get("/v1/supplier-invoices", params={"status": "held"})).json()
        assert [s["id"] for s in held] == [ids["over-receipt"]]

        # Each approved one posted once: one valid e-invoice, one DATEV batch, right amounts.
        for name in ("good-a", "good-b", "good-c", "good-zugferd", "good-xml", "changed-iban"):
            trail = (await admin.get(f"/v1/supplier-invoices/{ids[name]}/audit")).json()
            assert trail["intact"] is True, trail["problems"]
            steps = [entry["step"] for entry in trail["entries"]]
            assert steps.count("posted") == 1, (name, steps)
            assert steps.count("einvoice") == 1
            einvoice = next(e for e in trail["entries"] if e["step"] == "einvoice")
            assert '"valid":true' in einvoice["data"], (name, einvoice["data"])
            posted = next(e for e in trail["entries"] if e["step"] == "posted")
            summary = (await admin.get(f"/v1/supplier-invoices/{ids[name]}")).json()
            # The DATEV bookings for the day's batch (tests/supplier_invoices/test_datev.py).
            bookings = __import__("json").loads(posted["data"])["bookings"]
            assert sum(Decimal(b["amount"]) for b in bookings) == Decimal(summary["grand_total"])
            if name == "good-c":
                assert {b["account"] for b in bookings} == {"3300"}  # the rule for 70003
                assert {b["cost_centre"] for b in bookings} == {"200"}
            assert {b["contra_account"] for b in bookings} == {summary["supplier"]}
        first = (await admin.get(f"/v1/supplier-invoices/{ids['good-b']}/audit")).json()["entries"]
        assert [e["step"] for e in first][:2] == ["received", "extracted"]
        extracted = __import__("json").loads(first[1]["data"])
        assert extracted["template"] == "nordlicht-elektro.yml"
        assert extracted["template_version"] == 2
        assert extracted["backend"].startswith("pypdf-layout")
        assert "duplicate_file" not in [e["step"] for e in first]
        copies = (await admin.get(f"/v1/supplier-invoices/{ids['good-a']}/audit")).json()["entries"]
        assert "duplicate_file" in [e["step"] for e in copies]
        overridden = (await admin.get(f"/v1/supplier-invoices/{ids['changed-iban']}/audit")).json()[
            "entries"
        ]
        override = next(e for e in overridden if e["step"] == "overridden")
        assert "m.muster" in override["data"]
        assert "ticket 4711" in override["data"]

        samples = await scrape(daemon)
        assert sample_value(samples, "somsd_supplier_invoices_posted_total", inbox="main") == 6
        assert (
            sample_value(
                samples, "somsd_supplier_invoices_decided_total", inbox="main", outcome="held"
            )
            == 3
        )

    # Offline: the trails and files verify; tampering with an event or a file is found.
    result = audit_verify(config)
    assert result.returncode == 0, result.stderr
    assert "audit ok: 12 supplier invoices" in result.stdout
    database = tmp_path / "data" / "somsd.db"
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TRIGGER events_no_update")
        stream = f"supplier-invoice-{ids['changed-iban']}"
        (payload,) = conn.execute(
            "SELECT payload FROM events WHERE stream = ? AND type = 'SupplierInvoiceOverridden'",
            (stream,),
        ).fetchone()
        forged = bytes(payload).replace(b"m.muster", b"x.forger")
        conn.execute(
            "UPDATE events SET payload = ? WHERE stream = ? AND type = 'SupplierInvoiceOverridden'",
            (forged, stream),
        )
    result = audit_verify(config)
    assert result.returncode == 1
    assert f"{ids['changed-iban']}: entry" in result.stderr
    assert "hash does not match" in result.stderr

    # The files are blobs in the event store's database, none on the disk.
    assert not (tmp_path / "data" / "supplier-invoices" / "files").exists()
    original = hashlib.sha256(files["good-c"]).hexdigest()
    with sqlite3.connect(database) as conn:
        conn.execute("DROP TRIGGER blobs_no_update")
        conn.execute(
            "UPDATE blobs SET content = ? WHERE sha256 = ?",
            (files["good-c"] + b"\n%tampered\n", original),
        )
    result = audit_verify(config)
    assert f"{ids['good-c']}: received file" in result.stderr
    assert "was changed" in result.stderr


NEW_TEMPLATE = r"""
issuer: Neuer Lieferant UG
version: 1
backend: pypdf-layout
keywords: ['USt-IdNr\. DE999999999']
static: {currency: EUR, seller_name: Neuer Lieferant UG}
fields:
  number: 'Rechnung (\d+)'
  grand_total: 'über ([\d,]+) EUR'
options: {decimal_separator: ','}
"""


async def test_a_template_added_later_reads_the_waiting_invoice(tmp_path: Path) -> None:
    write_master_data(tmp_path, [], [])
    config = inbox_config(tmp_path)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        response = await admin.post("/v1/supplier-invoices", content=unknown_supplier_pdf())
        invoice = response.json()["id"]
        await wait_status(admin, [invoice], {"needs_template"})
        body = {"by": "m.muster", "reason": "template written"}
        early = await admin.post(f"/v1/supplier-invoices/{invoice}/approve", json=body)
        assert early.status_code == 409
        (tmp_path / "templates" / "neuer-lieferant.yml").write_text(NEW_TEMPLATE)
        assert (await admin.post("/v1/admin/reload")).status_code == 200
        retried = await admin.post(f"/v1/supplier-invoices/{invoice}/retry", json=body)
        assert retried.status_code == 200, retried.text
        summary = (await wait_status(admin, [invoice], FINAL - {"needs_template"}))[invoice]
        # Read now, and rejected: no lines, no VAT ID the supplier master data knows.
        assert summary["status"] == "rejected"
        assert summary["number"] == "4711"
        trail = (await admin.get(f"/v1/supplier-invoices/{invoice}/audit")).json()
        steps = [entry["step"] for entry in trail["entries"]]
        assert steps.count("decided") == 2
        assert "retry" in steps
        assert trail["intact"] is True
        again = await admin.post(f"/v1/supplier-invoices/{invoice}/retry", json=body)
        assert again.status_code == 409

"""The document actor in a real `somsd run`: every auto-invoiced order gets its PDF and XML,
served by number, hashed in the record; invalid e-invoices are held back and counted; a
SIGKILL while documents are being rendered leaves each rendered exactly once."""

from __future__ import annotations

import hashlib
import io
import signal
import time
from pathlib import Path

import facturx
import httpx
import pytest
import trio
from pypdf import PdfReader

from somsd.daemon import DATABASE_FILE
from somsd.store import open_reader
from tests.harness import DaemonProcess, running_daemon
from tests.orders.shop import accept, order_body, sample_value, scrape, webhook_config

pytestmark = pytest.mark.slow

DOCUMENTS = """
[documents]
enabled = true
seller_name = "Muster Handel GmbH"
street = "Industriestr. 5"
zip = "20095"
city = "Hamburg"
vat_id = "{vat_id}"
email = "rechnung@muster.example"
contact_name = "Max Muster"
phone = "+49 40 1234567"
iban = "DE02120300000000202051"
buyer_references = {{ "K-1" = "04011000-12345-67" }}
"""
RENDER_BUDGET = 60.0  # seconds for all documents of a test, real processes on a busy box


def config(directory: Path, vat_id: str = "DE123456789") -> Path:
    return webhook_config(directory, DOCUMENTS.format(vat_id=vat_id))


async def documents_of(admin: httpx.AsyncClient, order_id: str) -> list[dict[str, object]]:
    response = await admin.get(f"/v1/orders/{order_id}/documents")
    assert response.status_code == 200, response.text
    documents: list[dict[str, object]] = response.json()["documents"]
    return documents


async def wait_documents(daemon: DaemonProcess, order_ids: list[str]) -> dict[str, dict]:
    """Each order's one document record, once all are rendered (bounded by RENDER_BUDGET)."""
    found: dict[str, dict] = {}
    async with daemon.admin() as admin:
        with trio.fail_after(RENDER_BUDGET):
            while len(found) < len(order_ids):
                for order_id in order_ids:
                    if order_id not in found:
                        documents = await documents_of(admin, order_id)
                        if documents:
                            assert len(documents) == 1
                            found[order_id] = documents[0]
                if len(found) < len(order_ids):
                    # A real daemon in another process: poll its API, with a short pause.
                    await trio.sleep(0.1)
    return found


async def test_issued_invoices_are_rendered_served_and_counted(tmp_path: Path) -> None:
    async with running_daemon(config(tmp_path)) as daemon:
        async with httpx.AsyncClient(base_url=daemon.api) as client:
            plain = await accept(client, order_body("D-1"))
        records = await wait_documents(daemon, [plain])
        record = records[plain]
        assert record["valid"] is True
        assert record["profile"] == "EN16931"
        number = str(record["number"])
        async with daemon.admin() as admin:
            pdf = await admin.get(f"/v1/documents/{number}")
            xml = await admin.get(f"/v1/documents/{number}", headers={"Accept": "application/xml"})
            for bad in ("RE-9999-999999", "x" * 5000, "RE-2026-00000ü", "..%2F..%2Fetc"):
                assert (await admin.get(f"/v1/documents/{bad}")).status_code == 404, bad
            assert (await admin.get("/v1/orders/nope/documents")).status_code == 404
            assert (await admin.get("/v1/documents/invalid")).json() == []
        async with httpx.AsyncClient(base_url=daemon.api) as anonymous:
            assert (await anonymous.get(f"/v1/documents/{number}")).status_code == 401
        assert pdf.headers["content-type"] == "application/pdf"
        assert xml.headers["content-type"].startswith("application/xml")
        files = {item["media_type"]: item for item in record["files"]}  # type: ignore[attr-defined]
        assert hashlib.sha256(pdf.content).hexdigest() == files["application/pdf"]["sha256"]
        assert hashlib.sha256(xml.content).hexdigest() == files["application/xml"]["sha256"]
        assert facturx.get_xml_from_pdf(pdf.content, check_xsd=False)[1] == xml.content
        text = PdfReader(io.BytesIO(pdf.content)).pages[0].extract_text()
        assert number in text
        assert "Rechnung" in text
        samples = await scrape(daemon)
        rendered = sample_value(
            samples, "somsd_documents_rendered_total", kind="invoice", profile="EN16931"
        )
        assert rendered == 1


async def test_an_invoice_failing_validation_is_held_back(tmp_path: Path) -> None:
    # No VAT ID and no tax number: EN 16931 BR-S-02 fails, so the invoice must not go out.
    async with running_daemon(config(tmp_path, vat_id="")) as daemon:
        async with httpx.AsyncClient(base_url=daemon.api) as client:
            order_id = await accept(client, order_body("D-2"))
        record = (await wait_documents(daemon, [order_id]))[order_id]
        assert record["valid"] is False
        rules = {finding["rule"] for finding in record["findings"]}  # type: ignore[attr-defined]
        assert "BR-S-02" in rules
        async with daemon.admin() as admin:
            invalid = (await admin.get("/v1/documents/invalid")).json()
        assert [item["number"] for item in invalid] == [record["number"]]
        await daemon.wait_log("document_invalid")
        samples = await scrape(daemon)
        assert sample_value(samples, "somsd_documents_invalid_total", kind="invoice") == 1


ORDERS = 12


async def test_sigkill_while_rendering_renders_each_document_once(tmp_path: Path) -> None:
    path = config(tmp_path)
    order_ids: list[str] = []
    async with running_daemon(path) as daemon:
        async with httpx.AsyncClient(base_url=daemon.api) as client:
            for index in range(ORDERS):
                order_ids.append(await accept(client, order_body(f"K-{index}")))
        # Kill as soon as the first document is done: the others are queued or mid-render.
        await daemon.wait_log("document_rendered")
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    async with running_daemon(path) as daemon:
        records = await wait_documents(daemon, order_ids)
        async with daemon.admin() as admin:
            for record in records.values():
                pdf = await admin.get(f"/v1/documents/{record['number']}")
                files = {item["media_type"]: item for item in record["files"]}  # type: ignore[attr-defined]
                assert hashlib.sha256(pdf.content).hexdigest() == files["application/pdf"]["sha256"]
    numbers = sorted(str(record["number"]) for record in records.values())
    assert len(set(numbers)) == ORDERS
    with open_reader(tmp_path / "data" / DATABASE_FILE) as conn:
        rows = conn.execute(
            "SELECT stream, COUNT(*) FROM events WHERE type = 'DocumentRendered' GROUP BY stream"
        ).fetchall()
    assert sorted(stream for stream, _ in rows) == [f"document-{n}" for n in numbers]
    assert all(count == 1 for _, count in rows)
    assert not (tmp_path / "data" / "documents").exists()  # in the database, not on the disk


LINK_KEY = "link-key-for-tests"


async def test_a_signed_link_opens_the_invoice_pdf_until_it_expires(tmp_path: Path) -> None:
    """`GET /v1/public/documents/<number>` needs no token, only the link's signature, and
    refuses a tampered, foreign or expired link with the same 404."""
    from actors.documents import document_link

    (tmp_path / "links.key").write_text(LINK_KEY + "\n")
    public = '\npublic_url = "https://shop.example.com/somsd"\nlink_key_file = "links.key"\n'
    path = webhook_config(tmp_path, DOCUMENTS.format(vat_id="DE123456789") + public)
    async with running_daemon(path) as daemon, httpx.AsyncClient(base_url=daemon.api) as client:
        order_id = await accept(client, order_body("L-1"))
        number = str((await wait_documents(daemon, [order_id]))[order_id]["number"])
        key = LINK_KEY.encode()
        later = int(time.time()) + 3600
        link = document_link("https://shop.example.com/somsd", key, number, later)
        local = link.removeprefix("https://shop.example.com/somsd")
        opened = await client.get(local)
        assert opened.status_code == 200, opened.text
        assert opened.headers["content-type"] == "application/pdf"
        async with daemon.admin() as admin:
            stored = await admin.get(f"/v1/documents/{number}")
        assert opened.content == stored.content
        expired = document_link("", key, number, int(time.time()) - 1)
        foreign = document_link("", b"another key", number, later)
        other = document_link("", key, "RE-2026-999999", later)
        for refused in (
            expired,
            foreign,
            other,
            local.replace("sig=", "sig=0"),
            local.replace(f"expires={later}", f"expires={later + 1}"),
            f"/v1/public/documents/{number}",
            f"/v1/public/documents/{number}?expires=x&sig=y",
        ):
            answer = await client.get(refused)
            assert answer.status_code in (404, 422), (refused, answer.status_code)
            assert answer.headers["content-type"] == "application/json"

"""The console's work queues, stock, documents, labels and transfers over real HTTP against a
real `somsd run` (own-fleet labels printed on the Zebra simulator over TCP, invoices rendered
and validated by the document actor): what each page shows, that files come through the
session and never with a token in the page, hostile SKUs rendered inert, and a store token
scoped to its own location on every new page."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from pypdf import PdfReader

from adapters.labels.simulator import ZebraSimulator
from adapters.smartstore import SmartstoreSimulator
from somsd.domain.testing import sample_line
from tests.adapters.conftest import Serve, serve
from tests.channel.test_smartstore_daemon import shop_config
from tests.console.helpers import (
    HOSTILE_SKU,
    INVALID_DOCUMENTS,
    OTHER_STAFF_TOKEN,
    STAFF_TOKEN,
    VAN_STAFF_TOKEN,
    Browser,
    console_config,
    pickup_order,
    put_stock,
)
from tests.harness import ADMIN_TOKEN, running_daemon
from tests.orders.shop import accept, order_body

__all__ = ["serve"]  # the simulators' fixture, used by the reconciliation test

pytestmark = pytest.mark.slow

# Rendering and validating an invoice compiles the rule sets once (~1 s here, more under load).
BUDGET = 60.0


async def eventually(what: str, check: Any, budget: float = BUDGET) -> Any:
    """Poll the daemon's API (another process: no event to wait for) until `check()` holds."""
    with trio.fail_after(budget):
        while True:
            found = await check()
            if found:
                return found
            await trio.sleep(0.05)
    raise AssertionError(what)  # pragma: no cover  # fail_after raises first


async def fulfilments_of(admin: httpx.AsyncClient, order_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = (await admin.get(f"/v1/orders/{order_id}")).json()["fulfilment"][
        "fulfilments"
    ]
    return found


def inert(html: str) -> None:
    assert HOSTILE_SKU not in html
    assert "&lt;svg/onload=alert(3)&gt;" in html


async def test_queues_stock_documents_and_the_printed_label(
    tmp_path: Path, nursery: trio.Nursery
) -> None:
    zebra = ZebraSimulator()
    await nursery.start(zebra.serve)
    config = console_config(
        tmp_path,
        van=True,
        printer=f"tcp://127.0.0.1:{zebra.port}",
        documents=INVALID_DOCUMENTS,
    )
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await put_stock(admin, "store-essen", "MUG-1", 50)
        await put_stock(admin, "store-essen", HOSTILE_SKU, 1)
        await put_stock(admin, "wh-van", "VAN-1", 10)
        plain = await accept(admin, order_body("C-100"))
        waiting = await accept(
            admin, order_body("C-300", lines=[sample_line(sku=HOSTILE_SKU, quantity=3)])
        )
        shipped = await accept(admin, order_body("C-400", lines=[sample_line(sku="VAN-1")]))

        async def backorders() -> list[Any]:
            found: list[Any] = (await admin.get("/v1/backorders")).json()["backorders"]
            return found

        [backorder] = await eventually("the backorder", backorders)
        assert backorder["order_id"] == waiting
        assert backorder["lines"][0]["sku"] == HOSTILE_SKU
        assert (await admin.get("/v1/backorders", params={"sku": "MUG-1"})).json()[
            "backorders"
        ] == []
        assert (await admin.get("/v1/backorders", params={"limit": "x"})).status_code == 422
        [van] = await eventually("the van's fulfilment", lambda: fulfilments_of(admin, shipped))

        async with Browser(daemon) as browser:
            assert (await browser.login()).status_code == 303
            pages: list[str] = []

            # backorders: per SKU, the orders waiting and since when, the SKU's stock per location
            page = (await browser.get("/console/backorders")).text
            pages.append(page)
            inert(page)
            assert f"/console/orders/{waiting}" in page
            assert "C-300" in page
            assert backorder["since"][:19].replace("T", " ") in page
            assert "store-essen" in page
            assert "No order waits" in (await browser.get("/console/backorders", sku="MUG-1")).text

            # stock: per SKU and location, ATP per channel, the channels' reconciliation
            page = (await browser.get("/console/stock")).text
            pages.append(page)
            inert(page)
            for text in ("MUG-1", "VAN-1", "store-essen", "wh-van", "50", "b2b"):
                assert text in page, text
            assert "No reconciliation has run" in page  # webhook channels are never reconciled
            page = (await browser.get("/console/stock", sku="VAN")).text
            assert "VAN-1" in page
            assert "MUG-1" not in page
            assert (await browser.get("/console/stock", location="nowhere")).status_code == 404

            # pack at the van's warehouse: the label goes to the printer and can be downloaded
            response = await browser.post(
                f"/console/store/{van['id']}/pack", {}, page=f"/console/store/{van['id']}"
            )
            assert response.status_code == 303, response.text
            with trio.fail_after(BUDGET):
                while not zebra.jobs:
                    await zebra.changed.wait()
            page = (await browser.get(f"/console/store/{van['id']}")).text
            pages.append(page)
            assert "The label was sent to the printer" in page
            assert f"tcp://127.0.0.1:{zebra.port}" in page
            label = await browser.get(f"/console/store/{van['id']}/label")
            assert label.status_code == 200
            assert label.content == zebra.jobs[0]
            assert label.headers["content-disposition"].startswith("attachment;")
            assert label.headers["x-content-type-options"] == "nosniff"
            # and the parcel's delivery note, drawn from its lines
            note = await browser.get(f"/console/store/{van['id']}/delivery-note")
            assert note.status_code == 200, note.text
            assert note.headers["content-type"] == "application/pdf"
            text = PdfReader(io.BytesIO(note.content)).pages[0].extract_text()
            assert "Lieferschein" in text
            assert "VAN-1" in text
            assert "C-400" in text

            # failed documents: the rules that failed, the order, the files, what to do
            async def invalid() -> list[Any]:
                found: list[Any] = (await admin.get("/v1/documents/invalid")).json()
                return found

            failed = await eventually("a failed invoice", invalid)
            page = (await browser.get("/console/documents/invalid")).text
            pages.append(page)
            assert "BR-S-02" in page
            assert f"/console/orders/{failed[0]['order_id']}" in page
            assert "no way to render them again" in page
            # the order's documents link their PDF and XML through the session
            number = await eventually("the order's invoice", lambda: _first_number(admin, plain))
            page = (await browser.get(f"/console/orders/{plain}")).text
            pages.append(page)
            assert f"/console/documents/{number}/pdf" in page
            page = (await browser.get(f"/console/orders/{shipped}")).text
            assert f"/console/store/{van['id']}/delivery-note" in page
            assert f"/console/store/{van['id']}/label" in page
            pdf = await browser.get(f"/console/documents/{number}/pdf")
            assert pdf.status_code == 200
            assert pdf.headers["content-type"] == "application/pdf"
            assert pdf.content.startswith(b"%PDF")
            xml = await browser.get(f"/console/documents/{number}/xml")
            assert xml.headers["content-type"].startswith("application/xml")
            assert (await browser.get(f"/console/documents/{number}/exe")).status_code == 404
            assert (await browser.get("/console/documents/RE-1999-0/pdf")).status_code == 404

            # no page carries the admin token: files come with the session cookie only
            for html in pages:
                assert ADMIN_TOKEN not in html

            # German
            await browser.get("/console/lang/de", next="/console/stock")
            page = (await browser.get("/console/stock")).text
            assert "Letzter Abgleich je Kanal" in page
            assert "Rückstände" in (await browser.get("/console/backorders")).text
            assert "Fehlerhafte Belege" in (await browser.get("/console/documents/invalid")).text

        # without a session: every new page sends to the login
        async with Browser(daemon) as stranger:
            for path in (
                "/console/backorders",
                "/console/stock",
                "/console/documents/invalid",
                f"/console/documents/{number}/pdf",
                "/console/store/transfers-in",
                f"/console/store/{van['id']}/label",
            ):
                response = await stranger.get(path)
                assert response.status_code == 303, path
            # the van's worker gets her own label; another store's worker does not
            async with Browser(daemon) as worker:
                await worker.login(VAN_STAFF_TOKEN)
                assert (await worker.get(f"/console/store/{van['id']}/label")).status_code == 200
            async with Browser(daemon) as other:
                await other.login(STAFF_TOKEN)
                assert (await other.get(f"/console/store/{van['id']}/label")).status_code == 403
                assert (await other.get(f"/console/documents/{number}/pdf")).status_code == 403


async def _first_number(admin: httpx.AsyncClient, order_id: str) -> str | None:
    documents = (await admin.get(f"/v1/orders/{order_id}/documents")).json()["documents"]
    return str(documents[0]["number"]) if documents else None


async def test_store_sees_its_transfers_stock_and_slip_only(tmp_path: Path) -> None:
    async with running_daemon(console_config(tmp_path)) as daemon, daemon.admin() as admin:
        await put_stock(admin, "store-bochum", "PICK-1", 5)
        await put_stock(admin, "store-essen", "MUG-1", 7)
        # picked up in Essen, in stock only in Bochum: a transfer from Bochum to Essen
        collect = await pickup_order(admin, "T-1", "store-essen")

        async def routed() -> list[dict[str, Any]] | None:
            found = await fulfilments_of(admin, collect)
            return found if len(found) == 2 else None

        found = await eventually("the transfer and the pickup", routed)
        transfer = next(f for f in found if f["kind"] == "transfer")
        pickup = next(f for f in found if f["kind"] == "pickup")
        assert transfer["location"] == "store-bochum"
        inbound = (await admin.get("/v1/locations/store-essen/transfers-in")).json()
        assert [t["id"] for t in inbound["transfers"]] == [transfer["id"]]
        assert (await admin.get("/v1/locations/store-bochum/transfers-in")).json()[
            "transfers"
        ] == []
        # without [documents] there is no seller to print on a delivery note
        note = await admin.get(f"/v1/fulfillments/{transfer['id']}/delivery-note")
        assert note.status_code == 404
        assert "documents" in note.text
        assert (await admin.get("/v1/fulfillments/nope/delivery-note")).status_code == 404

        async with Browser(daemon, language="de") as worker:
            await worker.login(STAFF_TOKEN, user="Sabine")
            # what comes in, from where
            page = (await worker.get("/console/store/transfers-in")).text
            assert "Eingehende Umlagerungen" in page
            assert "T-1" in page
            assert "store-bochum" in page
            assert "PICK-1" in page
            assert f"/console/store/{transfer['id']}" not in page  # not hers to open
            assert (
                await worker.get("/console/store/transfers-in", location="store-bochum")
            ).status_code == 403
            assert (await worker.get(f"/console/store/{transfer['id']}")).status_code == 403
            # her shelf only
            page = (await worker.get("/console/stock")).text
            assert "MUG-1" in page
            assert "store-bochum" not in page
            assert "Letzter Abgleich" not in page
            assert (await worker.get("/console/stock", location="store-bochum")).status_code == 403
            # the operator's queues are closed to her
            for path in ("/console/backorders", "/console/documents/invalid"):
                assert (await worker.get(path)).status_code == 403, path
            # translated step buttons; the pickup slip to download
            page = (await worker.get(f"/console/store/{pickup['id']}")).text
            assert ">Annehmen</button>" in page
            assert ">accept</button>" not in page
            assert "Abholschein herunterladen" in page
            slip = await worker.get(f"/console/store/{pickup['id']}/label")
            assert slip.status_code == 200
            assert slip.content.startswith(b"%PDF")

        async with Browser(daemon) as colleague:
            await colleague.login(OTHER_STAFF_TOKEN)
            page = (await colleague.get("/console/store/transfers-in")).text
            assert "No transfer is on its way here." in page
            assert (await colleague.get(f"/console/store/{pickup['id']}/label")).status_code == 403


async def test_stock_page_shows_each_channels_last_reconciliation(
    tmp_path: Path, serve: Serve
) -> None:
    sim = SmartstoreSimulator()
    seeded = sim.seed_catalogue(12, combination_share=0.0, stock_drift=2, seed=5)
    config = await shop_config(tmp_path, serve, sim)
    async with (
        running_daemon(config) as daemon,
        daemon.admin() as admin,
        Browser(daemon) as browser,
    ):
        await browser.login()
        assert "No reconciliation has run" in (await browser.get("/console/stock")).text
        done = await admin.post("/v1/channels/shop/reconcile", params={"dry_run": "true"})
        assert done.status_code == 200, done.text
        page = (await browser.get("/console/stock")).text
        assert "Channel shop" in page
        assert "dry run (nothing changed)" in page
        assert "Unknown in the shop" in page
        assert f"<dd>{len(seeded.truth)}</dd>" in page
        assert "No reconciliation has run" not in page

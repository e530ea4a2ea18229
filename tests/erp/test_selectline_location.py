"""`adapter = "selectline"` locations against a real `somsd run` and the SelectLine simulator
over loopback: a fulfilment becomes a delivery note (a successor of the order's F with exactly
the fulfilment's units), the warehouse ships it in the ERP, and the fulfilment ships in somsd
with the tracking number; the shipment's invoice follows from that same delivery note. Lost
responses and SIGKILLs while notes are posted never double or drop one.
"""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from adapters.selectline.simulator import SelectLineSimulator
from somsd.domain.testing import sample_line
from tests.adapters.conftest import Serve, wait_until
from tests.erp.helpers import (
    BUDGET,
    SELECTLINE_LOCATION,
    erp_section,
    eventually,
    seeded_sim,
    serve_erp,
)
from tests.harness import DaemonProcess, running_daemon
from tests.orders.shop import accept, order_body, webhook_config

pytestmark = pytest.mark.slow


async def location_config(tmp_path: Path, serve: Serve, sim: SelectLineSimulator) -> Path:
    url = await serve_erp(tmp_path, serve, sim)
    return webhook_config(tmp_path, SELECTLINE_LOCATION + erp_section(url))


async def atp_known(daemon: DaemonProcess, admin: httpx.AsyncClient, sku: str) -> None:
    async def known() -> bool | None:
        view = (await admin.get(f"/v1/inventory/{sku}")).json()
        location = view.get("locations", {}).get("wh")
        return True if location and location["as_of"] is not None else None

    await eventually(daemon, f"{sku} counted", known)


async def shipped_fulfilments(admin: httpx.AsyncClient) -> list[dict[str, Any]]:
    response = await admin.get("/v1/fulfillments", params={"location": "wh", "state": "shipped"})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["fulfillments"]
    return items


def stock_polls(sim: SelectLineSimulator) -> int:
    return sum(1 for _, path, _ in sim.requests if path == "/Warehouses/Stocks")


async def atp(admin: httpx.AsyncClient, sku: str) -> int:
    view = (await admin.get(f"/v1/inventory/{sku}")).json()
    return int(view["locations"]["wh"]["atp"])


def labelled(notes: list[Any]) -> int:
    """Delivery notes with their fulfilment's reference."""
    return sum(
        1 for d in notes if d.partner and "/" in (d.partner.BusinessPartnerReferenceNumber or "")
    )


def articles(document: Any) -> list[tuple[str, Decimal]]:
    return [(p.article, p.quantity) for p in document.positions if p.quantity > 0]


async def test_a_fulfilment_is_a_delivery_note_and_the_shipped_note_ships_it(
    tmp_path: Path, serve: Serve
) -> None:
    sim = seeded_sim()
    config = await location_config(tmp_path, serve, sim)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await atp_known(daemon, admin, "MUG-1")
        body = order_body(
            "9001",
            lines=[
                sample_line(quantity=3),
                sample_line(sku="CUP-2", quantity=1, unit_price="7.99"),
            ],
        )
        order_id = await accept(admin, body)
        await wait_until(lambda: labelled(sim.documents_of("L", "9001")) == 1, budget=BUDGET)
        (note,) = sim.documents_of("L", "9001")
        (sales_order,) = sim.documents_of("F", "9001")
        assert note.predecessor == sales_order.key
        assert articles(note) == [
            ("MUG-1", Decimal(3)),
            ("CUP-2", Decimal(1)),
            ("VERSAND", Decimal(1)),
        ]
        assert note.partner is not None
        reference = note.partner.BusinessPartnerReferenceNumber or ""
        assert reference.startswith("9001/")
        assert not sim.documents_of("R", "9001")  # nothing shipped yet
        # The note booked its 3 mugs out of the ERP's stock while somsd still holds them
        # reserved: a later stock poll must not count them twice (8 - 3 sellable, not 2).
        polls = stock_polls(sim)
        await wait_until(lambda: stock_polls(sim) >= polls + 2, budget=BUDGET)
        assert sum(q for (a, _), q in sim.stock.items() if a == "MUG-1") == 5
        assert await atp(admin, "MUG-1") == 5

        # The ERP's warehouse ships it and notes the parcel's tracking number.
        sim.ship_delivery(note.key, "00340434161234567890", carrier="DHL")
        await wait_until(lambda: len(sim.documents_of("R", "9001")) == 1, budget=BUDGET)
        (invoice,) = sim.documents_of("R", "9001")
        assert invoice.predecessor == note.key
        assert articles(invoice) == articles(note)
        assert invoice.totals()[0] == Decimal("3") * Decimal("12.50") + Decimal("7.99") + Decimal(
            "4.90"
        )
        assert len(sim.documents_of("L", "9001")) == 1  # the shipment found the note again

        async def shipped() -> list[dict[str, Any]] | None:
            return await shipped_fulfilments(admin) or None

        (fulfilment,) = await eventually(daemon, "shipped", shipped)
        assert reference == f"9001/{fulfilment['id']}"
        assert fulfilment["tracking_number"] == "00340434161234567890"
        assert fulfilment["carrier"] == "DHL"

        async def settled_atp() -> bool | None:
            return True if await atp(admin, "MUG-1") == 5 else None

        await eventually(daemon, "the shipped units gone once", settled_atp)

        async def recorded() -> list[tuple[str, str]] | None:
            order = (await admin.get(f"/v1/orders/{order_id}")).json()
            found = sorted((d["kind"], d["cause"]) for d in order["erp_documents"])
            return found if len(found) >= 3 else None

        assert await eventually(daemon, "documents recorded", recorded) == sorted(
            [
                ("F", "order"),
                ("L", f"shipment:{fulfilment['id']}"),
                ("R", f"shipment:{fulfilment['id']}"),
            ]
        )
        async with httpx.AsyncClient(base_url=daemon.metrics) as metrics:
            text = (await metrics.get("/metrics")).text
        assert 'somsd_erp_deliveries_shipped_total{erp="sl",location="wh"} 1.0' in text
        assert sim.logins == 1  # the location used the ERP section's session


async def test_sigkills_and_lost_responses_never_double_or_drop_a_delivery_note(
    tmp_path: Path, serve: Serve
) -> None:
    # A killed daemon never logs out: the server frees its seat after the idle timeout.
    sim = seeded_sim(lost_response_rate=0.3, session_timeout=0.5)
    sim.set_stock("MUG-1", "200", 1000)
    config = await location_config(tmp_path, serve, sim)
    numbers = [str(9100 + i) for i in range(15)]
    for round_ in range(3):
        async with running_daemon(config) as daemon, daemon.admin() as admin:
            await atp_known(daemon, admin, "MUG-1")
            for number in numbers[round_ * 5 : (round_ + 1) * 5]:
                await accept(admin, order_body(number))
            await trio.sleep(0.3)  # in the middle of posting
            daemon.signal(signal.SIGKILL)
            await daemon.wait_exit()

    def notes_of_every_order() -> bool:
        contracts = [d.partner.BusinessPartnerContract for d in sim.documents_of("L") if d.partner]
        labelled = all(
            d.partner and "/" in (d.partner.BusinessPartnerReferenceNumber or "")
            for d in sim.documents_of("L")
        )
        return sorted(contracts) == sorted(numbers) and labelled

    async with running_daemon(config) as daemon:
        await wait_until(notes_of_every_order, budget=BUDGET * 2)
        # The warehouse ships everything while the answers still get lost, and somsd is killed.
        sim.knobs.lost_response_rate = 0.3
        for note in sim.documents_of("L"):
            sim.ship_delivery(note.key, f"TRK{note.number}")
        await trio.sleep(0.3)
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    sim.knobs.lost_response_rate = 0.0
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await wait_until(lambda: len(sim.documents_of("R")) >= len(numbers), budget=BUDGET * 2)

        async def all_shipped() -> bool | None:
            return True if len(await shipped_fulfilments(admin)) >= len(numbers) else None

        await eventually(daemon, "all shipped", all_shipped)
        await trio.sleep(0.5)  # anything still retrying would double now
        shipped = await shipped_fulfilments(admin)
        assert sorted(f["tracking_number"] for f in shipped) == sorted(
            f"TRK{d.number}" for d in sim.documents_of("L")
        )
    notes = sim.documents_of("L")
    assert len(notes) == len(numbers), [(d.key, d.partner) for d in notes]
    assert all(articles(d) == [("MUG-1", Decimal(2)), ("VERSAND", Decimal(1))] for d in notes)
    invoices = sim.documents_of("R")
    assert len(invoices) == len(numbers)
    assert sorted(d.predecessor or "" for d in invoices) == sorted(d.key for d in notes)


STORE = """
[[location]]
name = "store"
kind = "store"
capabilities = ["pickup"]
address = { name = "Store Berlin", street = "Alexanderplatz 2", zip = "10178", city = "Berlin" }
"""


async def test_a_transfer_to_a_pickup_store_is_the_note_the_collection_invoices(
    tmp_path: Path, serve: Serve
) -> None:
    sim = seeded_sim()
    config = await location_config(tmp_path, serve, sim)
    config.write_text(config.read_text() + STORE)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await atp_known(daemon, admin, "MUG-1")
        empty = await admin.put("/v1/locations/store/stock", json=[{"sku": "MUG-1", "on_hand": 0}])
        assert empty.status_code == 200, empty.text
        body = order_body(
            "9301", shipping_method="pickup", pickup_location="store", shipping_price="0.00"
        )
        order_id = await accept(admin, body)
        await wait_until(lambda: labelled(sim.documents_of("L", "9301")) == 1, budget=BUDGET)
        (note,) = sim.documents_of("L", "9301")
        assert articles(note) == [("MUG-1", Decimal(2))]
        # Booked out in the ERP, reserved in somsd: counted once (8 - 2 sellable).
        polls = stock_polls(sim)
        await wait_until(lambda: stock_polls(sim) >= polls + 2, budget=BUDGET)
        assert await atp(admin, "MUG-1") == 6

        sim.ship_delivery(note.key, "TRK-TRANSFER")
        detail = (await admin.get(f"/v1/orders/{order_id}")).json()
        (pickup,) = [f for f in detail["fulfilment"]["fulfilments"] if f["kind"] == "pickup"]
        assert note.partner is not None
        assert note.partner.BusinessPartnerReferenceNumber == f"9301/{pickup['id']}"

        async def step(name: str, **body: str) -> bool | None:
            response = await admin.post(f"/v1/fulfillments/{pickup['id']}/{name}", json=body)
            return True if response.status_code == 200 else None

        for name in ("accept", "pick", "ready"):  # ready once the transfer left the warehouse
            await eventually(daemon, name, lambda name=name: step(name))
        detail = (await admin.get(f"/v1/orders/{order_id}")).json()
        (pickup,) = [f for f in detail["fulfilment"]["fulfilments"] if f["kind"] == "pickup"]
        assert await step("picked-up", pickup_code=pickup["pickup_code"])

        await wait_until(lambda: len(sim.documents_of("R", "9301")) == 1, budget=BUDGET)
        (invoice,) = sim.documents_of("R", "9301")
        assert invoice.predecessor == note.key
        assert articles(invoice) == [("MUG-1", Decimal(2))]
        assert len(sim.documents_of("L", "9301")) == 1

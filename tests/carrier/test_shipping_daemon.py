"""Shipping through a real `somsd run`: DHL simulator over HTTP, a label printer over TCP."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import trio

from adapters.dhl.simulator import SHIPPING_PREFIX, DhlSimulator
from adapters.ownfleet import own_fleet_number
from somsd.domain.order import Address
from tests.adapters.conftest import Serve
from tests.carrier.conftest import FakeZebra
from tests.harness import DaemonProcess, pin_api_port, running_daemon
from tests.orders.shop import (
    accept,
    order_body,
    sample_value,
    scrape,
    somsd_cli,
    webhook_config,
)

pytestmark = pytest.mark.slow

SKU = "MUG-1"
BERLIN = Address(name="Max Muster", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE")


def shipping_config(tmp_path: Path, dhl_url: str, sim: DhlSimulator, *, printer: str = "") -> Path:
    (tmp_path / "dhl.key").write_text(sim.api_key + "\n")
    (tmp_path / "dhl.password").write_text(sim.password + "\n")
    label = f'label_format = "zpl"\nlabel_printer = "{printer}"' if printer else ""
    return webhook_config(
        tmp_path,
        f"""
[[location]]
name = "wh-1"
adapter = "manual"
lat = 51.51
lon = 7.47
ships_to = ["DE"]
carriers = ["dhl"]
sender = {{ name = "Versand", street = "Hafenstr. 1", zip = "44147", city = "Dortmund" }}
billing_numbers = {{ V01PAK = "33333333330102" }}
item_weights_grams = {{ {SKU} = 350 }}
{label}

[[carrier]]
name = "dhl"
kind = "dhl-parcel-de"
url = "{dhl_url}{SHIPPING_PREFIX}"
tracking_url = "{dhl_url}/track"
api_key_file = "dhl.key"
user = "{sim.user}"
password_file = "dhl.password"
tracking_interval = "1s"
""",
    )


async def eventually(what: str, check: Any, *, budget: float = 30.0) -> Any:
    """The daemon works after its answers (outbox, pollers) in another process: poll, bounded."""
    with trio.fail_after(budget):
        for _ in range(int(budget / 0.05)):
            found = await check()
            if found:
                return found
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def stock(admin: httpx.AsyncClient, units: int = 100) -> None:
    response = await admin.put("/v1/locations/wh-1/stock", json=[{"sku": SKU, "on_hand": units}])
    assert response.status_code == 200, response.text


async def order_of(admin: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await admin.get(f"/v1/orders/{order_id}")
    assert response.status_code == 200, response.text
    detail: dict[str, Any] = response.json()
    return detail


async def fulfilment_of(admin: httpx.AsyncClient, order_id: str) -> dict[str, Any] | None:
    found = (await order_of(admin, order_id))["fulfilment"]["fulfilments"]
    return found[0] if found else None


async def pack_until_shipped(
    admin: httpx.AsyncClient, order_id: str, fulfilment_id: str
) -> dict[str, Any]:
    """Pack the parcel; the fulfilment once shipped with its label (or delivered already)."""
    packed = await admin.post(f"/v1/fulfillments/{fulfilment_id}/pack")
    assert packed.status_code == 200, packed.text

    async def shipped() -> dict[str, Any] | None:
        found = await fulfilment_of(admin, order_id)
        return found if found and found["state"] in ("shipped", "delivered") else None

    found: dict[str, Any] = await eventually("shipped", shipped)
    return found


async def place(daemon: DaemonProcess, external_id: str, **variations: Any) -> str:
    async with httpx.AsyncClient(base_url=daemon.api) as shop:
        body = order_body(external_id, **variations)
        return await accept(shop, body)


async def test_intake_to_delivered_with_one_label_printed(
    tmp_path: Path, serve: Serve, zebra: FakeZebra
) -> None:
    """Validated at intake, packed -> one ZPL label bought and printed, tracked to delivered."""
    sim = DhlSimulator()
    url, _ = await serve(sim)
    config = shipping_config(tmp_path, url, sim, printer=f"tcp://127.0.0.1:{zebra.port}")
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin)
        order_id = await place(daemon, "ship-1", shipping_address=BERLIN)
        fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))

        async def validated() -> bool:
            return ("POST", "/orders") in sim.requests

        await eventually("the intake dry run", validated)
        assert sim.created == 0
        fulfilment = await pack_until_shipped(admin, order_id, fulfilment["id"])
        tracking = fulfilment["tracking_number"]
        [shipment] = sim.live_shipments
        assert tracking == shipment.number
        assert shipment.reference == fulfilment["id"]
        with trio.fail_after(10):
            while not zebra.jobs:
                await zebra.changed.wait()
        [job] = zebra.jobs
        text = job.decode()
        assert text.startswith("^XA")
        assert text.rstrip().endswith("^XZ")
        assert f"^FD{tracking}^FS" in text
        label = await admin.get(f"/v1/fulfillments/{fulfilment['id']}/label")
        assert label.status_code == 200
        assert label.headers["content-type"].startswith("application/zpl")
        assert label.content == job

        sim.advance(sim.knobs.deliver_after + 1)

        async def delivered() -> dict[str, Any] | None:
            detail = await order_of(admin, order_id)
            state = detail["fulfilment"]["fulfilments"][0]["state"]
            return detail if state == "delivered" else None

        detail = await eventually("delivered", delivered)
        assert detail["status"] == "complete"
        assert sim.created == 1
        assert len(zebra.jobs) == 1
        samples = await scrape(daemon)
        labels = partial(sample_value, samples, "somsd_carrier_labels_total", carrier="dhl")
        assert labels(outcome="bought") == 1
        assert labels(outcome="reconciled") == 0
        assert sample_value(samples, "somsd_labels_printed_total", location="wh-1") == 1
        valid = sample_value(
            samples, "somsd_carrier_validations_total", carrier="dhl", outcome="valid"
        )
        assert valid == 1
        delivered = sample_value(
            samples, "somsd_carrier_tracking_polls_total", carrier="dhl", state="delivered"
        )
        assert delivered >= 1


async def test_a_refused_address_holds_the_order_until_corrected(
    tmp_path: Path, serve: Serve
) -> None:
    """DHL's dry run refuses the street; the hold carries DHL's words; the fix buys the label."""
    sim = DhlSimulator()
    url, _ = await serve(sim)
    config = shipping_config(tmp_path, url, sim)
    no_number = msgspec.structs.replace(BERLIN, street="Hauptstrasse")
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin)
        order_id = await place(daemon, "bad-1", shipping_address=no_number)

        async def held() -> dict[str, Any] | None:
            detail = await order_of(admin, order_id)
            return detail if detail["status"] == "on-hold" else None

        detail = await eventually("held", held)
        [reason] = detail["hold_reasons"]
        assert reason["code"] == "address_incomplete"
        assert "Please enter a house number" in reason["message"]
        assert reason["message"].startswith("DHL: ")

        fixed = await admin.post(
            f"/v1/orders/{order_id}/address",
            json={"shipping_address": msgspec.to_builtins(BERLIN), "reason": "called customer"},
        )
        assert fixed.status_code == 200, fixed.text
        assert fixed.json()["status"] != "on-hold"
        fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))
        packed = await admin.post(f"/v1/fulfillments/{fulfilment['id']}/pack")
        assert packed.status_code == 200, packed.text

        async def shipped() -> dict[str, Any] | None:
            found = await fulfilment_of(admin, order_id)
            return found if found and found["state"] == "shipped" else None

        fulfilment = await eventually("shipped", shipped)
        [shipment] = sim.live_shipments
        assert fulfilment["tracking_number"] == shipment.number
        label = await admin.get(f"/v1/fulfillments/{fulfilment['id']}/label")
        assert label.content.startswith(b"%PDF-")
        assert (await order_of(admin, order_id))["status"] != "on-hold"


async def test_sigkill_and_lost_answers_buy_each_label_exactly_once(
    tmp_path: Path, serve: Serve
) -> None:
    """Labels bought slowly, some answers lost, the daemon SIGKILLed mid-way and restarted:
    every packed parcel has exactly one label, and it is the one somsd recorded."""
    # More parcels than the carrier buys at once (16), each answer slow: the kill comes with
    # purchases in flight and others not started.
    parcels = 24
    sim = DhlSimulator()
    sim.knobs.latency = 1.0
    sim.knobs.lose_next = 3
    url, _ = await serve(sim)
    config = shipping_config(tmp_path, url, sim)
    order_ids: list[str] = []
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin)
        for n in range(parcels):
            order_ids.append(await place(daemon, f"kill-{n}", shipping_address=BERLIN))
        for order_id in order_ids:
            fulfilment = await eventually("routed", lambda o=order_id: fulfilment_of(admin, o))
            packed = await admin.post(f"/v1/fulfillments/{fulfilment['id']}/pack")
            assert packed.status_code == 200, packed.text

        async def some_bought() -> bool:
            return sim.created >= 1

        await eventually("some labels bought", some_bought)
        daemon.process.kill()  # SIGKILL: no drain, outbox entries in flight
        await daemon.process.wait()
    bought_before_restart = sim.created
    assert bought_before_restart < parcels
    sim.knobs.latency = 0.0
    async with running_daemon(config) as daemon, daemon.admin() as admin:

        async def all_shipped() -> list[dict[str, Any]] | None:
            found = [await fulfilment_of(admin, order_id) for order_id in order_ids]
            # Tracking advances every second: a parcel shipped early may be delivered already.
            done = [f for f in found if f and f["state"] in ("shipped", "delivered")]
            return done if len(done) == parcels else None

        # Generous: retries after the restart wait out the dispatcher's backoff (1, 2, 4 ... s).
        shipped = await eventually("every parcel shipped", all_shipped, budget=120)
    by_reference: dict[str, list[str]] = {}
    for shipment in sim.shipments.values():
        by_reference.setdefault(shipment.reference or "", []).append(shipment.number)
    assert sim.knobs.lose_next == 0  # three answers were lost after DHL bought the label
    assert sim.created == parcels  # no second label for any parcel
    assert {f["id"]: [f["tracking_number"]] for f in shipped} == by_reference


async def test_a_lost_label_that_cannot_be_ruled_out_waits_for_the_operator(
    tmp_path: Path, serve: Serve
) -> None:
    """DHL's manifest lists closed shipments only (the SPEC's other reading): the label whose
    answer was lost is invisible, so somsd buys nothing more until the operator, having
    cancelled the orphan in DHL's portal, rules it out; then exactly one label is live."""
    sim = DhlSimulator()
    sim.knobs.manifest_lists_open = False
    sim.knobs.lose_next = 1
    url, _ = await serve(sim)
    config = pin_api_port(shipping_config(tmp_path, url, sim))
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin)
        order_id = await place(daemon, "unknown-1", shipping_address=BERLIN)
        fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))
        fulfilment_id = fulfilment["id"]
        early = await admin.post(
            f"/v1/fulfillments/{fulfilment_id}/label/rule-out", json={"reason": "checked"}
        )
        assert early.status_code == 404, early.text  # no purchase tried yet
        assert (await admin.post(f"/v1/fulfillments/{fulfilment_id}/pack")).status_code == 200

        async def inconclusive() -> bool:
            samples = await scrape(daemon)
            name = "somsd_carrier_labels_total"
            return sample_value(samples, name, carrier="dhl", outcome="inconclusive") >= 2

        await eventually("two lookups that cannot rule the label out", inconclusive)
        [orphan] = sim.live_shipments
        assert sim.created == 1  # retried lookups, never a second purchase
        assert (await fulfilment_of(admin, order_id) or {})["state"] == "packed"

        rule_out = f"/v1/fulfillments/{fulfilment_id}/label/rule-out"
        for body, status in (
            (b"{", 400),
            (b'{"reason": "  "}', 422),
            (b'{"reason": "x", "extra": 1}', 422),
        ):
            refused = await admin.post(rule_out, content=body)
            assert refused.status_code == status, refused.text
        for strange in ("x" * 5000, "f-üß-1"):
            missing = await admin.post(
                f"/v1/fulfillments/{strange}/label/rule-out", json={"reason": "checked"}
            )
            assert missing.status_code == 404, missing.text
        orphan.deleted = True  # the operator cancels it in DHL's portal
        ruled = await somsd_cli(
            *("fulfilments", "rule-out-label", fulfilment_id, "-c", str(config)),
            *("--reason", "portal: orphan label cancelled"),
        )
        assert ruled.returncode == 0, ruled.stderr
        assert ruled.stdout.decode() == f"{fulfilment_id}: 1 unanswered attempt(s) ruled out\n"

        async def shipped() -> dict[str, Any] | None:
            found = await fulfilment_of(admin, order_id)
            return found if found and found["state"] in ("shipped", "delivered") else None

        fulfilment = await eventually("shipped", shipped)
        [live] = sim.live_shipments
        assert fulfilment["tracking_number"] == live.number != orphan.number
        again = await admin.post(rule_out, json={"reason": "twice"})
        assert again.status_code == 409, again.text
    assert sim.created == 2


async def test_a_failed_delivery_holds_the_order_once(tmp_path: Path, serve: Serve) -> None:
    sim = DhlSimulator()
    sim.knobs.deliver_after = 3600.0  # only the test's `advance` moves the parcel on
    url, _ = await serve(sim)
    config = shipping_config(tmp_path, url, sim)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin)
        order_id = await place(daemon, "fail-1", shipping_address=BERLIN, payment_method="invoice",
                               payment_status="pending")  # fmt: skip
        fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))
        await admin.post(f"/v1/fulfillments/{fulfilment['id']}/pack")

        async def shipped() -> dict[str, Any] | None:
            found = await fulfilment_of(admin, order_id)
            return found if found and found["state"] == "shipped" else None

        fulfilment = await eventually("shipped", shipped)
        sim.knobs.failing.add(fulfilment["tracking_number"])
        sim.advance(sim.knobs.deliver_after + 1)

        async def held() -> dict[str, Any] | None:
            detail = await order_of(admin, order_id)
            return detail if detail["status"] == "on-hold" else None

        detail = await eventually("held", held)
        [reason] = detail["hold_reasons"]
        assert reason["code"] == "delivery_failed"
        assert fulfilment["tracking_number"] in reason["message"]
        assert "could not be found" in reason["message"]
        released = await admin.post(f"/v1/orders/{order_id}/release", json={"reason": "resend"})
        assert released.status_code == 200, released.text
        polls = sim.requests.count(("GET", "/track/shipments"))

        async def tracked_twice_more() -> bool:
            return sim.requests.count(("GET", "/track/shipments")) >= polls + 2

        # Two more tracking answers saying "failure": the same failure does not hold again.
        await eventually("two more tracking polls", tracked_twice_more)
        assert (await order_of(admin, order_id))["status"] != "on-hold"


async def test_own_fleet_labels_are_drawn_by_somsd(tmp_path: Path, zebra: FakeZebra) -> None:
    """A carrier without an API: packing draws our own ZPL label, prints it, ships."""
    config = webhook_config(
        tmp_path,
        f"""
[[location]]
name = "wh-1"
adapter = "manual"
lat = 51.51
lon = 7.47
ships_to = ["DE"]
carriers = ["city-van"]
sender = {{ name = "Versand", street = "Hafenstr. 1", zip = "44147", city = "Dortmund" }}
label_format = "zpl"
label_printer = "tcp://127.0.0.1:{zebra.port}"

[[carrier]]
name = "city-van"
kind = "own-fleet"
""",
    )
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin)
        order_id = await place(daemon, "van-1", shipping_address=BERLIN)
        fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))
        await admin.post(f"/v1/fulfillments/{fulfilment['id']}/pack")
        with trio.fail_after(10):
            while not zebra.jobs:
                await zebra.changed.wait()

        async def shipped() -> dict[str, Any] | None:
            found = await fulfilment_of(admin, order_id)
            return found if found and found["state"] == "shipped" else None

        found = await eventually("shipped", shipped)
        assert found["tracking_number"] == own_fleet_number(fulfilment["id"])
        text = zebra.jobs[0].decode()
        assert f"^FD{found['tracking_number']}^FS" in text
        assert "^FDCity Van^FS" in text


async def test_a_label_bought_for_a_canceled_order_is_cancelled_at_dhl(
    tmp_path: Path, serve: Serve
) -> None:
    """The order is canceled while DHL is still answering: the label is deleted there."""
    sim = DhlSimulator()
    url, _ = await serve(sim)
    config = shipping_config(tmp_path, url, sim)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin)
        order_id = await place(daemon, "cancel-1", shipping_address=BERLIN)
        fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))

        async def validated() -> bool:
            return ("POST", "/orders") in sim.requests

        await eventually("the intake dry run", validated)
        sim.knobs.latency = 1.0
        await admin.post(f"/v1/fulfillments/{fulfilment['id']}/pack")

        async def buying() -> bool:
            return sim.requests.count(("POST", "/orders")) >= 2

        await eventually("the label purchase under way", buying)
        canceled = await admin.post(
            f"/v1/orders/{order_id}/cancel", json={"reason": "changed mind"}
        )
        assert canceled.status_code == 200, canceled.text

        async def deleted() -> bool:
            return sim.created == 1 and all(s.deleted for s in sim.shipments.values())

        await eventually("the label deleted at DHL", deleted)
        found = await fulfilment_of(admin, order_id)
        assert found is not None
        assert found["state"] == "canceled"
        samples = await scrape(daemon)
        assert (
            sample_value(samples, "somsd_carrier_labels_total", carrier="dhl", outcome="canceled")
            == 1
        )


async def test_a_pickup_fulfilment_has_a_pickup_slip(tmp_path: Path) -> None:
    config = webhook_config(
        tmp_path,
        """
[[location]]
name = "store-1"
kind = "store"
adapter = "manual"
lat = 51.51
lon = 7.47
ships_to = ["DE"]
capabilities = ["ship", "pickup"]
""",
    )
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        response = await admin.put("/v1/locations/store-1/stock", json=[{"sku": SKU, "on_hand": 5}])
        assert response.status_code == 200, response.text
        order_id = await place(
            daemon, "pickup-1", shipping_method="pickup", pickup_location="store-1",
            shipping_price="0.00",
        )  # fmt: skip
        fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))
        slip = await admin.get(f"/v1/fulfillments/{fulfilment['id']}/label")
        assert slip.status_code == 200, slip.text
        assert slip.headers["content-type"] == "application/pdf"
        assert slip.content.startswith(b"%PDF-")
        missing = await admin.get("/v1/fulfillments/f-nope/label")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "label_not_found"

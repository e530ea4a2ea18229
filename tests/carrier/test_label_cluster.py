"""Carrier labels live in the event store's database: two real `somsd run` members on one
PostgreSQL store, the label bought by the member holding the carrier's lease, fetched from the
other, and still there after the buyer is gone."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest
import trio

from adapters.dhl.simulator import DhlSimulator
from tests.adapters.conftest import Serve
from tests.carrier.test_shipping_daemon import (
    BERLIN,
    eventually,
    fulfilment_of,
    pack_until_shipped,
    place,
    shipping_config,
    stock,
)
from tests.cluster.members import cluster_tables
from tests.harness import DaemonProcess, next_log_line, running_daemon

pytestmark = pytest.mark.slow

CARRIER_DUTY = "carrier/dhl"


def member_config(tmp_path: Path, dsn: str, member: str, dhl_url: str, sim: DhlSimulator) -> Path:
    directory = tmp_path / member
    directory.mkdir()
    config = shipping_config(directory, dhl_url, sim)
    config.write_text(config.read_text() + cluster_tables(directory, dsn, member))
    return config


def holds(daemon: DaemonProcess, duty: str) -> bool:
    return any(e.get("event") == "lease_acquired" and e.get("duty") == duty for e in daemon.log)


async def test_a_label_bought_on_one_member_is_served_by_the_other_after_the_buyer_died(
    tmp_path: Path, serve: Serve, pg_dsn: str
) -> None:
    sim = DhlSimulator()
    url, _ = await serve(sim)
    async with contextlib.AsyncExitStack() as stack:
        members = {
            name: await stack.enter_async_context(
                running_daemon(member_config(tmp_path, pg_dsn, name, url, sim))
            )
            for name in ("a", "b")
        }
        every = list(members.values())
        with trio.fail_after(15):
            while not any(holds(d, CARRIER_DUTY) for d in every):
                await next_log_line(every)
        buyer = next(name for name, d in members.items() if holds(d, CARRIER_DUTY))
        other = next(name for name in members if name != buyer)
        async with members[other].admin() as admin:
            await stock(admin)
            order_id = await place(members[other], "cluster-label-1", shipping_address=BERLIN)
            fulfilment = await eventually("routed", lambda: fulfilment_of(admin, order_id))
            fulfilment = await pack_until_shipped(admin, order_id, fulfilment["id"])
            [shipment] = sim.live_shipments
            assert sim.created == 1
            bought = [e for e in members[buyer].log if e.get("event") == "label_stored"]
            assert [e["fulfilment_id"] for e in bought] == [fulfilment["id"]]
            assert not any(e.get("event") == "label_stored" for e in members[other].log)
            assert not (tmp_path / buyer / "data" / "labels").exists()  # nothing on the disk

            label = await admin.get(f"/v1/fulfillments/{fulfilment['id']}/label")
            assert label.status_code == 200, label.text
            assert label.headers["content-type"].startswith("application/pdf")
            assert label.content.startswith(b"%PDF-")
            assert label.headers["x-tracking-number"] == shipment.number

            members[buyer].signal(signal.SIGKILL)
            await members[buyer].process.wait()
            again = await admin.get(f"/v1/fulfillments/{fulfilment['id']}/label")
            assert again.status_code == 200, again.text
            assert again.content == label.content

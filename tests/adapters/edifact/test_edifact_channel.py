"""A `kind = "edifact"` channel in a real `somsd run`, driven by the partner simulator: its
ORDERS become an order answered by ORDRSP; the invoice and the shipment go out as INVOIC and
DESADV, which the partner reads back and checks (counts, control references never repeating,
GLNs, order numbers, quantities, totals); every fault it injects is quarantined with the
segment and reason, and a half-written upload is left alone until it is renamed."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import trio

from adapters.edifact.simulator import FAULTS, EdifactPartner
from tests.adapters.edifact.test_edifact import BUYER, DELIVERY_PARTY, LINES, SUPPLIER
from tests.harness import running_daemon, write_daemon_config

pytestmark = pytest.mark.slow

BUDGET = 30.0  # seconds for files to appear, real processes on a busy 2-core box


def channel(folder: Path) -> str:
    return f"""
[[channel]]
name = "edi"
kind = "edifact"
folder = "{folder}"
gln = "{SUPPLIER}"
poll_interval = "0.2s"

[[channel.partners]]
gln = "{BUYER}"
name = "Handelshaus Nord GmbH"
email = "edi@handelshaus.example"
street = "Lagerweg 3"
zip = "28195"
city = "Bremen"
"""


async def test_orders_in_ordrsp_invoic_desadv_out_and_faults_quarantined(tmp_path: Path) -> None:
    folder = tmp_path / "edi"
    partner = EdifactPartner(folder, gln=BUYER, supplier=SUPPLIER, delivery_party=DELIVERY_PARTY)
    async with running_daemon(write_daemon_config(tmp_path, channel(folder))) as daemon:
        sent = partner.drop_orders("PO-4711", LINES)
        with trio.fail_after(BUDGET):
            (ordrsp,) = await partner.wait_for("ORDRSP", order_number="PO-4711")
            await partner.wait_processed(sent.file)
        assert [(line.article, line.quantity) for line in ordrsp.lines] == [
            ("4006381333931", 3),
            ("4006381333948", 1),
        ]

        faults = {fault: partner.drop_fault(fault) for fault in FAULTS}
        with trio.fail_after(BUDGET):
            for fault, dropped in faults.items():
                if fault != "partial":
                    reason = await partner.wait_failed(dropped.file)
                    assert dropped.reason in reason, (fault, reason)
                    assert reason.startswith("segment "), reason
        partial = faults["partial"]
        assert partial.file not in partner.processed() | set(partner.failed())
        assert (folder / "in" / f".{partial.file}.part").exists()
        partner.complete(partial)  # the rename: now it is a whole file and is taken
        with trio.fail_after(BUDGET):
            await partner.wait_processed(partial.file)
            await partner.wait_for("ORDRSP", order_number=partial.order_number)

        async with daemon.admin() as admin:
            listed = await admin.get("/v1/orders", params={"channel": "edi"})
            orders = {order["number"]: order for order in listed.json()["orders"]}
            assert sorted(orders) == sorted([partial.order_number, "PO-4711"]), orders
            order_id = orders["PO-4711"]["order_id"]
            issued = await admin.post(f"/v1/orders/{order_id}/invoice")
            assert issued.status_code == 200, issued.text
            with trio.fail_after(BUDGET):
                (invoic,) = await partner.wait_for("INVOIC", order_number="PO-4711")
            shipped = await admin.post(
                f"/v1/orders/{order_id}/shipments",
                json={
                    "lines": [{"line": 0, "quantity": 3}, {"line": 1, "quantity": 1}],
                    "shipment_id": "S-1",
                },
            )
            assert shipped.status_code == 200, shipped.text
            with trio.fail_after(BUDGET):
                (desadv,) = await partner.wait_for("DESADV", order_number="PO-4711")
        assert daemon.process.returncode is None, daemon.tail()

    # 3 x 10.00 net at 19 % -> 11.90 gross each, 1 x 11.21 net at 7 % -> 11.99 gross.
    assert invoic.totals["77"] == Decimal("47.69")
    assert invoic.document_code == "380"
    assert [(line.article, line.quantity) for line in desadv.lines] == [("MUG-1", 3), ("BOOK-1", 1)]
    assert len({item.control_reference for item in partner.received}) == len(partner.received)
    partner.assert_clean()
    assert partner.summary()["orders_answered"] == 2

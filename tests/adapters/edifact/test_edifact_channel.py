"""A `kind = "edifact"` channel in a real `somsd run`: ORDERS from the drop folder become an
order answered by ORDRSP; its invoice and its shipment go out as INVOIC and DESADV; a bad file
lands in failed/ with its reason; every interchange has its own control reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from adapters.edifact.eancom import check_structure, messages_of, parse_interchange
from tests.adapters.edifact.test_edifact import BUYER, ORDERS, SUPPLIER
from tests.harness import DaemonProcess, running_daemon, write_daemon_config

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


async def wait_file(daemon: DaemonProcess, folder: Path, pattern: str) -> Path:
    with trio.fail_after(BUDGET):
        while True:
            found = await trio.to_thread.run_sync(lambda: sorted(folder.glob(pattern)))
            if found:
                return found[0]
            assert daemon.process.returncode is None, daemon.tail()
            # Another process writes the file: look again shortly.
            await trio.sleep(0.1)


def read_back(path: Path, kind: str) -> tuple[str, list[object]]:
    segments = parse_interchange(path.read_text(encoding="latin-1"))
    ((start, message),) = messages_of(segments)
    check_structure(kind, start, message)
    return str(segments[0].elements[4]), message


async def test_orders_in_ordrsp_invoic_desadv_out(tmp_path: Path) -> None:
    folder = tmp_path / "edi"
    async with running_daemon(write_daemon_config(tmp_path, channel(folder))) as daemon:
        (folder / "in").mkdir(parents=True, exist_ok=True)
        (folder / "in" / ".orders-1.edi.tmp").write_text(ORDERS)
        (folder / "in" / ".orders-1.edi.tmp").rename(folder / "in" / "orders-1.edi")
        (folder / "in" / "broken.edi").write_text(ORDERS.replace("UNT+21+1'", "UNT+9+1'"))
        ordrsp = await wait_file(daemon, folder / "out", "ordrsp-*.edi")
        failed_reason = await wait_file(daemon, folder / "failed", "broken.edi.reason.txt")
        assert "(UNT)" in failed_reason.read_text()
        assert (folder / "processed" / "orders-1.edi").exists()
        references = {read_back(ordrsp, "ORDRSP")[0]}

        async with daemon.admin() as admin:
            orders = (await admin.get("/v1/orders", params={"channel": "edi"})).json()["orders"]
            (order,) = orders
            order_id = order["order_id"]
            issued = await admin.post(f"/v1/orders/{order_id}/invoice")
            assert issued.status_code == 200, issued.text
            invoic = await wait_file(daemon, folder / "out", "invoic-*.edi")
            shipped = await admin.post(
                f"/v1/orders/{order_id}/shipments",
                json={
                    "lines": [{"line": 0, "quantity": 3}, {"line": 1, "quantity": 1}],
                    "shipment_id": "S-1",
                },
            )
            assert shipped.status_code == 200, shipped.text
            desadv = await wait_file(daemon, folder / "out", "desadv-*.edi")
        for path, kind in ((invoic, "INVOIC"), (desadv, "DESADV")):
            reference, _ = read_back(path, kind)
            assert reference not in references
            references.add(reference)
        _, message = read_back(invoic, "INVOIC")
        totals = {s.elements[0][0]: s.elements[0][1] for s in message if s.tag == "MOA"}  # type: ignore[attr-defined]
        # 3 x 10.00 net at 19 % -> 11.90 gross each, 1 x 11.21 net at 7 % -> 11.99 gross.
        assert totals["77"] == "47.69"

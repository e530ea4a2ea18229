"""A real `somsd run` with one supplier inbox: the corpus's suppliers as master data, their
purchase orders and goods receipts as CSV, the example templates."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import trio

from somsd.supplier_invoices.model import GoodsReceiptLine, PurchaseOrderLine
from tests.harness import write_daemon_config
from tests.supplier_invoices.corpus import SUPPLIERS, TEMPLATE_DIR

DECISION_BUDGET = 90.0  # seconds for all invoices of a test: real processes on a busy box


def inbox_config(
    directory: Path, *, poll: str = "100ms", inbox_keys: str = "", extra: str = ""
) -> Path:
    """`inbox_keys`: more keys of the `[[supplier_inbox]]`; `extra`: more sections."""
    shutil.copytree(TEMPLATE_DIR, directory / "templates", dirs_exist_ok=True)
    (directory / "inbox").mkdir(exist_ok=True)
    suppliers = "".join(
        f"""
[[supplier_inbox.supplier]]
number = "{s.record.number}"
name = "{s.record.name}"
vat_id = "{s.record.vat_id}"
ibans = ["{s.record.ibans[0]}"]
gl_account = "3400"
cost_centre = "{s.record.cost_centre}"
email = "{s.record.email}"
phone = "{s.record.phone}"
contact_name = "{s.record.contact_name}"
street = "{s.record.street}"
zip = "{s.record.zip}"
city = "{s.record.city}"
"""
        for s in SUPPLIERS
    )
    return write_daemon_config(
        directory,
        f"""
[[supplier_inbox]]
name = "main"
folder = "inbox"
template_dir = "templates"
poll_interval = "{poll}"
purchase_orders_csv = "purchase-orders.csv"
goods_receipts_csv = "goods-receipts.csv"
price_tolerance_percent = 2
price_tolerance_cents = 5
buyer_company = "Muster Handel GmbH"
buyer_name = "Einkauf"
buyer_street = "Industriestr. 5"
buyer_zip = "20095"
buyer_city = "Hamburg"
buyer_email = "einkauf@muster.example"
company_code = "1000"
{inbox_keys}
{suppliers}
[[supplier_inbox.rule]]
supplier = "70003"
gl_account = "3300"
cost_centre = "200"
{extra}
""",
    )


def write_master_data(
    directory: Path, orders: list[PurchaseOrderLine], receipts: list[GoodsReceiptLine]
) -> None:
    lines = ["order;article;quantity;net_price;supplier"]
    lines += [
        f"{o.order};{o.article};{o.quantity};{str(o.net_price).replace('.', ',')};{o.supplier}"
        for o in orders
    ]
    (directory / "purchase-orders.csv").write_text("\n".join(lines) + "\n")
    lines = ["order;article;quantity"] + [f"{r.order};{r.article};{r.quantity}" for r in receipts]
    (directory / "goods-receipts.csv").write_text("\n".join(lines) + "\n")


async def wait_status(
    admin: httpx.AsyncClient, ids: list[str], wanted: set[str], budget: float = DECISION_BUDGET
) -> dict[str, dict[str, Any]]:
    """Each invoice's summary once all of them have a status in `wanted`."""
    found: dict[str, dict[str, Any]] = {}
    with trio.fail_after(budget):
        while len(found) < len(ids):
            for invoice in ids:
                if invoice in found:
                    continue
                response = await admin.get(f"/v1/supplier-invoices/{invoice}")
                if response.status_code == 200 and response.json()["status"] in wanted:
                    found[invoice] = response.json()
            if len(found) < len(ids):
                # A real daemon in another process: poll its API, with a short pause.
                await trio.sleep(0.1)
    return found


ZERO = Decimal(0)

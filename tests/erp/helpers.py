"""What the SelectLine daemon tests share: a seeded simulator, the `[[erp]]` and selectline
`[[location]]` config sections, and a bounded wait."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from adapters.selectline.simulator import SelectLineKnobs, SelectLineSimulator
from tests.adapters.conftest import Serve
from tests.harness import DaemonProcess
from tests.orders.shop import webhook_config

# Polls every 100 ms; each wait is bounded by these seconds of wall clock (a loaded 2-core CI).
BUDGET = 20.0

# A location whose picking and shipping the ERP's warehouse does (`actors.selectline_location`).
SELECTLINE_LOCATION = """
[[location]]
name = "wh"
adapter = "selectline"
warehouses = ["200", "400"]
poll_interval = "100ms"
"""


def seeded_sim(**knobs: Any) -> SelectLineSimulator:
    sim = SelectLineSimulator(knobs=SelectLineKnobs(**knobs))
    sim.add_warehouse("200")
    sim.add_warehouse("400")
    sim.add_article("MUG-1", gtin="4000000000017", stock={"200": 5, "400": 3})
    sim.add_article("CUP-2", gtin="4000000000024", stock={"200": 10})
    sim.add_article("OLD-3", stock={"200": 7}, shop_active=False)
    return sim


async def serve_erp(tmp_path: Path, serve: Serve, sim: SelectLineSimulator) -> str:
    """Serve `sim` over loopback and write its password file; returns its URL."""
    url, _ = await serve(sim)
    (tmp_path / "selectline.password").write_text(sim.password + "\n")
    return url


def selectline_erp(url: str, keys: str = "") -> str:
    """The `[[erp]]` section `sl` for the simulator at `url` (its password in
    `selectline.password`, see `serve_erp`), with more `keys` (or tables after it)."""
    return f"""
[[erp]]
name = "sl"
kind = "selectline"
url = "{url}"
password_file = "selectline.password"
{keys}
"""


def erp_section(
    url: str, extra: str = "", *, poll_interval: str = "100ms", payment_interval: str = "100ms"
) -> str:
    """`selectline_erp` with stock source and invoices on, polling fast by default; `extra`
    follows it (more keys of the section, or more tables)."""
    return selectline_erp(
        url,
        f"""stock_source = true
post_invoices = true
poll_interval = "{poll_interval}"
payment_interval = "{payment_interval}"
{extra}""",
    )


async def erp_config(
    tmp_path: Path, serve: Serve, sim: SelectLineSimulator, extra: str = ""
) -> Path:
    """The webhook channels, a location `wh` of warehouses 200 and 400, and the ERP `sl`."""
    url = await serve_erp(tmp_path, serve, sim)
    location = '\n[[location]]\nname = "wh"\nwarehouses = ["200", "400"]\n'
    return webhook_config(tmp_path, location + erp_section(url, extra))


async def eventually(daemon: DaemonProcess, what: str, check: Any) -> Any:
    """Poll `check()` (async, returns a value or None) until it gives a value."""
    with trio.fail_after(BUDGET):
        while True:
            value = await check()
            if value is not None:
                return value
            await trio.sleep(0.05)

"""A real `somsd run` polling the Smartstore simulator: SIGKILLs during intake, auth failures,
the reconciliation routes and `somsd reconcile`/`somsd doctor`.

The simulator runs in the test process (somsd.http on loopback), so the test sees exactly what
the daemon did to the shop; the daemon is a child process killed with SIGKILL mid-poll.
"""

from __future__ import annotations

import random
import signal
import socket
from contextlib import closing
from pathlib import Path

import httpx
import pytest
import trio

from adapters.smartstore import (
    AccessDeniedReason,
    SmartstoreKnobs,
    SmartstoreSimulator,
    write_credentials,
)
from somsd.daemon import DATABASE_FILE
from somsd.projections.orders import list_orders
from somsd.store import open_reader
from tests.adapters.conftest import Serve
from tests.harness import running_daemon, write_daemon_config
from tests.orders.shop import somsd_cli

pytestmark = pytest.mark.slow

ORDERS = 300
KILLS = 3
# The whole run: four daemon starts (~0.5 s each here), 300 orders, polls every 100 ms. Ten
# times what it takes on this 2-core machine under load.
RUN_BUDGET = 60.0


async def shop_config(
    tmp_path: Path, serve: Serve, sim: SmartstoreSimulator, extra: str = ""
) -> Path:
    url, _ = await serve(sim)
    _, secret = write_credentials(tmp_path / "creds", sim)
    return write_daemon_config(
        tmp_path,
        f"""
[[channel]]
name = "shop"
kind = "smartstore"
url = "{url}"
public_key = "{sim.public_key}"
secret_key_file = "{secret}"
poll_interval = "100ms"
poll_overlap = "2s"
sync_stock = false
{extra}
""",
    )


def stored_orders(data_dir: Path) -> list[tuple[str, str, str]]:
    with closing(open_reader(data_dir / DATABASE_FILE)) as conn:
        return [(o.external_id, o.number, o.status) for o in list_orders(conn, limit=100_000)]


async def test_every_shop_order_arrives_exactly_once_through_sigkills(
    tmp_path: Path, serve: Serve, nursery: trio.Nursery
) -> None:
    rng = random.Random(7)
    sim = SmartstoreSimulator(knobs=SmartstoreKnobs(max_top=25), seed=7)
    sim.seed_catalogue(200, seed=7)
    config = await shop_config(tmp_path, serve, sim)
    data_dir = tmp_path / "data"
    cancelled_while_down: list[int] = []
    with trio.fail_after(RUN_BUDGET):
        shopper_done = trio.Event()

        async def shopper() -> None:
            await sim.run_shopper(rate=150, count=ORDERS, seed=3)
            shopper_done.set()

        nursery.start_soon(shopper)
        for _ in range(KILLS):
            async with running_daemon(config) as daemon:
                await trio.sleep(rng.uniform(0.3, 0.9))  # somewhere in the middle of polling
                daemon.signal(signal.SIGKILL)
                await daemon.wait_exit()
            # While somsd is down the merchant cancels an order it has already seen.
            seen = {number for _, number, _ in stored_orders(data_dir)}
            candidates = [
                o.id
                for o in sim.orders.values()
                if o.order_number in seen
                and o.order_status_id != 40
                and o.id not in cancelled_while_down
            ]
            if candidates:
                sim.cancel_in_shop(candidates[0])
                cancelled_while_down.append(candidates[0])
        await shopper_done.wait()
        async with running_daemon(config) as daemon:
            numbers = {o.order_number: o for o in sim.orders.values()}
            wanted = {numbers_id.order_guid for numbers_id in numbers.values()}
            while True:
                rows = stored_orders(data_dir)
                cancelled = {sim.orders[i].order_guid for i in cancelled_while_down}
                done = {external for external, _, status in rows if status == "canceled"}
                if {r[0] for r in rows} == wanted and cancelled <= done:
                    break
                await trio.sleep(0.1)
            assert daemon.process.returncode is None
    rows = stored_orders(data_dir)
    assert len(rows) == len(sim.orders) == ORDERS  # once each: no order missing, none doubled
    assert len({external for external, _, _ in rows}) == ORDERS
    assert len(cancelled_while_down) == KILLS


async def test_refused_credentials_log_once_count_and_keep_the_daemon_ready(
    tmp_path: Path, serve: Serve
) -> None:
    sim = SmartstoreSimulator(knobs=SmartstoreKnobs(auth_failure=AccessDeniedReason.USER_DISABLED))
    sim.seed_catalogue(10, seed=1)
    config = await shop_config(tmp_path, serve, sim)
    async with running_daemon(config) as daemon:
        event = await daemon.wait_log("channel_poll_failed")
        assert "disabled" in event["problem"]
        async with httpx.AsyncClient(base_url=daemon.metrics) as metrics:
            with trio.fail_after(10):
                while True:
                    text = (await metrics.get("/metrics")).text
                    if 'somsd_channel_poll_failures_total{channel="shop"' in text:
                        break
                    await trio.sleep(0.05)
        async with httpx.AsyncClient(base_url=daemon.api) as api:
            assert (await api.get("/readyz")).status_code == 200
        await trio.sleep(0.5)  # several more polls fail: still one log line
        assert sum(e.get("event") == "channel_poll_failed" for e in daemon.log) == 1
        # The merchant fixes the key pair; the next poll takes the orders in.
        sim.knobs.auth_failure = None
        sim.place_order(paid=False, shipping="standard")
        await daemon.wait_log("channel_poll_recovered")
        await daemon.wait_log("order_received")


async def test_reconcile_routes_and_commands(tmp_path: Path, serve: Serve) -> None:
    sim = SmartstoreSimulator()
    seeded = sim.seed_catalogue(
        120, combination_share=0.0, wrongly_unpublished=5, stock_drift=3, seed=2
    )
    config = await shop_config(tmp_path, serve, sim)
    # The CLI finds the daemon through api.listen, so it needs a real port.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config.write_text(config.read_text().replace('"127.0.0.1:0"', f'"127.0.0.1:{port}"', 1))
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        assert (await admin.get("/v1/channels/shop/reconciliation")).status_code == 404
        bad = await admin.post("/v1/channels/shop/reconcile", params={"dry_run": "maybe"})
        assert bad.status_code == 400
        assert "dry_run" in bad.text
        assert (await admin.post("/v1/channels/nope/reconcile")).status_code == 404
        # somsd has no stock yet: every shop SKU is unknown to it; a dry run changes nothing.
        dry = await somsd_cli("reconcile", "shop", "--dry-run", "-c", str(config))
        assert dry.returncode == 0, dry.stderr
        assert b"unknown_in_shop" in dry.stdout
        report = (await admin.get("/v1/channels/shop/reconciliation")).json()
        assert report["dry_run"] is True
        assert report["counts"]["unknown_in_shop"] == len(seeded.truth)
        assert (await admin.get("/v1/channels/shop/rejected")).json()["rejected"] == []
        doctor = await somsd_cli("doctor", "-c", str(config))
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert b"credentials" in doctor.stdout
    sim.knobs.auth_failure = AccessDeniedReason.INVALID_CREDENTIALS
    doctor = await somsd_cli("doctor", "-c", str(config))
    assert doctor.returncode == 1
    assert b"secret key is wrong" in doctor.stdout

"""Issue 14's acceptance: three real `somsd run` daemons on one PostgreSQL database share the
work, and SIGKILLs of the owners hand it over without losing or doubling anything.

Upstreams are the simulators, in this process on loopback: a Smartstore shop that the channel
poller (a leased duty) imports orders from, and a 3PL (`rest`) as the one fulfilment location,
which ships what it is sent and tracks its stock. Webhook orders are posted round-robin to the
daemons still alive, as a load balancer would (a refused or lost answer is sent to the next
one; the channel's idempotency makes a repeat a duplicate). More units are ordered than the 3PL
holds. Mid-flight the owner of the 3PL location is SIGKILLed, then the owner of the Smartstore
poller.

What must hold: every order exists once; every fulfilment reached the 3PL once (the simulator
says so); nothing is oversold (the 3PL never had to refuse a unit for want of stock, and the
survivor's book reserves no more than is on hand); each killed owner's duties were taken over
within the lease TTL; invoice numbers are gapless from 1 across the daemons.
"""

from __future__ import annotations

import contextlib
import itertools
import signal
from collections import Counter
from pathlib import Path

import httpx
import msgspec
import psycopg
import pytest
import trio

from adapters.smartstore import SmartstoreSimulator
from adapters.threepl import ThreePLKnobs, ThreePLSimulator
from somsd.domain.numbering import parse_number
from somsd.domain.testing import sample_line
from tests.adapters.conftest import Serve, serve
from tests.cluster.members import TTL, acquired, shop_member, until
from tests.harness import DaemonProcess, running_daemon
from tests.orders.shop import CHANNEL, CHANNEL_SECRET, intake_path, order_body, signed

__all__ = ["serve"]

pytestmark = pytest.mark.slow

STOCK = 40  # units at the 3PL
WEBHOOK_ORDERS = 36
SHOP_ORDERS = 18  # one unit each: 54 units ordered for 40 on hand
TOKEN = "wms-token-three"
LOCATION, POLLER, ROUTING = "location/wh-1", "channel/shop", "core/routing"
DUTIES = {LOCATION, POLLER, ROUTING}
# A dead owner's lease lapses TTL after its last renewal; a standby asks at that moment. The
# slack is for three daemons and PostgreSQL on a loaded two-core machine.
TAKEOVER_BOUND = TTL + 1.5
RUN_BUDGET = 90.0


WEBHOOK_CHANNEL = f"""
[[channel]]
name = "{CHANNEL}"
kind = "webhook"
secret_file = "{CHANNEL}.secret"
locations = ["wh-1"]
"""


class Cluster:
    """The three daemons, who owns what, and the SIGKILLs."""

    def __init__(self, daemons: dict[str, DaemonProcess]) -> None:
        self.daemons = daemons
        self.killed: set[str] = set()
        self.takeovers: list[tuple[str, float]] = []  # duty, seconds from SIGKILL to its heir

    def alive(self) -> list[DaemonProcess]:
        return [d for name, d in sorted(self.daemons.items()) if name not in self.killed]

    def owner(self, duty: str) -> str | None:
        """The living member that acquired `duty` last (from the logs)."""
        found = [
            (e["timestamp"], name)
            for name, d in self.daemons.items()
            if name not in self.killed
            for e in d.log
            if e.get("event") == "lease_acquired" and e["duty"] == duty
        ]
        return max(found)[1] if found else None

    async def kill_owner_of(self, duty: str) -> None:
        victim = self.owner(duty)
        assert victim is not None
        held = {d for d in DUTIES if self.owner(d) == victim}
        marks = {name: len(d.log) for name, d in self.daemons.items()}
        self.daemons[victim].signal(signal.SIGKILL)
        killed_at = trio.current_time()
        self.killed.add(victim)
        print(f"SIGKILL {victim}, owner of {sorted(held)}")
        survivors = {n: d for n, d in self.daemons.items() if n not in self.killed}
        for duty_held in sorted(held):

            def taken(duty: str = duty_held) -> bool:
                return any(
                    acquired(d, after=marks[n]).get(duty) == "taken_over"
                    for n, d in survivors.items()
                )

            await until(list(survivors.values()), taken, RUN_BUDGET)
            self.takeovers.append((duty_held, trio.current_time() - killed_at))
        print("taken over after", [f"{d} {s:.2f} s" for d, s in self.takeovers[-len(held) :]])


async def post_webhook_order(cluster: Cluster, client: httpx.AsyncClient, n: int, sku: str) -> None:
    """Post to the next living daemon until one answers (as a load balancer retries)."""
    body = order_body(f"web-{n}", lines=[sample_line(sku=sku, quantity=1)])
    for attempt in itertools.count():
        alive = cluster.alive()
        target = alive[(n + attempt) % len(alive)]
        try:
            answer = await client.post(
                target.api + intake_path(), content=body, headers=signed(body)
            )
        except httpx.TransportError:
            continue  # killed under the request: the order may be in, the next says so
        if answer.status_code in (200, 202):
            return
        assert answer.status_code == 503, answer.text  # stopping or not ready: next one
        await trio.sleep(0.05)


def stored(dsn: str) -> tuple[Counter[tuple[str, str]], list[int], list[tuple[str, str, str]]]:
    """From the shared database: orders per (channel, external id), invoice sequence numbers,
    and (fulfilment, order number, state) of every fulfilment."""
    with psycopg.connect(dsn) as conn:
        orders = Counter(
            (channel, external)
            for channel, external in conn.execute("SELECT channel, external_id FROM orders")
        )
        invoices = sorted(
            parse_number(msgspec.json.decode(bytes(payload))["number"])[2]
            for (payload,) in conn.execute(
                "SELECT payload FROM events WHERE type = 'InvoiceIssued'"
            )
        )
        fulfilments = [
            (fid, number, state)
            for fid, number, state in conn.execute(
                "SELECT f.fulfilment_id, o.number, f.state FROM fulfilments f "
                "JOIN orders o ON o.order_id = f.order_id"
            )
        ]
    return orders, invoices, fulfilments


def uninvoiced(dsn: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return list(
            conn.execute(
                "SELECT o.channel, o.external_id, o.status FROM orders o WHERE NOT EXISTS ("
                "SELECT 1 FROM events e WHERE e.stream = 'order-' || o.order_id "
                "AND e.type = 'InvoiceIssued')"
            )
        )


async def test_three_daemons_share_the_work_and_survive_sigkills_of_the_owners(
    tmp_path: Path, pg_dsn: str, serve: Serve, nursery: trio.Nursery
) -> None:
    shop = SmartstoreSimulator(seed=14)
    catalogue = shop.seed_catalogue(4, combination_share=0, sold_out_share=0, seed=14)
    sku = sorted(catalogue.truth)[0]
    shop_url, _ = await serve(shop)
    wms = ThreePLSimulator(
        api_token=TOKEN, knobs=ThreePLKnobs(latency=0.02, step_delay=0.3), stock={sku: STOCK}
    )
    wms_url, _ = await serve(wms)
    await nursery.start(wms.run)
    configs = {
        name: shop_member(
            tmp_path / name,
            pg_dsn,
            name,
            shop=shop,
            shop_url=shop_url,
            wms_url=wms_url,
            wms_token=TOKEN,
            poll_interval="200ms",
            feed_interval="300ms",
            channels=WEBHOOK_CHANNEL,
            files={f"{CHANNEL}.secret": CHANNEL_SECRET},
        )
        for name in ("a", "b", "c")
    }
    with trio.fail_after(RUN_BUDGET):
        async with contextlib.AsyncExitStack() as stack:
            cluster = Cluster(
                {
                    name: await stack.enter_async_context(running_daemon(config))
                    for name, config in configs.items()
                }
            )
            every = cluster.alive()
            await until(every, lambda: all(cluster.owner(d) for d in DUTIES), RUN_BUDGET)
            client = await stack.enter_async_context(httpx.AsyncClient(timeout=10))

            async def shop_orders() -> None:
                for _ in range(SHOP_ORDERS):
                    shop.place_order(
                        [(sku, 1)],
                        payment_method="Payments.PayPalStandard",
                        paid=True,
                        country="DE",
                    )
                    await trio.sleep(0.1)

            async with trio.open_nursery() as intake:
                intake.start_soon(shop_orders)
                for n in range(WEBHOOK_ORDERS):
                    if n == WEBHOOK_ORDERS // 3:
                        await cluster.kill_owner_of(LOCATION)
                    if n == 2 * WEBHOOK_ORDERS // 3:
                        await cluster.kill_owner_of(POLLER)
                    await post_webhook_order(cluster, client, n, sku)
                    await trio.sleep(0.05)

            shop_ids = {o.order_guid for o in shop.orders.values()}
            assert len(shop_ids) == SHOP_ORDERS
            wanted = {(CHANNEL, f"web-{n}") for n in range(WEBHOOK_ORDERS)} | {
                ("shop", guid) for guid in shop_ids
            }

            def settled() -> bool:
                orders, _, _ = stored(pg_dsn)
                shipped = [j for j in wms._jobs.values() if j.status == "shipped"]
                return set(orders) == wanted and len(shipped) >= STOCK

            await until(cluster.alive(), settled, RUN_BUDGET)
            await trio.sleep(1.0)  # room for a doubled or oversold fulfilment to show up
            [heir] = cluster.alive()
            async with heir.admin() as admin:
                positions = (await admin.get(f"/v1/inventory/{sku}")).json()

    orders, invoices, fulfilments = stored(pg_dsn)
    # Every order once.
    assert set(orders) == wanted
    assert set(orders.values()) == {1}
    # Every fulfilment at the 3PL once: the ones somsd has for wh-1 are the simulator's, and
    # no order was sent twice (one unit each, one fulfilment each).
    assert sorted(fid for fid, _, _ in fulfilments) == sorted(wms._jobs)
    assert len(wms._jobs) == STOCK
    by_order = Counter(job.request.order_ref for job in wms._jobs.values())
    assert set(by_order.values()) == {1}, by_order
    # Nothing oversold: no unit refused for want of stock, none below zero, book within stock.
    assert not [j for j in wms._jobs.values() if any(x.rejected_quantity for x in j.lines)]
    assert wms.stock == {sku: 0}
    position = positions["locations"]["wh-1"]
    assert 0 <= position["reserved"] <= position["on_hand"], position
    # The rest waits for stock: 54 units ordered, 40 shipped.
    assert {state for _, _, state in fulfilments} == {"shipped"}
    # Each killed owner's work moved within the TTL (plus a round trip and a loaded machine).
    assert [duty for duty, _ in cluster.takeovers].count(POLLER) == 2  # both kills moved it
    assert LOCATION in {duty for duty, _ in cluster.takeovers}
    assert max(seconds for _, seconds in cluster.takeovers) < TAKEOVER_BOUND, cluster.takeovers
    # Invoices numbered 1..N without a gap, whichever daemon issued them.
    assert invoices == list(range(1, len(invoices) + 1))
    # (An order the shop's data put on hold waits for an operator before it is invoiced.)
    assert {status for _, _, status in uninvoiced(pg_dsn)} <= {"on-hold"}
    assert len(invoices) >= len(wanted) - 3

"""`somsd demo`: the embedded default, end to end on loopback.

What runs: a real `somsd run` process on SQLite with a generated config (three warehouses, two
stores, the shops listed in `demo_shops()`); the 3PL simulator speaking the `rest` location
protocol for one warehouse; store staff working the other locations' pick lists through the
manual fulfilment API; the main shop, a Smartstore simulator (a real OData Web API on loopback
with a seeded catalogue of a few thousand products) whose shoppers check out orders somsd polls
in, while somsd pushes stock and visibility back and reconciles the catalogue once; a webhook
shop as a second channel placing realistic signed orders; a SelectLine ERP (its simulator on
loopback) that is the stock source of one warehouse and receives every order as a sales order
and every shipment as delivery note and invoice, whose own warehouse (wh-munich, `adapter =
"selectline"`) picks and ships its fulfilments as delivery notes, and whose bookkeeper books
the bank transfers and invoice payments as paid open items in the ERP (somsd reads them from
there); a supplier that restocks the 3PL before it runs dry, so every order can finish. The
live view shows orders by status (and why those that wait, wait), fulfilments by location,
stock sync and routing, and errors; the API and metrics stay up so a user can look around. With
`--orders N` the demo places N orders, waits until every one is final (complete, canceled or
closed) and prints a summary: exit 0 only if all N got there. Ctrl-C stops everything cleanly
and prints the summary too (exit 0 without `--orders`, 130 when it interrupts an `--orders` run
before every order is final).

Every run numbers its orders with a fresh run id (`D<run id>-1`, ...), so runs into the same
data dir never collide, and the view and summary count only this run's orders.

This module is part of the composition root (like `somsd.daemon`): it wires adapters'
simulators to the daemon's outside interfaces and nothing else; everything it does to the
daemon goes through the daemon's public HTTP API, as a real shop, 3PL or store would.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import structlog
import trio

from adapters.dhl.simulator import SHIPPING_PREFIX, DhlKnobs, DhlSimulator, write_credentials
from adapters.selectline.simulator import SelectLineKnobs, SelectLineSimulator
from adapters.smartstore import OrderStatus, ShippingStatus, SmartstoreSimulator
from adapters.storesim import StoreClient, StoreKnobs, StoreSimulator, WorkItem
from adapters.threepl.simulator import ThreePLKnobs, ThreePLSimulator
from adapters.webhookshop import DEFAULT_CATALOGUE, place_orders
from somsd.config import ListenAddress
from somsd.http import HttpListener

__all__ = ["EXIT_INTERRUPTED", "DemoError", "DemoOptions", "fit_header", "run_demo"]

FINAL_STATUSES = frozenset({"complete", "canceled", "closed"})
EXIT_INTERRUPTED = 130  # the shell's code for "ended by SIGINT"
STORES = ("store-essen", "store-berlin")
MANUAL_LOCATIONS = ("wh-leipzig", *STORES)
REST_LOCATION = "wh-dortmund"
STORE_ADDRESSES = {
    "store-essen": 'address = { name = "somsd Store Essen", street = "Kettwiger Str. 1", '
    'zip = "45127", city = "Essen" }\n',
    "store-berlin": 'address = { name = "somsd Store Berlin", street = "Alexanderplatz 2", '
    'zip = "10178", city = "Berlin" }\n',
}
# Units per SKU and location at the start: enough that most orders ship at once, few enough
# that some SKUs sell out somewhere and routing has to choose. The 3PL is restocked by the
# demo's supplier (below `RESTOCK_BELOW` it receives `RESTOCK_UNITS`), so it never runs dry.
START_STOCK = {"wh-dortmund": 400, "wh-leipzig": 300, "wh-munich": 200, "store-essen": 15}
RESTOCK_BELOW = 150
RESTOCK_UNITS = 400
# The locations (name, kind, adapter, lat, lon, ships_to, daily_capacity, priority). The 3PL
# and the stores have no daily capacity: capacity is counted per UTC day over every run in the
# data dir, and a click & collect order may only be served at (or through) its store, so a
# capped store or a capped last warehouse would leave orders that can never finish.
LOCATIONS: tuple[tuple[str, str, str, float, float, str, int | None, int], ...] = (
    (REST_LOCATION, "warehouse", "rest", 51.51, 7.47, '["DE", "AT", "NL", "BE"]', None, 1),
    ("wh-leipzig", "warehouse", "manual", 51.34, 12.37, '["DE", "AT", "PL", "CZ"]', 600, 1),
    # The ERP's own warehouse picks and ships: fulfilments become SelectLine delivery notes.
    ("wh-munich", "warehouse", "selectline", 48.14, 11.58, '["DE", "AT", "CH"]', 500, 2),
    ("store-essen", "store", "manual", 51.46, 7.01, '["DE"]', None, 3),
    ("store-berlin", "store", "manual", 52.52, 13.40, '["DE"]', None, 3),
)
ERROR_TTL = 60.0  # seconds an error stays in the view
_WIDE = 120  # from this many columns on, all panels side by side


class DemoError(Exception):
    """The demo could not start; the message says why (shown without a traceback)."""


@dataclass
class DemoOptions:
    orders: int | None = None  # None: run until Ctrl-C
    data_dir: Path = Path("var/demo")
    rate: float = 15.0  # orders per second from the shop
    error_rate: float = 0.0  # the 3PL answers this share of requests with a 500
    outage_after: float | None = None  # seconds into the run the 3PL goes down ...
    outage_seconds: float = 10.0  # ... for this long
    timeout: float = 120.0  # --orders: give up after this long
    seed: int = 7
    live: bool = True


@dataclass
class DemoState:
    run_id: str = ""
    placed: int = 0
    taken_in: int = 0  # first deliveries somsd took as new orders
    known_before: int = 0  # first deliveries somsd already had (a collision with another run)
    rejected_deliveries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    fulfilments: Counter[tuple[str, str]] = field(default_factory=Counter)
    payments_booked: int = 0
    erp_documents: str = ""  # documents somsd posted to the ERP, per kind flag
    restocks: int = 0
    log_lines: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    # (monotonic time, "HH:MM:SS text"): shown for ERROR_TTL seconds.
    errors: deque[tuple[float, str]] = field(default_factory=lambda: deque(maxlen=40))
    metrics: dict[str, float] = field(default_factory=dict)
    order_ids: set[str] = field(default_factory=set)
    final: set[str] = field(default_factory=set)
    waiting: dict[str, str] = field(default_factory=dict)  # order id -> why it is not final
    interrupted: bool = False
    driving: bool = False
    # Polled shops: numbers placed in the shop that somsd has not listed yet.
    awaiting_intake: set[str] = field(default_factory=set)
    polled_in: int = 0
    reconciliation: dict[str, int] | None = None  # the last report's counts
    shop_rows: list[tuple[str, str]] = field(default_factory=list)  # the main shop's own view
    mails_received: int = 0  # mails the demo's SMTP server stored (customer notifications)

    @property
    def number_prefix(self) -> str:
        return f"D{self.run_id}-"

    def error(self, text: str) -> None:
        stamp = datetime.now(UTC).strftime("%H:%M:%S")  # UTC, like the daemon's log lines
        self.errors.append((time.monotonic(), f"{stamp} {text}"))

    def recent_errors(self) -> list[str]:
        cutoff = time.monotonic() - ERROR_TTL
        return [text for at, text in self.errors if at >= cutoff]


# -- the shops: one place lists them ---------------------------------------------------------


@dataclass(frozen=True)
class DemoShop:
    """One sales channel of the demo: its config block and the task that places its orders.

    `place(shop, daemon_api_url, options, state)` posts orders until `options.orders` (or
    forever) and records each outcome in `state`.
    """

    channel: str
    secret: str
    config: Callable[[DemoShop], str]
    place: Callable[[DemoShop, str, DemoOptions, DemoState], Awaitable[None]]
    share: float = 1.0  # of the demo's orders and of its rate
    # A shop the demo runs itself is started before the config (which names its URL) is written.
    start: Callable[[trio.Nursery, DemoState], Awaitable[None]] | None = None
    # Once the daemon is ready: what the shop does with it besides placing (the admin client).
    follow: Callable[[httpx.AsyncClient, DemoState], Awaitable[None]] | None = None
    # The shop's own view of this run (label, value), for the live view and the summary.
    rows: Callable[[], list[tuple[str, str]]] | None = None
    # After the last order is final in somsd: until the shop shows it too (bounded by the caller).
    settle: Callable[[], Awaitable[None]] | None = None


def _webhook_config(shop: DemoShop) -> str:
    names = ", ".join(f'"{loc[0]}"' for loc in LOCATIONS)
    return (
        f'[[channel]]\nname = "{shop.channel}"\nkind = "webhook"\n'
        f'secret_file = "{shop.channel}.secret"\nlocations = [{names}]\n'
        "low_stock_threshold = 20\n"
    )


async def _place_webhook(shop: DemoShop, api: str, options: DemoOptions, state: DemoState) -> None:
    count = options.orders if options.orders is not None else 10**9
    url = f"{api}/v1/channels/{shop.channel}/orders"
    async with httpx.AsyncClient(timeout=30) as client:
        async for delivery in place_orders(
            client,
            url,
            shop.secret.encode(),
            count,
            rate=options.rate,
            seed=options.seed,
            stores=STORES,
            redeliver_share=0.05,
            number_prefix=state.number_prefix,
            first_number=1,
        ):
            if delivery.order_id is not None:
                state.order_ids.add(delivery.order_id)
                if not delivery.redelivery:
                    state.placed += 1
                    if delivery.duplicate:
                        state.known_before += 1
                    else:
                        state.taken_in += 1
            elif delivery.error is not None:
                state.rejected_deliveries += 1
                state.error(f"{delivery.order.number}: {delivery.error}"[:160])


# The Smartstore catalogue: the demo's own SKUs (what the shoppers buy, stocked everywhere) and
# a long tail of seeded products whose stock somsd learns from one report at `LONG_TAIL_AT`
# (nobody orders them, so that location's daily capacity is never touched). The seeded drift -
# products wrongly unpublished (the Ametista case), wrongly shown, with other stock, unknown to
# somsd - is what the one reconciliation of the run finds and fixes.
LONG_TAIL_PRODUCTS = 3000
LONG_TAIL_AT = "wh-leipzig"
WRONGLY_UNPUBLISHED, WRONGLY_SHOWN, STOCK_DRIFT = 40, 10, 25
UNKNOWN_IN_SHOP = 5
RECONCILE_AFTER = 8.0  # seconds after the daemon is ready: the first stock pushes are through
SMARTSTORE_SHARE = 2 / 3  # the main shop takes this share of the orders, the webhook shop the rest


class SmartstoreShop:
    """The main shop: a Smartstore simulator served on loopback, its shoppers, its view."""

    def __init__(self, channel: str, secret: str, seed: int) -> None:
        self.channel = channel
        self.url = ""
        # Order ids above every earlier run's, so effects left from one never hit another's.
        self.sim = SmartstoreSimulator(
            public_key=f"demo-{channel}",
            secret_key=secret,
            seed=seed,
            first_order_id=int(time.time() * 10) * 1000,
        )
        self.seed = seed
        self.numbers: set[str] = set()  # this run's order numbers

    def seed_catalogue(self) -> None:
        self.sim.seed_catalogue(
            LONG_TAIL_PRODUCTS,
            wrongly_unpublished=WRONGLY_UNPUBLISHED,
            wrongly_shown=WRONGLY_SHOWN,
            stock_drift=STOCK_DRIFT,
            unknown_in_shop=UNKNOWN_IN_SHOP,
            seed=self.seed,
        )
        everywhere = sum(START_STOCK.values())  # somsd's channel stock of a demo SKU at start
        for item in DEFAULT_CATALOGUE:
            self.sim.add_product(
                item.sku,
                name=item.name,
                stock=everywhere,
                price=item.unit_price,
                tax_rate=item.tax_rate,
            )

    def long_tail_stock(self) -> list[dict[str, Any]]:
        """The long tail's stock for somsd: the seeded truth (the shop agrees but for drift)."""
        assert self.sim.seeded is not None
        return [{"sku": sku, "on_hand": units} for sku, units in self.sim.seeded.truth.items()]

    async def start(self, nursery: trio.Nursery, state: DemoState) -> None:
        self.seed_catalogue()
        listener = HttpListener(
            self.channel, self.sim, ListenAddress("127.0.0.1:0"), graceful_timeout=1
        )
        await nursery.start(listener.run)
        self.url = listener.urls[0]

    def config(self, shop: DemoShop) -> str:
        names = ", ".join(f'"{loc[0]}"' for loc in LOCATIONS)
        return (
            f'[[channel]]\nname = "{shop.channel}"\nkind = "smartstore"\nurl = "{self.url}"\n'
            f'public_key = "{self.sim.public_key}"\nsecret_key_file = "{shop.channel}.secret"\n'
            f'poll_interval = "1s"\npoll_overlap = "10s"\nsold_out_action = "unpublish"\n'
            f"locations = [{names}]\nlow_stock_threshold = 20\nstock_sync_concurrency = 16\n"
        )

    async def place(self, shop: DemoShop, api: str, options: DemoOptions, state: DemoState) -> None:
        """The shop's shoppers: checkouts of the demo's SKUs at the demo's rate, numbered for
        this run. Delivery only (no pickup: a Smartstore pickup needs a store mapping the
        channel does not have yet) to DE and AT, where the 3PL ships."""
        rng = random.Random(f"{options.seed}-{state.run_id}")  # fresh GUIDs every run
        count = options.orders if options.orders is not None else 10**9
        interval = 1.0 / options.rate if options.rate > 0 else 1.0
        next_at = trio.current_time()
        for index in range(1, count + 1):
            next_at += interval
            await trio.sleep_until(next_at)
            items = rng.sample(DEFAULT_CATALOGUE, rng.choice((1, 1, 1, 2, 2, 3)))
            number = f"{state.number_prefix}S{index}"
            self.sim.place_order(
                [(item.sku, rng.choice((1, 1, 1, 2))) for item in items],
                shipping=rng.choices(("standard", "express"), (85, 15))[0],
                country=rng.choices(("DE", "AT"), (90, 10))[0],
                rng=rng,
                order_overrides={"order_number": number},
            )
            self.numbers.add(number)
            state.awaiting_intake.add(number)
            state.placed += 1

    async def follow(self, admin: httpx.AsyncClient, state: DemoState) -> None:
        """Tell somsd the long tail's stock, reconcile the catalogue once, keep the shop's view."""
        response = await admin.put(
            f"/v1/locations/{LONG_TAIL_AT}/stock",
            json=self.long_tail_stock(),  # the listed SKUs only: the rest stays as counted
        )
        response.raise_for_status()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reconcile_once, admin, state)
            while True:
                state.shop_rows = self.rows()
                await trio.sleep(0.5)

    async def settle(self) -> None:
        """Every order of this run shipped and complete in the shop (the effects are through)."""
        while True:
            mine = [o for o in self.sim.orders.values() if o.order_number in self.numbers]
            if all(o.order_status_id == OrderStatus.COMPLETE for o in mine):
                return
            await trio.sleep(0.25)

    async def _reconcile_once(self, admin: httpx.AsyncClient, state: DemoState) -> None:
        await trio.sleep(RECONCILE_AFTER)
        response = await admin.post(f"/v1/channels/{self.channel}/reconcile", timeout=120)
        if response.status_code == 200:
            state.reconciliation = dict(response.json()["counts"])
        else:
            state.error(f"reconcile {self.channel}: {response.status_code} {response.text}"[:160])

    def rows(self) -> list[tuple[str, str]]:
        """This run's orders as the shop shows them (its own state, not somsd's)."""
        mine = [o for o in self.sim.orders.values() if o.order_number in self.numbers]
        shipped = (ShippingStatus.SHIPPED, ShippingStatus.DELIVERED)
        return [
            ("shop checkouts", str(len(mine))),
            ("shop shipped", str(sum(o.shipping_status_id in shipped for o in mine))),
            ("shop complete", str(sum(o.order_status_id == OrderStatus.COMPLETE for o in mine))),
            ("shop hidden", str(sum(not p.published for p in self.sim.products.values()))),
        ]


def demo_shops(seed: int = 7) -> tuple[DemoShop, ...]:
    """The demo's shops; a new shop kind adds its entry here (config block and placer).

    The first is the main shop, Smartstore; the webhook shop is a second channel."""
    secret = secrets.token_hex(16)
    smartstore = SmartstoreShop("smartstore", secret, seed)
    return (
        DemoShop(
            channel="smartstore",
            secret=secret,
            config=smartstore.config,
            place=smartstore.place,
            share=SMARTSTORE_SHARE,
            start=smartstore.start,
            follow=smartstore.follow,
            rows=smartstore.rows,
            settle=smartstore.settle,
        ),
        DemoShop(
            channel="webshop",
            secret=secrets.token_hex(16),
            config=_webhook_config,
            place=_place_webhook,
            share=1 - SMARTSTORE_SHARE,
        ),
    )


def shop_options(shops: tuple[DemoShop, ...], options: DemoOptions) -> list[DemoOptions]:
    """Each shop's part of the demo's orders and rate; the counts add up to `options.orders`."""
    parts: list[DemoOptions] = []
    left = options.orders
    for index, shop in enumerate(shops):
        count = None
        if options.orders is not None and left is not None:
            last = index == len(shops) - 1
            count = left if last else min(left, round(options.orders * shop.share))
            left -= count
        parts.append(dataclasses.replace(options, orders=count, rate=options.rate * shop.share))
    return parts


# -- config, ports, the daemon process -------------------------------------------------------


@dataclass
class DemoShipping:
    """DHL Parcel DE for the demo's own warehouses and stores: a simulator on loopback whose
    labels somsd buys when staff pack, and whose tracking moves parcels to delivered."""

    sim: DhlSimulator
    url: str

    def carrier_config(self) -> str:
        return (
            f'[[carrier]]\nname = "dhl"\nkind = "dhl-parcel-de"\n'
            f'url = "{self.url}{SHIPPING_PREFIX}"\ntracking_url = "{self.url}/track"\n'
            f'api_key_file = "dhl_api_key"\nuser = "{self.sim.user}"\n'
            'password_file = "dhl_password"\ntracking_interval = "2s"\n'
        )

    @staticmethod
    def location_keys(name: str, adapter: str) -> str:
        """Carrier keys for a location the demo's staff work (`manual`); none for the 3PL."""
        if adapter != "manual":
            return ""
        return (
            'carriers = ["dhl"]\n'
            f'sender = {{ name = "somsd Versand {name}", street = "Lagerweg 1", zip = "04109", '
            'city = "Leipzig" }\n'
            'billing_numbers = { V01PAK = "33333333330102", V53WPAK = "33333333335301" }\n'
            # ZPL: the label comes as text, so the simulator draws no PDF per parcel.
            'label_format = "zpl"\n'
        )


async def start_dhl(nursery: trio.Nursery, data_dir: Path) -> DemoShipping:
    """Serve the DHL simulator (parcels in transit after 3 s, delivered after 8 s) and write
    its credentials next to the demo config."""
    sim = DhlSimulator(knobs=DhlKnobs(transit_after=3.0, deliver_after=8.0))
    write_credentials(data_dir, sim)
    listener = HttpListener("dhl", sim, ListenAddress("127.0.0.1:0"), graceful_timeout=1)
    await nursery.start(listener.run)
    return DemoShipping(sim, listener.urls[0])


def demo_config(
    data_dir: Path,
    threepl_url: str,
    api: str,
    metrics: str,
    shops: tuple[DemoShop, ...],
    *,
    shipping: DemoShipping | None = None,
    notify: str = "",
    erp: str = "",
) -> str:
    blocks = []
    for name, kind, adapter, lat, lon, ships_to, capacity, priority in LOCATIONS:
        capabilities = '["ship", "pickup"]' if kind == "store" else '["ship"]'
        extra = f'url = "{threepl_url}"\ntoken_file = "threepl.token"\npoll_interval = "1s"\n'
        # Transfers for click & collect are addressed to the store, also when a 3PL sends them.
        address = STORE_ADDRESSES.get(name, "")
        address += shipping.location_keys(name, adapter) if shipping is not None else ""
        limit = f"daily_capacity = {capacity}\n" if capacity is not None else ""
        limit += ERP_WAREHOUSES.get(name, "")
        blocks.append(
            f'[[location]]\nname = "{name}"\nkind = "{kind}"\nadapter = "{adapter}"\n'
            f"{extra if adapter == 'rest' else ''}"
            f'country = "DE"\nlat = {lat}\nlon = {lon}\nships_to = {ships_to}\n'
            f"capabilities = {capabilities}\n{limit}priority = {priority}\n"
            f"{address}"
        )
    channels = "\n".join(shop.config(shop) for shop in shops)
    channels += "\n" + shipping.carrier_config() if shipping is not None else ""
    return f"""# Generated by `somsd demo`; regenerated on every run.
[daemon]
data_dir = "{data_dir / "data"}"
log_level = "info"
drain_timeout = "5s"

[api]
listen = "{api}"
token_file = "admin.token"

[metrics]
listen = "{metrics}"

{channels}
{chr(10).join(blocks)}
[routing]
weights = {{ distance = 1.0, cost = 0.5, speed = 0.5, priority = 0.5 }}
allow_split = true
max_locations = 2

[invoicing]
auto_methods = ["creditcard", "paypal"]
{notify}
{erp}"""


def _free(address: str, tries: int = 10) -> str:
    """`address`, or the next free port above it, or one the kernel picks: never port 0, so the
    config names the port the daemon really listens on (`somsd status -c` reads it)."""
    listen = ListenAddress(address)
    for port in [*range(listen.port, listen.port + tries), 0]:
        with socket.socket() as probe:
            try:
                probe.bind((listen.host, port))
            except OSError:
                continue
            return f"{listen.host}:{probe.getsockname()[1]}"
    raise DemoError(f"no free port on {listen.host}")


# Lines that say nothing about an order: the HTTP client's request lines.
_NOISE_PREFIXES = ("HTTP Request:",)
_ID_KEYS = ("order_id", "fulfilment_id", "fulfillment_id", "location", "channel", "sku")


def _log_line(entry: Mapping[str, Any]) -> str:
    """`HH:MM:SS event ids`: the ids (order, fulfilment, location) say what it was about."""
    stamp = str(entry.get("timestamp", ""))[11:19]
    ids = " ".join(str(entry[key]) for key in _ID_KEYS if entry.get(key))
    actor = entry.get("actor", "")
    return " ".join(part for part in (stamp, entry.get("event", ""), ids or actor) if part)


class DaemonProcess:
    """`somsd run` as a child process; its bound URLs come from its own log."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.urls: dict[str, str] = {}
        self.ready = trio.Event()

    async def follow_log(self, state: DemoState) -> None:
        assert self.process.stdout is not None
        buffer = b""
        async for chunk in self.process.stdout:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode("utf-8", "replace")
                try:
                    entry = json.loads(line[line.index(">") + 1 :])
                except ValueError:
                    continue
                event = str(entry.get("event", ""))
                if event == "http_listening":
                    self.urls[entry["listener"]] = entry["urls"][0]
                elif event == "somsd_ready":
                    self.ready.set()
                if event.startswith(_NOISE_PREFIXES):
                    continue
                if line.startswith(("<3>", "<2>")) or (
                    line.startswith("<4>") and not _expected_wait(entry)
                ):
                    detail = entry.get("error") or entry.get("message") or ""
                    state.error(f"{_log_line(entry)[9:]} {detail}".strip()[:160])
                else:
                    state.log_lines.append(_log_line(entry))


def _expected_wait(entry: Mapping[str, Any]) -> bool:
    """A warning that only says something waits as designed (a transfer, a backorder)."""
    text = json.dumps(entry)
    return "awaiting_transfer" in text or entry.get("event") == "order_backordered"


@asynccontextmanager
async def daemon_process(config: Path, state: DemoState) -> AsyncIterator[DaemonProcess]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "somsd", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        # Its own session: Ctrl-C on the terminal reaches the demo only, which then stops the
        # daemon with SIGTERM like systemd would (drain, then exit 0).
        start_new_session=True,
    )
    daemon = DaemonProcess(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(daemon.follow_log, state)
            # Ready, or the reason it is not: a daemon that exits (a port taken, a bad config)
            # ends the wait at once instead of after the deadline.
            with trio.move_on_after(30):
                async with trio.open_nursery() as waiting:

                    async def exited() -> None:
                        await process.wait()
                        waiting.cancel_scope.cancel()

                    waiting.start_soon(exited)
                    await daemon.ready.wait()
                    waiting.cancel_scope.cancel()
            if not daemon.ready.is_set():
                problems = "; ".join(text for _, text in state.errors) or "no error logged"
                raise DemoError(
                    f"somsd run did not become ready (exit code {process.returncode}): {problems}"
                )
            yield daemon
            nursery.cancel_scope.cancel()
    finally:
        # Shielded: a Ctrl-C cancels the demo, but the daemon is still stopped and awaited.
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()


# -- the simulated outside world -------------------------------------------------------------


def _start_counts(location: str) -> list[dict[str, Any]]:
    return [{"sku": item.sku, "on_hand": START_STOCK[location]} for item in DEFAULT_CATALOGUE]


async def seed_stock(admin: httpx.AsyncClient) -> None:
    for location in START_STOCK:
        if location == REST_LOCATION or location in ERP_WAREHOUSES:
            continue  # the 3PL and the ERP report their own stock
        response = await admin.put(f"/v1/locations/{location}/stock", json=_start_counts(location))
        response.raise_for_status()


async def restock(threepl: ThreePLSimulator, state: DemoState) -> None:
    """Play the supplier: a delivery reaches the 3PL before a SKU runs out there.

    The 3PL reports the higher stock on its next poll and somsd re-routes what waited for it, so
    every order of the demo can finish: the 3PL ships everywhere the shop sells, has no daily
    capacity and can send transfers to the stores.
    """
    while True:
        for sku, on_hand in list((threepl.stock or {}).items()):
            if on_hand < RESTOCK_BELOW:
                assert threepl.stock is not None
                threepl.stock[sku] = on_hand + RESTOCK_UNITS
                state.restocks += 1
        await trio.sleep(0.5)


async def customer_code(admin: httpx.AsyncClient, item: WorkItem) -> str | None:
    """The customer at the counter knows the code somsd gave them (from the order's detail)."""
    if item.order_id is None:
        return None
    detail = (await admin.get(f"/v1/orders/{item.order_id}")).json()
    for fulfilment in detail["fulfilment"]["fulfilments"]:
        if fulfilment["id"] == item.id:
            code: str | None = fulfilment.get("pickup_code")
            return code
    return None


# The SelectLine ERP: warehouse 200 is wh-munich's stock (somsd polls it, so the demo does
# not seed that location's stock); every order, shipment and credit note is posted to it.
ERP_LOCATION = "wh-munich"
ERP_WAREHOUSES = {ERP_LOCATION: 'warehouses = ["200"]\npoll_interval = "1s"\n'}
ERP_PASSWORD_FILE = "selectline.password"  # noqa: S105  # a file name, not a password
WAREHOUSE_DELAY = 1.0  # seconds the ERP's warehouse takes from delivery note to parcel


class DemoErp:
    """The demo's ERP: a SelectLine simulator on loopback and its bookkeeper."""

    def __init__(self, seed: int) -> None:
        # The shop's long tail is not in the ERP's article list up front: the simulator takes
        # positions of unknown articles as its article import would (`open_catalogue`).
        self.sim = SelectLineSimulator(
            knobs=SelectLineKnobs(open_catalogue=True), password=secrets.token_hex(12), seed=seed
        )
        self.sim.add_warehouse("200", "Lager München")
        for item in DEFAULT_CATALOGUE:
            self.sim.add_article(item.sku, name=item.name, stock={"200": START_STOCK[ERP_LOCATION]})
        self.url = ""

    async def start(self, nursery: trio.Nursery, data_dir: Path) -> None:
        listener = HttpListener(
            "selectline", self.sim, ListenAddress("127.0.0.1:0"), graceful_timeout=1
        )
        await nursery.start(listener.run)
        nursery.start_soon(self.run_warehouse)
        self.url = listener.urls[0]
        password = data_dir / ERP_PASSWORD_FILE
        password.touch(mode=0o600)
        password.write_text(self.sim.password + "\n")

    def config(self) -> str:
        return f"""
[[erp]]
name = "selectline"
kind = "selectline"
url = "{self.url}"
password_file = "{ERP_PASSWORD_FILE}"
stock_source = true
post_invoices = true
poll_interval = "1s"
payment_interval = "1s"
"""

    def documents_posted(self) -> str:
        counts = Counter(document.kind for document in self.sim.documents.values())
        return "(" + " ".join(f"{kind}{counts[kind]}" for kind in "FLRG") + ")"

    async def book_payments(self, admin: httpx.AsyncClient, state: DemoState) -> None:
        """The bookkeeper: the money of an invoice or bank transfer comes in, and its open item
        is booked paid in the ERP, where somsd's payment poll finds it. Orders paid in the shop
        (card, PayPal) are settled with the provider's payout, which the demo leaves out, so
        their open items stay open; the bookkeeper asks somsd which is which."""
        settled: set[int] = set()
        while True:
            for number, item in list(self.sim.open_items.items()):
                amount = item.Amount
                if (
                    number in settled
                    or amount is None
                    or amount.Outstanding <= 0
                    or not item.YourOrder
                    or not item.OpenItemDocument
                ):
                    continue
                outstanding = await _outstanding(admin, item.YourOrder)
                if outstanding is None:
                    continue  # not known to somsd (yet)
                settled.add(number)
                if outstanding > 0:
                    self.sim.pay(item.OpenItemDocument, min(outstanding, amount.Outstanding))
                    state.payments_booked += 1
            await trio.sleep(1)

    async def run_warehouse(self) -> None:
        """The ERP's warehouse (wh-munich): a delivery note somsd made is picked, packed and
        shipped a second later, with a tracking number noted in the ERP."""
        seen: dict[str, float] = {}
        while True:
            now = trio.current_time()
            for note in self.sim.documents_of("L"):
                partner = note.partner
                if note.status != "0" or not partner:
                    continue
                if "/" not in (partner.BusinessPartnerReferenceNumber or ""):
                    continue  # somsd is still labelling it, or it is a shipment's own note
                if now - seen.setdefault(note.key, now) >= WAREHOUSE_DELAY:
                    self.sim.ship_delivery(note.key, f"SL{note.number}", carrier="DHL")
            await trio.sleep(0.3)

    async def watch_documents(self, state: DemoState) -> None:
        """Keep the live view's count of documents somsd posted to the ERP current."""
        while True:
            state.erp_documents = self.documents_posted()
            await trio.sleep(1)


async def _outstanding(admin: httpx.AsyncClient, number: str) -> Decimal | None:
    """What the order with shop number `number` still owes, per somsd; None if not found."""
    page = (await admin.get("/v1/orders", params={"q": number})).json()
    for summary in page["orders"]:
        if summary["number"] == number:
            order = (await admin.get(f"/v1/orders/{summary['order_id']}")).json()
            return Decimal(order["order"]["payment"]["amount"]) - Decimal(order["paid"])
    return None


def why_waiting(detail: Mapping[str, Any]) -> str:
    """Why an order is not final yet, in a few words, from its `GET /v1/orders/{id}` detail."""
    if detail.get("holds"):
        return "on hold: " + ", ".join(str(hold.get("reason", hold)) for hold in detail["holds"])
    fulfilment = detail.get("fulfilment", {})
    if fulfilment.get("backorder"):
        routing = fulfilment.get("routing") or []
        reasons: Counter[str] = Counter()
        if routing:
            for candidate in routing[-1]["decision"].get("candidates", []):
                if candidate.get("rejected"):
                    reasons[f"{candidate['location']} {candidate['rejected']}"] += 1
        found = ", ".join(sorted(reasons)) or "no location can fill it"
        return f"backordered ({found})"
    lines = detail.get("lines", [])
    shipped = all(line["shipped"] + line["canceled"] >= line["ordered"] for line in lines)
    if shipped:
        return "shipped, awaiting payment"
    if any(item.get("awaiting") for item in fulfilment.get("fulfilments", [])):
        return "pickup awaiting a transfer"
    return "in fulfilment"


async def watch(admin: httpx.AsyncClient, metrics_url: str, state: DemoState) -> None:
    """Refresh the counters the view shows, from the daemon's own API and metrics."""
    async with httpx.AsyncClient() as plain:
        while True:
            statuses: Counter[str] = Counter()
            open_orders: list[str] = []
            cursor = 0
            while True:
                params: dict[str, str | int] = {
                    "cursor": cursor,
                    "limit": 500,
                    "q": state.number_prefix,
                }
                page = (await admin.get("/v1/orders", params=params)).json()
                for summary in page["orders"]:
                    if summary["number"] in state.awaiting_intake:  # polled in from its shop
                        state.awaiting_intake.discard(summary["number"])
                        state.order_ids.add(summary["order_id"])
                        state.taken_in += 1
                        state.polled_in += 1
                    statuses[summary["status"]] += 1
                    if summary["status"] in FINAL_STATUSES:
                        state.final.add(summary["order_id"])
                        state.waiting.pop(summary["order_id"], None)
                    else:
                        open_orders.append(summary["order_id"])
                if page["next_cursor"] is None:
                    break
                cursor = page["next_cursor"]
            state.statuses = statuses
            # The oldest open orders say why they wait; a bounded number per round.
            for order_id in open_orders[:20]:
                response = await admin.get(f"/v1/orders/{order_id}")
                if response.status_code == 200:
                    state.waiting[order_id] = why_waiting(response.json())
            fulfilments: Counter[tuple[str, str]] = Counter()
            response = await admin.get("/v1/fulfillments", params={"limit": 1000})
            if response.status_code == 200:
                for item in response.json().get("fulfillments", []):
                    if str(item.get("order_id", "")) in state.order_ids:
                        fulfilments[(item.get("location", "?"), item["state"])] += 1
            state.fulfilments = fulfilments
            scrape = await plain.get(metrics_url + "/metrics")
            state.metrics = _interesting_metrics(scrape.text)
            await trio.sleep(0.5)


# What the polled shop's panel shows: orders read by polling, stock pushes that reached the
# shop, failed polls and shop orders that could not be taken in.
SHOP_METRICS = (
    "somsd_channel_orders_polled_total",
    "somsd_stock_sync_delivery_seconds_count",
    "somsd_channel_poll_failures_total",
    "somsd_channel_intake_rejected_total",
)
_SHOP_LABELS = {
    "somsd_channel_orders_polled_total": "rows polled",
    "somsd_stock_sync_delivery_seconds_count": "stock pushes",
    "somsd_channel_poll_failures_total": "poll failures",
    "somsd_channel_intake_rejected_total": "intake rejected",
}


def shop_panel_rows(state: DemoState) -> list[tuple[str, str]]:
    """The main shop's panel: somsd's polling and stock pushes, the shop's view, reconciliation."""
    rows = [("polled in", str(state.polled_in))]
    for name, value in sorted(state.metrics.items()):
        base = name.partition("{")[0]
        if base in _SHOP_LABELS:
            labels = _short_metric(name).split(" ")[2:]  # after the channel
            rows.append((" ".join([_SHOP_LABELS[base], *labels]), f"{value:g}"))
    rows += state.shop_rows
    if state.reconciliation is None:
        rows.append(("reconciliation", "later"))
    else:
        rows.append(("reconciliation", ""))
        rows += [(f"  {key}", str(n)) for key, n in state.reconciliation.items() if n]
    return rows


def _interesting_metrics(text: str) -> dict[str, float]:
    wanted = (
        "somsd_routing_decisions_total",
        "somsd_stock_reservations_total",
        "somsd_channel_stock_changes_total",
        "somsd_stock_low_alerts_total",
        "somsd_upstream_requests_total",
        "somsd_dead_letters",
        "somsd_actor_restarts_total",
        "somsd_orders_duplicate_total",
        "somsd_mails_sent_total",
        *SHOP_METRICS,
    )
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            if name.startswith("somsd_actor_restarts_total") and float(value) == 0:
                continue  # only restarts that happened are news
            found[name] = found.get(name, 0.0) + float(value)
    return found


# -- the view --------------------------------------------------------------------------------


def _middle(text: str, width: int) -> str:
    """`text` cut in the middle to `width` characters: both ends of a path stay readable."""
    if len(text) <= width:
        return text
    if width <= 1:
        return text[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def fit_header(api: str, metrics: str, token: str, config: str, width: int) -> str:
    """API URL, metrics URL, token path and config path on one line of at most `width` chars.

    Long forms first; then without the scheme; then the metrics host when it is the API's;
    then the paths' common folder said once, cut in the middle if it must be. The URLs are never
    cut (they are what a user copies) and the file names stay whole.
    """
    bare_api = api.removeprefix("http://")
    bare_metrics = metrics.removeprefix("http://")
    api_host, metrics_host = bare_api.rpartition(":")[0], bare_metrics.rpartition(":")[0]
    short_metrics = (
        bare_metrics.removeprefix(api_host) if api_host == metrics_host else bare_metrics
    )
    forms = [
        f"API {api}  metrics {metrics}/metrics  token {token}  config {config}",
        f"API {bare_api}  metrics {bare_metrics}/metrics  token {token}  config {config}",
        f"API {bare_api} · metrics {bare_metrics} · token {token} · config {config}",
        f"API {bare_api} · metrics {short_metrics} · token {token} · config {config}",
    ]
    for form in forms:
        if len(form) <= width:
            return form
    folder, token_name = os.path.split(token)
    config_folder, config_name = os.path.split(config)
    if folder != config_folder:
        room = (width - len(f"API {bare_api} · metrics {short_metrics} · token  · config ")) // 2
        return (
            f"API {bare_api} · metrics {short_metrics} · token {_middle(token, room)} · "
            f"config {_middle(config, room)}"
        )[:width]
    prefix = f"API {bare_api} · metrics {short_metrics} · "
    names = f"/{{{token_name},{config_name}}}"
    room = width - len(prefix) - len(names)
    return (prefix + _middle(folder, max(room, 3)) + names)[:width]


def _short_metric(name: str) -> str:
    """`somsd_x_total{a="b",c="d"}` as `x b d`: the label values say which one."""
    base, _, labels = name.removeprefix("somsd_").partition("{")
    values = [part.partition("=")[2].strip('"') for part in labels.rstrip("}").split(",") if part]
    return " ".join([base.removesuffix("_total"), *values])


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _fill_cut_left(grid: Any, rows: list[tuple[str, str]], number_width: int) -> Any:
    """Rows of (label, number) where a narrow panel cuts the label, never the number."""
    grid.columns[0].overflow = "ellipsis"
    grid.columns[0].ratio = 1
    grid.columns[1].width = number_width
    for row in rows:
        grid.add_row(*row)
    return grid


def render(
    state: DemoState,
    daemon: DaemonProcess,
    started: float,
    options: DemoOptions,
    config: Path,
    *,
    width: int,
) -> Any:
    from rich import box
    from rich.console import Group
    from rich.layout import Layout
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    def table(*columns: str) -> Table:
        grid = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False)
        for index, name in enumerate(columns):
            grid.add_column(name, justify="right" if index else "left", no_wrap=True)
        return grid

    def panel(body: Any, title: str) -> Panel:
        return Panel(body, title=title, title_align="left", padding=(0, 1))

    orders = table("status", "orders")
    for order_status, count in sorted(state.statuses.items()):
        orders.add_row(order_status, str(count))
    orders.add_row("[dim]placed / refused", f"{state.placed} / {state.rejected_deliveries}")
    orders.add_row("[dim]paid via ERP", f"{state.payments_booked} {state.erp_documents}")
    reasons = Counter(state.waiting.values())
    waiting = Text("\n".join(f"{n} {why}" for why, n in reasons.most_common(3)), style="yellow")

    # The work lists hold what is open: waiting to be started, and in the staff's hands.
    work = table("location", "to start", "in work")
    for location in sorted({location for location, _ in state.fulfilments}):
        counts = {s: n for (loc, s), n in state.fulfilments.items() if loc == location}
        new = sum(n for s, n in counts.items() if s in ("requested", "accepted"))
        work.add_row(location, str(new), str(sum(counts.values()) - new))

    signals = table("metric", "value")
    signals.columns[0].overflow = "ellipsis"
    signals.columns[0].ratio = 1
    signals.columns[1].width = 7  # the numbers are never the part that is cut
    plain_metrics = {
        name: value
        for name, value in sorted(state.metrics.items())
        if not name.startswith(SHOP_METRICS)
    } | {"mails_received": float(state.mails_received)}  # what the customers' SMTP server holds
    for name, value in plain_metrics.items():
        signals.add_row(_short_metric(name), f"{value:g}")
    shop = _fill_cut_left(table("smartstore", ""), shop_panel_rows(state), 6)
    signals.add_row("3pl_restocks", str(state.restocks))

    goal = f"{len(state.final)}/{options.orders} final" if options.orders else "Ctrl-C stops"
    status = Text(
        f"somsd demo run {state.run_id} · {time.monotonic() - started:.0f} s · {goal}",
        style="bold",
        no_wrap=True,
        overflow="ellipsis",
    )
    header = Text(
        fit_header(
            daemon.urls.get("api", "?"),
            daemon.urls.get("metrics", "?"),
            _relative(options.data_dir.resolve() / "admin.token"),
            _relative(config),
            width,
        ),
        no_wrap=True,
        overflow="ellipsis",
    )
    log = Text("\n".join(reversed(state.log_lines)) or "-", no_wrap=True, overflow="ellipsis")
    recent = list(reversed(state.recent_errors()))
    errors = Text("\n".join(recent) or "none", no_wrap=True, overflow="ellipsis")

    layout = Layout()
    layout.split_column(
        Layout(status, size=1), Layout(header, size=1), Layout(name="body", ratio=1)
    )
    orders_panel = panel(Group(orders, waiting), "orders (this run)")
    work_panel = panel(work, "fulfilments by location")
    signals_panel = panel(signals, "stock sync, retries, dead letters")
    shop_panel = panel(shop, "main shop: polling, stock, reconciliation")
    top, bottom = Layout(ratio=3), Layout(ratio=2)
    if width >= _WIDE:
        top.split_row(
            Layout(orders_panel), Layout(work_panel), Layout(shop_panel), Layout(signals_panel)
        )
        bottom.split_row(Layout(panel(log, "log (newest first)")), Layout(panel(errors, "errors")))
        layout["body"].split_column(top, bottom)
    else:
        # Narrow: the signals shrink to two lines of "name value" and every panel is cropped
        # to its share of the screen; nothing is pushed off it.
        compact = " · ".join(
            [f"{_short_metric(name)} {value:g}" for name, value in plain_metrics.items()]
            + [f"3pl_restocks {state.restocks}"]
        )
        top.split_row(Layout(orders_panel), Layout(work_panel), Layout(shop_panel))
        bottom.split_row(Layout(panel(errors, "errors")), Layout(panel(log, "log")))
        layout["body"].split_column(Layout(Text(compact, style="dim"), size=2), top, bottom)
    return layout


async def run_mail_server(
    directory: Path, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """The customers' mail server: `python -m adapters.smtp` on loopback, a Maildir in the
    demo's data dir; started with the port it listens on, stopped when cancelled."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "adapters.smtp", "--dir", str(directory)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(15):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise DemoError("the demo's SMTP server did not start")
                line += chunk
        task_status.started(int(json.loads(line.split(b"\n", 1)[0])["port"]))
        await trio.sleep_forever()
    finally:
        process.terminate()
        with trio.move_on_after(5, shield=True):
            await process.wait()


def mail_config(port: int) -> str:
    return (
        f'\n[notify]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"\n'
        'sender = "somsd Demo Shop <shop@demo.example>"\nshop_name = "somsd Demo Shop"\n'
        'timeout = "5s"\n'
    )


async def count_mails(maildir: Path, state: DemoState) -> None:
    """How many mails the SMTP server has stored, for the live view (every half second)."""
    new, cur = maildir / "new", maildir / "cur"
    while True:
        state.mails_received = sum(
            len(os.listdir(folder)) for folder in (new, cur) if folder.is_dir()
        )
        await trio.sleep(0.5)


def _log_into(state: DemoState) -> None:
    """The simulators' own log lines go to the view's error panel, not over the live screen."""

    def keep(logger: object, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if method in ("warning", "error", "critical", "exception"):
            detail = event.get("error") or event.get("location") or ""
            state.error(f"{event.get('event')}: {detail}"[:160])
        raise structlog.DropEvent

    structlog.configure(processors=[keep])


# -- the run ---------------------------------------------------------------------------------


async def _stop_on_signal(
    state: DemoState,
    stop: trio.Event,
    work: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """First Ctrl-C: end the run and show the summary; while starting, or a second one: now."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            state.interrupted = True
            if stop.is_set() or not state.driving:
                work.cancel()
            stop.set()


async def run_demo(options: DemoOptions) -> int:
    state = DemoState(run_id=secrets.token_hex(3))
    stop = trio.Event()
    code: int | None = None
    async with trio.open_nursery() as top:
        work = trio.CancelScope()
        await top.start(_stop_on_signal, state, stop, work)
        with work:
            code = await _run(options, state, stop)
        top.cancel_scope.cancel()
    if code is None:
        print("somsd demo: interrupted; everything it started is stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    return code


def _keep_previous_run(data_dir: Path) -> None:
    """Start every run on a fresh event store and keep the last one in `previous/`.

    The simulators (shop, 3PL, ERP, DHL) start empty each run, so a previous run's unfinished
    work can never finish: its fulfilments would sit at a 3PL that no longer knows them, its
    shop effects would dead-letter, and the staff would work its leftovers before this run's
    orders. The old store stays for a look (any `somsd` command whose config names it).
    """
    current, previous = data_dir / "data", data_dir / "previous"
    if not current.exists():
        return
    if previous.exists():
        shutil.rmtree(previous)
    current.rename(previous)


def _write_credentials(data_dir: Path, shops: tuple[DemoShop, ...]) -> tuple[str, str]:
    """Fresh admin and 3PL tokens and the shops' keys, as files the demo config names."""
    admin_token, threepl_token = secrets.token_hex(16), secrets.token_hex(16)
    (data_dir / "admin.token").write_text(admin_token + "\n")
    for shop in shops:
        (data_dir / f"{shop.channel}.secret").write_text(shop.secret + "\n")
    (data_dir / "threepl.token").write_text(threepl_token + "\n")
    return admin_token, threepl_token


async def _run(options: DemoOptions, state: DemoState, stop: trio.Event) -> int:
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    _keep_previous_run(data_dir)
    shops = demo_shops(options.seed)
    admin_token, threepl_token = _write_credentials(data_dir, shops)
    _log_into(state)
    knobs = ThreePLKnobs(error_rate=options.error_rate, step_delay=0.3)
    threepl = ThreePLSimulator(
        knobs=knobs,
        stock={item.sku: START_STOCK[REST_LOCATION] for item in DEFAULT_CATALOGUE},
        api_token=threepl_token,
        seed=options.seed,
        # somsd keeps the 3PL's update cursor in the data dir; this run's must be above it.
        first_change=int(time.time() * 1000),
    )
    started = time.monotonic()
    erp = DemoErp(options.seed)
    async with trio.open_nursery() as nursery:
        await erp.start(nursery, data_dir)
        listener = HttpListener("3pl", threepl, ListenAddress("127.0.0.1:0"), graceful_timeout=1)
        await nursery.start(listener.run)
        await nursery.start(threepl.run)
        nursery.start_soon(restock, threepl, state)
        shipping = await start_dhl(nursery, data_dir)
        for shop in shops:
            if shop.start is not None:
                await shop.start(nursery, state)
        mail = await nursery.start(run_mail_server, data_dir / "smtp")
        config = data_dir / "somsd.toml"
        api, metrics = _free("127.0.0.1:8470"), _free("127.0.0.1:9470")
        config.write_text(
            demo_config(
                data_dir,
                listener.urls[0],
                api,
                metrics,
                shops,
                shipping=shipping,
                notify=mail_config(mail),
                erp=erp.config(),
            )
        )
        nursery.start_soon(count_mails, data_dir / "smtp" / "mail", state)
        async with daemon_process(config, state) as daemon:
            headers = {"Authorization": f"Bearer {admin_token}"}
            async with httpx.AsyncClient(
                base_url=daemon.urls["api"], headers=headers, timeout=30
            ) as admin:
                async with trio.open_nursery() as actors:
                    await seed_stock(admin)
                    _start_store_staff(actors, admin, options)
                    actors.start_soon(erp.book_payments, admin, state)
                    actors.start_soon(erp.watch_documents, state)
                    actors.start_soon(watch, admin, daemon.urls["metrics"], state)
                    if options.outage_after is not None:
                        actors.start_soon(_outage, knobs, options)
                    placing = [trio.CancelScope() for _ in shops]
                    parts = zip(shops, shop_options(shops, options), placing, strict=True)
                    for shop, part, scope in parts:
                        if shop.follow is not None:
                            actors.start_soon(shop.follow, admin, state)
                        actors.start_soon(_placing, scope, shop, daemon.urls["api"], part, state)
                    state.driving = True
                    code = await _drive(
                        daemon, state, stop, options=options, started=started, config=config
                    )
                    for scope in placing:
                        scope.cancel()
                    await _wind_down(shops, state, options, code)
                    actors.cancel_scope.cancel()
                await _explain_open_orders(admin, state)
        nursery.cancel_scope.cancel()
    for shop in shops:
        if shop.rows is not None:
            state.shop_rows = shop.rows()
    _summary(state, options, code=code)
    return code


def _start_store_staff(
    nursery: trio.Nursery, admin: httpx.AsyncClient, options: DemoOptions
) -> None:
    """The staff of each manual location: pick, pack (the carrier's label), ship, hand over."""
    for location in MANUAL_LOCATIONS:
        staff = StoreSimulator(
            StoreClient(admin, system=location),
            location,
            knobs=StoreKnobs(
                step_delay=0.3, collect_delay=0.5, poll_interval=0.3, label_from_carrier=True
            ),
            seed=options.seed,
            customer_code=partial(customer_code, admin),
        )
        nursery.start_soon(staff.run)


async def _wind_down(
    shops: tuple[DemoShop, ...], state: DemoState, options: DemoOptions, code: int
) -> None:
    """Placing has stopped. A polled shop's last checkouts reach somsd with its next poll: wait
    for them, so the summary counts every placed order as taken in; after a finished `--orders`
    run, wait until each shop shows what somsd did (its effects are through). Both bounded."""
    if code == EXIT_INTERRUPTED:
        return
    with trio.move_on_after(5):
        while state.awaiting_intake:  # noqa: ASYNC110  # the watch task empties it by polling
            await trio.sleep(0.25)
    if code == 0 and options.orders is not None:
        with trio.move_on_after(15):
            for shop in shops:
                if shop.settle is not None:
                    await shop.settle()


async def _placing(
    scope: trio.CancelScope, shop: DemoShop, api: str, options: DemoOptions, state: DemoState
) -> None:
    with scope:
        await shop.place(shop, api, options, state)


async def _explain_open_orders(admin: httpx.AsyncClient, state: DemoState) -> None:
    """Before the summary: why each order that is not final waits (bounded in count and time)."""
    with trio.move_on_after(10):
        for order_id in sorted(state.order_ids - state.final)[:500]:
            response = await admin.get(f"/v1/orders/{order_id}")
            if response.status_code == 200:
                state.waiting[order_id] = why_waiting(response.json())


async def _outage(knobs: ThreePLKnobs, options: DemoOptions) -> None:
    assert options.outage_after is not None
    await trio.sleep(options.outage_after)
    knobs.outage = "unavailable"
    await trio.sleep(options.outage_seconds)
    knobs.outage = "off"


async def _drive(
    daemon: DaemonProcess,
    state: DemoState,
    stop: trio.Event,
    *,
    options: DemoOptions,
    started: float,
    config: Path,
) -> int:
    if not options.live:
        return await _until_done(state, stop, options, lambda: None)
    from rich.live import Live

    live = Live(refresh_per_second=4, screen=True)

    def view() -> Any:
        return render(state, daemon, started, options, config, width=live.console.width)

    # The alternate screen: the view never scrolls, and the summary lands on the normal screen.
    with live:
        return await _until_done(state, stop, options, lambda: live.update(view()))


async def _until_done(
    state: DemoState, stop: trio.Event, options: DemoOptions, refresh: Callable[[], None]
) -> int:
    deadline = trio.current_time() + options.timeout
    while True:
        refresh()
        done = (
            options.orders is not None
            and state.placed >= options.orders
            and not state.awaiting_intake
            and state.order_ids <= state.final
        )
        if done:
            return 0
        if stop.is_set():
            return 0 if options.orders is None else EXIT_INTERRUPTED
        if options.orders is not None and trio.current_time() > deadline:
            return 1
        with trio.move_on_after(0.25):
            await stop.wait()


def _summary(state: DemoState, options: DemoOptions, *, code: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"somsd demo summary (run {state.run_id})")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("orders placed", str(state.placed))
    table.add_row("  taken in as new orders", str(state.taken_in))
    table.add_row("  already known (other runs)", str(state.known_before))
    for status, count in sorted(state.statuses.items()):
        table.add_row(f"  {status}", str(count))
    goal = options.orders if options.orders is not None else state.placed
    table.add_row("orders final", f"{len(state.final & state.order_ids)} of {goal}")
    open_orders = state.order_ids - state.final
    for why, count in Counter(state.waiting.get(o, "just placed") for o in open_orders).items():
        table.add_row(f"  waiting: {why}", str(count))
    table.add_row("payments booked by the ERP", str(state.payments_booked))
    table.add_row("documents posted to the ERP", state.erp_documents or "-")
    for label, shown in shop_panel_rows(state):
        table.add_row(f"smartstore: {label}", shown)
    table.add_row("3PL restocks by the supplier", str(state.restocks))
    table.add_row("mails received by the SMTP server", str(state.mails_received))
    for name, value in sorted(state.metrics.items()):
        table.add_row(name.removeprefix("somsd_"), f"{value:g}")
    console = Console()
    console.print(table)
    if state.interrupted:
        console.print("stopped by Ctrl-C; the daemon and the simulators were shut down cleanly")
    if code == 0 and options.orders is not None:
        console.print("[green]all orders final")
    elif options.orders is not None:
        console.print("[red]not all orders reached a final state")

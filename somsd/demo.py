"""`somsd demo`: the embedded default, end to end on loopback.

What runs: a real `somsd run` process on SQLite with a generated config (three warehouses, two
stores, one webhook shop); the 3PL simulator speaking the `rest` location protocol for one
warehouse; store staff working the other locations' pick lists through the manual fulfilment
API; a webhook shop placing realistic signed orders; an "ERP" that books the bank transfers and
invoice payments of shipped orders. The live view shows orders by status, fulfilments by
location, stock sync and routing, and errors; the API and metrics stay up so a user can look
around. With `--orders N` the demo places N orders, waits until every one is final (complete,
canceled or closed) and prints a summary: exit 0 only if all N got there.

This module is part of the composition root (like `somsd.daemon`): it wires adapters'
simulators to the daemon's outside interfaces and nothing else; everything it does to the
daemon goes through the daemon's public HTTP API, as a real shop, 3PL or store would.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import structlog
import trio

from adapters.storesim import StoreClient, StoreKnobs, StoreSimulator, WorkItem
from adapters.threepl.simulator import ThreePLKnobs, ThreePLSimulator
from adapters.webhookshop import DEFAULT_CATALOGUE, place_orders
from somsd.config import ListenAddress
from somsd.http import HttpListener

__all__ = ["DemoError", "DemoOptions", "run_demo"]

FINAL_STATUSES = frozenset({"complete", "canceled", "closed"})
CHANNEL = "webshop"
STORES = ("store-essen", "store-berlin")
MANUAL_LOCATIONS = ("wh-leipzig", "wh-munich", *STORES)
REST_LOCATION = "wh-dortmund"
# Units per SKU and location at the start: enough that most orders ship at once, few enough
# that some SKUs sell out somewhere and routing has to choose.
STORE_ADDRESSES = {
    "store-essen": 'address = { name = "somsd Store Essen", street = "Kettwiger Str. 1", '
    'zip = "45127", city = "Essen" }\n',
    "store-berlin": 'address = { name = "somsd Store Berlin", street = "Alexanderplatz 2", '
    'zip = "10178", city = "Berlin" }\n',
}
START_STOCK = {"wh-dortmund": 400, "wh-leipzig": 300, "wh-munich": 200, "store-essen": 15}


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
    placed: int = 0
    rejected_deliveries: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    fulfilments: Counter[tuple[str, str]] = field(default_factory=Counter)
    payments_booked: int = 0
    log_lines: deque[str] = field(default_factory=lambda: deque(maxlen=8))
    errors: deque[str] = field(default_factory=lambda: deque(maxlen=6))
    metrics: dict[str, float] = field(default_factory=dict)
    order_ids: set[str] = field(default_factory=set)
    final: set[str] = field(default_factory=set)


def demo_config(data_dir: Path, threepl_url: str, api: str, metrics: str) -> str:
    locations = [
        (REST_LOCATION, "warehouse", "rest", 51.51, 7.47, '["DE", "AT", "NL", "BE"]', 800, 1),
        ("wh-leipzig", "warehouse", "manual", 51.34, 12.37, '["DE", "AT", "PL", "CZ"]', 600, 1),
        ("wh-munich", "warehouse", "manual", 48.14, 11.58, '["DE", "AT", "CH"]', 500, 2),
        ("store-essen", "store", "manual", 51.46, 7.01, '["DE"]', 40, 3),
        ("store-berlin", "store", "manual", 52.52, 13.40, '["DE"]', 40, 3),
    ]
    blocks = []
    for name, kind, adapter, lat, lon, ships_to, capacity, priority in locations:
        capabilities = '["ship", "pickup"]' if kind == "store" else '["ship"]'
        extra = f'url = "{threepl_url}"\ntoken_file = "threepl.token"\npoll_interval = "1s"\n'
        # Transfers for click & collect are addressed to the store, also when a 3PL sends them.
        address = STORE_ADDRESSES.get(name, "")
        blocks.append(
            f'[[location]]\nname = "{name}"\nkind = "{kind}"\nadapter = "{adapter}"\n'
            f"{extra if adapter == 'rest' else ''}"
            f'country = "DE"\nlat = {lat}\nlon = {lon}\nships_to = {ships_to}\n'
            f"capabilities = {capabilities}\ndaily_capacity = {capacity}\npriority = {priority}\n"
            f"{address}"
        )
    names = ", ".join(f'"{loc[0]}"' for loc in locations)
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

[[channel]]
name = "{CHANNEL}"
kind = "webhook"
secret_file = "{CHANNEL}.secret"
locations = [{names}]
low_stock_threshold = 20

{chr(10).join(blocks)}
[routing]
weights = {{ distance = 1.0, cost = 0.5, speed = 0.5, priority = 0.5 }}
allow_split = true
max_locations = 2

[invoicing]
auto_methods = ["creditcard", "paypal"]
"""


def _free(address: str) -> str:
    """`address` if its port is free, else the same host on port 0 (the daemon reports it)."""
    listen = ListenAddress(address)
    with socket.socket() as probe:
        try:
            probe.bind((listen.host, listen.port))
        except OSError:
            return f"{listen.host}:0"
    return address


# Lines the daemon logs for every order or step: the counters show them better than a log tail.
_ROUTINE_EVENTS = frozenset(
    {"order_received", "order_changed", "fulfilment_step", "order_routed", "stock_reserved"}
)


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
                event = entry.get("event", "")
                if event == "http_listening":
                    self.urls[entry["listener"]] = entry["urls"][0]
                elif event == "somsd_ready":
                    self.ready.set()
                if line.startswith(("<3>", "<4>", "<2>")):
                    state.errors.append(f"{entry.get('actor', '')} {event}".strip())
                elif event not in _ROUTINE_EVENTS:
                    state.log_lines.append(f"{entry.get('actor', '')} {event}".strip())


@asynccontextmanager
async def daemon_process(config: Path, state: DemoState) -> AsyncIterator[DaemonProcess]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "somsd", "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
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
                problems = "; ".join(state.errors) or "no error logged"
                raise DemoError(
                    f"somsd run did not become ready (exit code {process.returncode}): {problems}"
                )
            yield daemon
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()


async def seed_stock(admin: httpx.AsyncClient) -> None:
    for location, units in START_STOCK.items():
        if location == REST_LOCATION:
            continue  # the 3PL reports its own stock
        counts = [{"sku": item.sku, "on_hand": units} for item in DEFAULT_CATALOGUE]
        response = await admin.put(f"/v1/locations/{location}/stock", json=counts)
        response.raise_for_status()


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


async def book_payments(admin: httpx.AsyncClient, state: DemoState) -> None:
    """Play the ERP: book the money of shipped orders that were not prepaid."""
    while True:
        cursor = 0
        while True:
            page = (
                await admin.get("/v1/orders", params={"status": "processing", "cursor": cursor})
            ).json()
            for summary in page["orders"]:
                order = (await admin.get(f"/v1/orders/{summary['order_id']}")).json()
                outstanding = Decimal(order["order"]["payment"]["amount"]) - Decimal(order["paid"])
                all_shipped = all(
                    line["shipped"] + line["canceled"] >= line["ordered"] for line in order["lines"]
                )
                if outstanding > 0 and all_shipped:
                    response = await admin.post(
                        f"/v1/orders/{summary['order_id']}/payments",
                        json={"amount": str(outstanding), "reference": "demo bank transfer"},
                    )
                    if response.status_code == 200:
                        state.payments_booked += 1
            if page["next_cursor"] is None:
                break
            cursor = page["next_cursor"]
        await trio.sleep(1)


async def watch(admin: httpx.AsyncClient, metrics_url: str, state: DemoState) -> None:
    """Refresh the counters the view shows, from the daemon's own API and metrics."""
    async with httpx.AsyncClient() as plain:
        while True:
            statuses: Counter[str] = Counter()
            cursor = 0
            while True:
                page = (
                    await admin.get("/v1/orders", params={"cursor": cursor, "limit": 500})
                ).json()
                for summary in page["orders"]:
                    statuses[summary["status"]] += 1
                    if summary["status"] in FINAL_STATUSES:
                        state.final.add(summary["order_id"])
                if page["next_cursor"] is None:
                    break
                cursor = page["next_cursor"]
            state.statuses = statuses
            fulfilments: Counter[tuple[str, str]] = Counter()
            response = await admin.get("/v1/fulfillments", params={"limit": 1000})
            if response.status_code == 200:
                for item in response.json().get("fulfillments", []):
                    fulfilments[(item.get("location", "?"), item["state"])] += 1
            state.fulfilments = fulfilments
            scrape = await plain.get(metrics_url + "/metrics")
            state.metrics = _interesting_metrics(scrape.text)
            await trio.sleep(0.5)


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
    )
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(wanted):
            name, _, value = line.rpartition(" ")
            if name.startswith("somsd_actor_restarts_total") and float(value) == 0:
                continue  # only restarts that happened are news
            found[name] = found.get(name, 0.0) + float(value)
    return found


def render(state: DemoState, daemon: DaemonProcess, started: float, options: DemoOptions) -> Any:
    from rich.columns import Columns
    from rich.panel import Panel
    from rich.table import Table

    orders = Table(title="orders by status", expand=True)
    orders.add_column("status")
    orders.add_column("orders", justify="right")
    for status, count in sorted(state.statuses.items()):
        orders.add_row(status, str(count))
    orders.add_row(
        "[dim]placed / refused by somsd", f"{state.placed} / {state.rejected_deliveries}"
    )
    orders.add_row("[dim]payments booked by the ERP", str(state.payments_booked))

    work = Table(title="routed to: fulfilments by location", expand=True)
    work.add_column("location")
    work.add_column("state")
    work.add_column("n", justify="right")
    for (location, fstate), count in sorted(state.fulfilments.items()):
        work.add_row(location, fstate, str(count))

    signals = Table(title="stock sync, retries, dead letters", expand=True)
    signals.add_column("metric")
    signals.add_column("value", justify="right")
    for name, value in sorted(state.metrics.items()):
        signals.add_row(name.removeprefix("somsd_"), f"{value:g}")

    goal = f"{len(state.final)}/{options.orders} final" if options.orders else "Ctrl-C to stop"
    header = (
        f"somsd demo — {time.monotonic() - started:5.1f} s — {goal}\n"
        f"API {daemon.urls.get('api')}  metrics {daemon.urls.get('metrics')}/metrics  "
        f"admin token in {options.data_dir / 'admin.token'}"
    )
    events = "\n".join(state.log_lines) or "-"
    errors = "\n".join(state.errors) or "none"
    return Panel(
        Columns([orders, work, signals, Panel(events, title="log"), Panel(errors, title="errors")]),
        title=header,
    )


def _log_into(state: DemoState) -> None:
    """The simulators' own log lines go to the view's error panel, not over the live screen."""

    def keep(logger: object, method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
        if method in ("warning", "error", "critical", "exception"):
            detail = event.get("error") or event.get("location") or ""
            state.errors.append(f"{event.get('event')}: {detail}"[:160])
        raise structlog.DropEvent

    structlog.configure(processors=[keep])


async def run_demo(options: DemoOptions) -> int:
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    admin_token, shop_secret, threepl_token = (secrets.token_hex(16) for _ in range(3))
    (data_dir / "admin.token").write_text(admin_token + "\n")
    (data_dir / f"{CHANNEL}.secret").write_text(shop_secret + "\n")
    (data_dir / "threepl.token").write_text(threepl_token + "\n")
    state = DemoState()
    _log_into(state)
    knobs = ThreePLKnobs(error_rate=options.error_rate, step_delay=0.3)
    threepl = ThreePLSimulator(
        knobs=knobs,
        stock={item.sku: START_STOCK[REST_LOCATION] for item in DEFAULT_CATALOGUE},
        api_token=threepl_token,
        seed=options.seed,
    )
    started = time.monotonic()
    async with trio.open_nursery() as nursery:
        listener = HttpListener("3pl", threepl, ListenAddress("127.0.0.1:0"), graceful_timeout=1)
        await nursery.start(listener.run)
        await nursery.start(threepl.run)
        config = data_dir / "somsd.toml"
        config.write_text(
            demo_config(
                data_dir, listener.urls[0], _free("127.0.0.1:8470"), _free("127.0.0.1:9470")
            )
        )
        async with daemon_process(config, state) as daemon:
            headers = {"Authorization": f"Bearer {admin_token}"}
            async with (
                httpx.AsyncClient(
                    base_url=daemon.urls["api"], headers=headers, timeout=30
                ) as admin,
                trio.open_nursery() as actors,
            ):
                await seed_stock(admin)
                for location in MANUAL_LOCATIONS:
                    staff = StoreSimulator(
                        StoreClient(admin, system=location),
                        location,
                        knobs=StoreKnobs(step_delay=0.3, collect_delay=0.5, poll_interval=0.3),
                        seed=options.seed,
                        customer_code=partial(customer_code, admin),
                    )
                    actors.start_soon(staff.run)
                actors.start_soon(book_payments, admin, state)
                actors.start_soon(watch, admin, daemon.urls["metrics"], state)
                if options.outage_after is not None:
                    actors.start_soon(_outage, knobs, options)
                code = await _drive(
                    actors, daemon, state, options=options, secret=shop_secret, started=started
                )
                actors.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    return code


async def _outage(knobs: ThreePLKnobs, options: DemoOptions) -> None:
    assert options.outage_after is not None
    await trio.sleep(options.outage_after)
    knobs.outage = "unavailable"
    await trio.sleep(options.outage_seconds)
    knobs.outage = "off"


async def _place(
    client: httpx.AsyncClient, url: str, secret: str, options: DemoOptions, state: DemoState
) -> None:
    count = options.orders if options.orders is not None else 10**9
    number = int(time.time())  # a fresh order number range per run: numbers are external ids
    async for delivery in place_orders(
        client,
        url,
        secret.encode(),
        count,
        rate=options.rate,
        seed=options.seed,
        stores=STORES,
        redeliver_share=0.05,
        number_prefix="D",
        first_number=number,
    ):
        if delivery.order_id is not None:
            state.order_ids.add(delivery.order_id)
            if not delivery.redelivery:
                state.placed += 1
        elif delivery.error is not None:
            state.rejected_deliveries += 1
            state.errors.append(delivery.error)


async def _drive(
    nursery: trio.Nursery,
    daemon: DaemonProcess,
    state: DemoState,
    *,
    options: DemoOptions,
    secret: str,
    started: float,
) -> int:
    url = f"{daemon.urls['api']}/v1/channels/{CHANNEL}/orders"
    async with httpx.AsyncClient(timeout=30) as shop:
        nursery.start_soon(_place, shop, url, secret, options, state)
        if options.live:
            from rich.live import Live

            with Live(render(state, daemon, started, options), refresh_per_second=4) as live:
                return await _until_done(
                    state, options, lambda: live.update(render(state, daemon, started, options))
                )
        return await _until_done(state, options, lambda: None)


async def _until_done(state: DemoState, options: DemoOptions, refresh: Any) -> int:
    deadline = trio.current_time() + options.timeout
    while True:
        refresh()
        if options.orders is not None:
            if state.placed >= options.orders and state.order_ids <= state.final:
                _summary(state, options, ok=True)
                return 0
            if trio.current_time() > deadline:
                _summary(state, options, ok=False)
                return 1
        await trio.sleep(0.25)


def _summary(state: DemoState, options: DemoOptions, *, ok: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="somsd demo summary")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("orders placed", str(state.placed))
    for status, count in sorted(state.statuses.items()):
        table.add_row(f"  {status}", str(count))
    table.add_row("orders final", f"{len(state.final & state.order_ids)} of {options.orders}")
    table.add_row("payments booked by the ERP", str(state.payments_booked))
    for name, value in sorted(state.metrics.items()):
        table.add_row(name.removeprefix("somsd_"), f"{value:g}")
    console = Console()
    console.print(table)
    console.print("[green]all orders final" if ok else "[red]not all orders reached a final state")

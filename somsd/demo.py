"""`somsd demo`: the embedded default, end to end on loopback.

What runs: a real `somsd run` process on SQLite with a generated config (three warehouses, two
stores, the shops listed in `SHOPS`); the 3PL simulator speaking the `rest` location protocol for
one warehouse; store staff working the other locations' pick lists through the manual
fulfilment API; a webhook shop placing realistic signed orders; an "ERP" that books the bank
transfers and invoice payments of shipped orders; a supplier that restocks the 3PL before it
runs dry, so every order can finish. The live view shows orders by status (and why those that
wait, wait), fulfilments by location, stock sync and routing, and errors; the API and metrics
stay up so a user can look around. With `--orders N` the demo places N orders, waits until
every one is final (complete, canceled or closed) and prints a summary: exit 0 only if all N
got there. Ctrl-C stops everything cleanly and prints the summary too (exit 0 without
`--orders`, 130 when it interrupts an `--orders` run before every order is final).

Every run numbers its orders with a fresh run id (`D<run id>-1`, ...), so runs into the same
data dir never collide, and the view and summary count only this run's orders.

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

from adapters.storesim import StoreClient, StoreKnobs, StoreSimulator, WorkItem
from adapters.threepl.simulator import ThreePLKnobs, ThreePLSimulator
from adapters.webhookshop import DEFAULT_CATALOGUE, place_orders
from somsd.config import ListenAddress
from somsd.http import HttpListener

__all__ = ["EXIT_INTERRUPTED", "DemoError", "DemoOptions", "fit_header", "run_demo"]

FINAL_STATUSES = frozenset({"complete", "canceled", "closed"})
EXIT_INTERRUPTED = 130  # the shell's code for "ended by SIGINT"
STORES = ("store-essen", "store-berlin")
MANUAL_LOCATIONS = ("wh-leipzig", "wh-munich", *STORES)
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
    ("wh-munich", "warehouse", "manual", 48.14, 11.58, '["DE", "AT", "CH"]', 500, 2),
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


def demo_shops() -> tuple[DemoShop, ...]:
    """The demo's shops; a new shop kind adds its entry here (config block and placer)."""
    return (
        DemoShop(
            channel="webshop",
            secret=secrets.token_hex(16),
            config=_webhook_config,
            place=_place_webhook,
        ),
    )


# -- config, ports, the daemon process -------------------------------------------------------


def demo_config(
    data_dir: Path, threepl_url: str, api: str, metrics: str, shops: tuple[DemoShop, ...]
) -> str:
    blocks = []
    for name, kind, adapter, lat, lon, ships_to, capacity, priority in LOCATIONS:
        capabilities = '["ship", "pickup"]' if kind == "store" else '["ship"]'
        extra = f'url = "{threepl_url}"\ntoken_file = "threepl.token"\npoll_interval = "1s"\n'
        # Transfers for click & collect are addressed to the store, also when a 3PL sends them.
        address = STORE_ADDRESSES.get(name, "")
        limit = f"daily_capacity = {capacity}\n" if capacity is not None else ""
        blocks.append(
            f'[[location]]\nname = "{name}"\nkind = "{kind}"\nadapter = "{adapter}"\n'
            f"{extra if adapter == 'rest' else ''}"
            f'country = "DE"\nlat = {lat}\nlon = {lon}\nships_to = {ships_to}\n'
            f"capabilities = {capabilities}\n{limit}priority = {priority}\n"
            f"{address}"
        )
    channels = "\n".join(shop.config(shop) for shop in shops)
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
"""


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


async def seed_stock(admin: httpx.AsyncClient) -> None:
    for location, units in START_STOCK.items():
        if location == REST_LOCATION:
            continue  # the 3PL reports its own stock
        counts = [{"sku": item.sku, "on_hand": units} for item in DEFAULT_CATALOGUE]
        response = await admin.put(f"/v1/locations/{location}/stock", json=counts)
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


async def book_payments(admin: httpx.AsyncClient, state: DemoState) -> None:
    """Play the ERP: book the money of shipped orders that were not prepaid."""
    while True:
        cursor = 0
        while True:
            params: dict[str, str | int] = {
                "status": "processing",
                "cursor": cursor,
                "q": state.number_prefix,
            }
            page = (await admin.get("/v1/orders", params=params)).json()
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
    orders.add_row("[dim]paid via ERP", str(state.payments_booked))
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
    for name, value in sorted(state.metrics.items()):
        signals.add_row(_short_metric(name), f"{value:g}")
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
    top, bottom = Layout(ratio=3), Layout(ratio=2)
    if width >= _WIDE:
        top.split_row(Layout(orders_panel), Layout(work_panel), Layout(signals_panel))
        bottom.split_row(Layout(panel(log, "log (newest first)")), Layout(panel(errors, "errors")))
        layout["body"].split_column(top, bottom)
    else:
        # Narrow: the signals shrink to two lines of "name value" and every panel is cropped
        # to its share of the screen; nothing is pushed off it.
        compact = " · ".join(
            [f"{_short_metric(name)} {value:g}" for name, value in sorted(state.metrics.items())]
            + [f"3pl_restocks {state.restocks}"]
        )
        top.split_row(Layout(orders_panel), Layout(work_panel))
        bottom.split_row(Layout(panel(errors, "errors")), Layout(panel(log, "log")))
        layout["body"].split_column(Layout(Text(compact, style="dim"), size=2), top, bottom)
    return layout


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


async def _run(options: DemoOptions, state: DemoState, stop: trio.Event) -> int:
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    shops = demo_shops()
    admin_token, threepl_token = secrets.token_hex(16), secrets.token_hex(16)
    (data_dir / "admin.token").write_text(admin_token + "\n")
    for shop in shops:
        (data_dir / f"{shop.channel}.secret").write_text(shop.secret + "\n")
    (data_dir / "threepl.token").write_text(threepl_token + "\n")
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
    async with trio.open_nursery() as nursery:
        listener = HttpListener("3pl", threepl, ListenAddress("127.0.0.1:0"), graceful_timeout=1)
        await nursery.start(listener.run)
        await nursery.start(threepl.run)
        nursery.start_soon(restock, threepl, state)
        config = data_dir / "somsd.toml"
        api, metrics = _free("127.0.0.1:8470"), _free("127.0.0.1:9470")
        config.write_text(demo_config(data_dir, listener.urls[0], api, metrics, shops))
        async with daemon_process(config, state) as daemon:
            headers = {"Authorization": f"Bearer {admin_token}"}
            async with httpx.AsyncClient(
                base_url=daemon.urls["api"], headers=headers, timeout=30
            ) as admin:
                async with trio.open_nursery() as actors:
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
                    for shop in shops:
                        actors.start_soon(shop.place, shop, daemon.urls["api"], options, state)
                    state.driving = True
                    code = await _drive(
                        daemon, state, stop, options=options, started=started, config=config
                    )
                    actors.cancel_scope.cancel()
                await _explain_open_orders(admin, state)
        nursery.cancel_scope.cancel()
    _summary(state, options, code=code)
    return code


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
    table.add_row("3PL restocks by the supplier", str(state.restocks))
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

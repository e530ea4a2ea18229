"""`LocationActor`: one per `[[location]]`, driving the location's adapter.

What it does depends on `adapter`:

- `rest` (`adapters.threepl`): builds its own `httpx.AsyncClient` (base URL, bearer token from
  `token_file`, explicit `Timeout` and `Limits`); registers a deliverer for `location/<name>`
  with the outbox dispatcher that POSTs the fulfilment with the entry's idempotency key; polls
  `GET /fulfillments?updated_since=<cursor>` every `poll_interval` and hands each change to the
  sink; fetches `GET /stock` every `stock_interval` for the sink; takes signed status callbacks
  (`POST /v1/locations/{location}/callbacks`, see `LocationRoutes`). A stock count is handed
  over only after the feed was read to its end *after* the count was taken: the count already
  lacks every unit the 3PL shipped before it, and a shipment not yet read from the feed still
  holds its reservation here, so those units would be missing twice - ATP too low, and worse,
  reservations reported oversold and given up although the 3PL has shipped them, which sends
  the same units out again from elsewhere. On a takeover (the first steps of a new owner) this
  is what makes the heir's first count safe.
- `csv` (`adapters.csvfiles`): the deliverer writes the fulfilment file atomically; every
  `poll_interval` the inbound folder's status and stock files go to the sink and only then are
  moved to `processed/`.
- `selectline` (`actors.selectline_location`): the ERP's own warehouse picks and ships. The
  deliverer turns a fulfilment into a delivery note in the ERP through the running ERP
  section's session (`erps`), and every `poll_interval` the ERP's shipped delivery notes come
  back as `shipped` with their tracking numbers.
- `manual`: no deliverer, no polling. Staff use the
  fulfilment API; the actor only answers status requests.

**The poll cursor is stored only after the sink accepted the updates** (an event
`location_cursor_advanced` in stream `location-<name>`, read back at start), exactly as the
protocol asks: a crash between the two repeats updates, it never skips one. The sink must
therefore take a repeated or older update calmly (statuses only move forward; see
`LocationSink`). Callbacks do not move the cursor: they can be lost, and a cursor advanced past
a lost change would skip it for good.

An unavailable upstream never stops the actor: failed deliveries are retried by the
dispatcher, a failed poll by the next poll. The first failure logs `upstream_unavailable`, the
first success after it `upstream_available_again` (`UpstreamMonitor`, shared with the
dispatcher so deliveries and polls of one location log one outage once).

## The outbox payload a location's deliverer expects (target `location/<name>`)

```json
{
  "type": "send_fulfilment",
  "fulfilment_id": "ful-01J9Z",
  "order_ref": "1042",
  "mode": "ship",
  "ship_to": {"name": "Max Muster", "company": null, "street": "Hauptstr. 1",
              "zip": "10115", "city": "Berlin", "country": "DE"},
  "lines": [{"sku": "MUG-1", "quantity": 2}]
}
```
`send_fulfilment_payload(...)` builds it from an order and the router's allocation (the same
consignee rule both adapters use); `mode` is ship | pickup, `fulfilment_id` is
`[A-Za-z0-9._-]{1,100}` (a file name for `csv`, a path segment for `rest`). `type` may be left
out; other values are refused (dead letter), which leaves room for e.g. cancellations later.
The entry's idempotency key goes upstream as `Idempotency-Key`: keep it stable per fulfilment
(`location/<name>:<fulfilment_id>` works) and never reuse it for a different payload, which the
protocol answers with 422. Don't write entries for `manual` locations: nobody delivers them.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal, Protocol, TypeVar

import httpx
import msgspec
import structlog
import trio
from starlette.requests import Request
from starlette.responses import Response

from actors.integration import Describe, IntegrationStatus
from actors.outbox import OutboxDispatcher, UpstreamMonitor
from adapters.consignee import consignee_for
from adapters.csvfiles import (
    CsvLocation,
    FulfillmentFile,
    FulfillmentRow,
    StatusFile,
    StockFile,
    stock_reports,
)
from adapters.csvfiles import rejection_reason as csv_rejection_reason
from adapters.errors import PermanentUpstreamError, TransientUpstreamError, UpstreamError
from adapters.threepl import (
    Fulfillment,
    FulfillmentRequest,
    InvalidCallback,
    StatusCallback,
    ThreePLClient,
    decode_callback,
    rejected_lines,
    stock_report,
)
from adapters.threepl.wire import RequestLine, ShipTo
from somsd.actor import Actor, Reply, ReplyError
from somsd.api import ApiError, ApiRoute, json_response, read_limited_body
from somsd.config import LocationConfig
from somsd.domain.atp import RejectionReason, StockReport
from somsd.domain.order import Address, Order
from somsd.domain.routing import Allocation
from somsd.signing import SIGNATURE_HEADER, SignatureError
from somsd.store import EventStore, NewEvent, OutboxEntry, VersionConflict

if TYPE_CHECKING:
    from actors.erp import SelectLineErp

__all__ = [
    "CURSOR_EVENT",
    "DEFAULT_STOCK_INTERVAL",
    "CallbackAnswer",
    "DeliveryLine",
    "DescribeLocation",
    "FulfilmentStatus",
    "HandleCallback",
    "LineRejection",
    "LocationActor",
    "LocationHealth",
    "LocationMessage",
    "LocationRoutes",
    "LocationSink",
    "LocationUpdate",
    "SendFulfilment",
    "csv_file",
    "csv_updates",
    "cursor_stream",
    "decode_delivery",
    "location_target",
    "rest_request",
    "rest_update",
    "send_fulfilment_payload",
]

log = structlog.get_logger("actors.location")

T = TypeVar("T")

FulfilmentStatus = Literal[
    "accepted", "picked", "packed", "shipped", "ready_for_pickup", "picked_up", "rejected"
]

CURSOR_EVENT: Final = "location_cursor_advanced"
# Absolute stock every five minutes: shipments already reach the stock book through status
# updates, so the count is a reconciliation, not the main path; five minutes bounds drift from
# what the warehouse books by hand (breakage, inbound goods) without re-reading a 100,000-SKU
# list every poll.
DEFAULT_STOCK_INTERVAL: Final = 300.0
# Per-request budgets of the `rest` client. connect 5 s: a host that does not complete a TCP
# handshake in 5 s is down for our purposes. read 30 s: a WMS may create a fulfilment
# synchronously (stock checks, label pre-allocation) and the protocol has no async ack; beyond
# 30 s the dispatcher retries with the same key, which is safe. write 10 s: our bodies are a few
# KiB. pool 10 s: connections are sized so a request never waits for one in normal operation.
DEFAULT_TIMEOUT: Final = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=10.0)
# Callback event ids remembered to answer a redelivered callback without bothering the sink.
# The simulator (and most WMSs) retry within seconds; a thousand covers minutes of traffic.
SEEN_CALLBACKS: Final = 1000
# How long a callback request waits for the actor to record it before answering 503: the
# sender retries, and the poller catches up on what it misses anyway.
CALLBACK_ANSWER_DEADLINE: Final = 10.0
# Callback bodies are one fulfilment; 1 MiB is far above any real one and bounds memory.
MAX_CALLBACK_BYTES: Final = 1024 * 1024


# -- the sink: what the fulfilment desk implements ------------------------------------------------


class LineRejection(msgspec.Struct, frozen=True):
    """Units of one SKU the location refused, in total so far (absolute, not a delta)."""

    sku: str
    quantity: int
    reason: RejectionReason


class LocationSink(Protocol):
    """Where a location actor hands what it learns; implemented by the fulfilment desk.

    `location_update` reports a fulfilment's status as the location sees it:
    - `status` is accepted | picked | packed | shipped | ready_for_pickup | picked_up | rejected.
      Updates can repeat (a poll after a crash, a callback crossing a poll) and arrive out of
      order between callbacks and polls: ignore a status older than the one recorded.
    - `lines` lists the location's line rejections, each absolute per SKU (apply as "this many
      units of this SKU are rejected", never add). They may arrive with any status; a
      fulfilment is wholly rejected when they cover all its units, which `status == "rejected"`
      usually also says (the `csv` format has no separate whole-fulfilment rejection).
    - `reason` is the rejection reason when `status` is rejected; `carrier` and
      `tracking_number` come with shipped; `at` is when the location made the change.
    Raise to refuse: the actor keeps the cursor (or the inbound file) and offers the update
    again on the next poll. Return only once the update is durable (events committed).

    `stock_report` hands over an absolute count (`complete` when it lists every SKU there).
    """

    async def location_update(
        self,
        location: str,
        fulfilment_id: str,
        status: FulfilmentStatus,
        *,
        lines: tuple[LineRejection, ...] = (),
        tracking_number: str | None = None,
        carrier: str | None = None,
        reason: RejectionReason | None = None,
        at: datetime | None = None,
    ) -> None: ...

    async def stock_report(self, report: StockReport) -> None: ...


class LocationUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """One `location_update` call, as the pure mappings below produce it."""

    fulfilment_id: str
    status: FulfilmentStatus
    lines: tuple[LineRejection, ...] = ()
    tracking_number: str | None = None
    carrier: str | None = None
    reason: RejectionReason | None = None
    at: datetime | None = None


def rest_update(fulfillment: Fulfillment) -> LocationUpdate:
    """A `rest` fulfilment (poll item or callback) as one update."""
    lines = tuple(LineRejection(r.sku, r.quantity, r.reason) for r in rejected_lines(fulfillment))
    return LocationUpdate(
        fulfilment_id=fulfillment.id,
        status=fulfillment.status,
        lines=lines,
        tracking_number=fulfillment.tracking_number,
        carrier=fulfillment.carrier,
        reason=lines[0].reason if fulfillment.status == "rejected" and lines else None,
        at=fulfillment.updated_at,
    )


def csv_updates(file: StatusFile) -> list[LocationUpdate]:
    """A status file's rows as updates, per fulfilment in order of first appearance.

    A `csv` `rejected` row rejects one line, not the fulfilment, so a fulfilment's rejected
    rows are folded into its last status row of the file; a fulfilment with nothing but
    rejected rows (the warehouse could fill none of it) becomes one `rejected` update.
    """
    groups: dict[str, list[LocationUpdate]] = {}
    rejections: dict[str, list[LineRejection]] = {}
    for row in file.parsed.rows:
        groups.setdefault(row.fulfillment_id, [])
        found = rejections.setdefault(row.fulfillment_id, [])
        if row.status == "rejected":
            # The parser guarantees sku, quantity and reason on rejected rows.
            assert row.sku is not None
            assert row.quantity is not None
            assert row.reason is not None
            found.append(LineRejection(row.sku, row.quantity, csv_rejection_reason(row.reason)))
            continue
        groups[row.fulfillment_id].append(
            LocationUpdate(
                fulfilment_id=row.fulfillment_id,
                status=row.status,
                tracking_number=row.tracking_number,
                carrier=row.carrier,
                at=row.at,
            )
        )
    updates: list[LocationUpdate] = []
    for fulfilment_id, found_statuses in groups.items():
        lines = tuple(rejections[fulfilment_id])
        statuses = list(found_statuses)
        if not statuses:
            last_at = max(r.at for r in file.parsed.rows if r.fulfillment_id == fulfilment_id)
            statuses = [
                LocationUpdate(
                    fulfilment_id=fulfilment_id,
                    status="rejected",
                    reason=lines[0].reason,
                    at=last_at,
                )
            ]
        if lines:
            statuses[-1] = msgspec.structs.replace(statuses[-1], lines=lines)
        updates.extend(statuses)
    return updates


# -- the outbox payload ---------------------------------------------------------------------------


class DeliveryLine(msgspec.Struct, frozen=True, kw_only=True):
    sku: str
    quantity: int


class SendFulfilment(msgspec.Struct, frozen=True, kw_only=True, tag="send_fulfilment"):
    """The outbox payload for `location/<name>` (JSON in the module docstring)."""

    fulfilment_id: str
    order_ref: str
    mode: Literal["ship", "pickup"]
    ship_to: Address
    lines: tuple[DeliveryLine, ...]


_payload_encoder = msgspec.json.Encoder()
_payload_decoder = msgspec.json.Decoder(SendFulfilment)


def location_target(location: str) -> str:
    """The outbox target of a location: `location/<name>`."""
    return f"location/{location}"


def send_fulfilment_payload(
    fulfilment_id: str,
    order: Order,
    allocation: Allocation,
    *,
    store_address: Address | None = None,
) -> bytes:
    """The outbox payload that sends `allocation`'s lines of `order` to its location.

    A transfer allocation (stock for a pickup store) needs that store's `store_address`.
    """
    consignee = consignee_for(order, allocation, store_address=store_address)
    payload = SendFulfilment(
        fulfilment_id=fulfilment_id,
        order_ref=order.number,
        mode=consignee.mode,
        ship_to=consignee.address,
        lines=tuple(
            DeliveryLine(sku=line.sku, quantity=line.quantity) for line in allocation.lines
        ),
    )
    return _payload_encoder.encode(payload)


def decode_delivery(entry: OutboxEntry) -> SendFulfilment:
    """The entry's payload, or `PermanentUpstreamError`: a payload we cannot read stays
    unreadable, so it goes to the dead letters at once instead of being retried for an hour."""
    try:
        return _payload_decoder.decode(entry.payload)
    except msgspec.DecodeError as exc:
        raise PermanentUpstreamError(
            entry.target,
            f"{entry.target}: outbox entry {entry.id} is not a send_fulfilment payload ({exc}); "
            "a bug in whatever wrote it",
            operation="decode payload",
        ) from exc


def rest_request(delivery: SendFulfilment) -> FulfillmentRequest:
    """The `POST /fulfillments` body for a payload."""
    address = delivery.ship_to
    return FulfillmentRequest(
        id=delivery.fulfilment_id,
        order_ref=delivery.order_ref,
        mode=delivery.mode,
        ship_to=ShipTo(
            name=address.name,
            company=address.company,
            street=address.street,
            zip=address.zip,
            city=address.city,
            country=address.country,
        ),
        lines=tuple(RequestLine(sku=line.sku, quantity=line.quantity) for line in delivery.lines),
    )


def csv_file(delivery: SendFulfilment) -> FulfillmentFile:
    """The outbound `csv` file for a payload."""
    address = delivery.ship_to
    return FulfillmentFile(
        fulfillment_id=delivery.fulfilment_id,
        order_ref=delivery.order_ref,
        mode=delivery.mode,
        name=address.name,
        company=address.company,
        street=address.street,
        zip=address.zip,
        city=address.city,
        country=address.country,
        lines=tuple(
            FulfillmentRow(sku=line.sku, quantity=line.quantity) for line in delivery.lines
        ),
    )


# -- the cursor, stored as events ----------------------------------------------------------------


class CursorAdvanced(msgspec.Struct, frozen=True):
    """Event payload: every update up to `cursor` of the poll feed was accepted by the sink."""

    cursor: str


def cursor_stream(location: str) -> str:
    return f"location-{location}"


# -- messages -------------------------------------------------------------------------------------


class LocationHealth(msgspec.Struct, frozen=True):
    name: str
    adapter: str
    available: bool  # no transient failure since the last success
    cursor: str | None  # rest: the poll feed position stored last
    last_poll_at: float | None  # unix time of the last successful poll
    problems: dict[str, str]  # step (poll, stock) -> its last problem, until that step succeeds
    callbacks: int  # callbacks handed to the sink since start


class DescribeLocation(msgspec.Struct, frozen=True, tag=True):
    reply: Reply[LocationHealth]


class CallbackAnswer(msgspec.Struct, frozen=True):
    event_id: str
    duplicate: bool


class HandleCallback(msgspec.Struct, frozen=True, tag=True):
    callback: StatusCallback
    reply: Reply[CallbackAnswer]


LocationMessage = Describe | DescribeLocation | HandleCallback


# -- the actor ------------------------------------------------------------------------------------


_DRIVEN_ADAPTERS = frozenset({"rest", "csv", "manual", "selectline"})


class LocationActor(Actor[LocationMessage]):
    """Drives one `[[location]]`'s adapter; see the module docstring."""

    def __init__(
        self,
        section: LocationConfig,
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        sink: LocationSink,
        stock_interval: float = DEFAULT_STOCK_INTERVAL,
        http_timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
        erp: Callable[[], SelectLineErp | None] | None = None,
    ) -> None:
        """`erp` (adapter selectline): the running ERP section whose session it uses."""
        super().__init__(location_target(section.name))
        if section.adapter == "rest" and section.url is None:
            raise ValueError(f"location {section.name!r}: adapter rest needs url")
        if section.adapter == "csv" and (
            section.outbound_dir is None or section.inbound_dir is None
        ):
            raise ValueError(
                f"location {section.name!r}: adapter csv needs outbound_dir and inbound_dir"
            )
        self.section = section
        self.kind: str = section.kind
        # The adapters `_adapter` drives; "manual" is the operator API. Others: no driver yet.
        self.driver: str | None = section.adapter if section.adapter in _DRIVEN_ADAPTERS else None
        self.target = location_target(section.name)
        self.store = store
        self.dispatcher = dispatcher
        self.sink = sink
        self.stock_interval = stock_interval
        self.http_timeout = http_timeout
        self._clock = clock
        self._erp = erp or (lambda: None)
        self.created_at = clock()
        self.handled = 0
        self._cursor: str | None = None
        self._version = 0
        self._last_poll_at: float | None = None
        self._problems: dict[str, str] = {}  # step (poll, stock) -> its unsolved problem
        self._callbacks = 0
        self._seen: OrderedDict[str, None] = OrderedDict()
        # One reader of the feed at a time: the poll and the stock step both read it.
        self._feed = trio.Lock()

    @property
    def upstream(self) -> UpstreamMonitor:
        return self.dispatcher.upstream

    @property
    def cursor(self) -> str | None:
        return self._cursor

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect the adapter, register the deliverer, poll, answer messages until cancelled."""
        await self._load_cursor()
        async with self._adapter() as (deliver, pollers):
            if deliver is not None:
                self.dispatcher.register(self.target, deliver)
            try:
                async with trio.open_nursery() as nursery:
                    for poller in pollers:
                        nursery.start_soon(poller)
                    log.info(
                        "location_started",
                        location=self.section.name,
                        adapter=self.section.adapter,
                        cursor=self._cursor,
                    )
                    task_status.started()
                    await self._serve()
            finally:
                if deliver is not None:
                    self.dispatcher.unregister(self.target, deliver)

    @asynccontextmanager
    async def _adapter(
        self,
    ) -> AsyncIterator[tuple[Callable[[OutboxEntry], Awaitable[None]] | None, list[_Poller]]]:
        section = self.section
        if section.adapter == "rest":
            async with self._http_client() as http:
                client = ThreePLClient(http, system=self.target)
                yield (
                    partial(self._deliver_rest, client),
                    [
                        partial(
                            self._every,
                            section.poll_interval.seconds,
                            "poll",
                            partial(self._poll_rest, client),
                        ),
                        partial(
                            self._every,
                            self.stock_interval,
                            "stock",
                            partial(self._fetch_stock, client),
                        ),
                    ],
                )
        elif section.adapter == "csv":
            assert section.outbound_dir is not None
            assert section.inbound_dir is not None
            folders = CsvLocation(
                outbound=Path(section.outbound_dir),
                inbound=Path(section.inbound_dir),
                system=self.target,
            )
            yield (
                partial(self._deliver_csv, folders),
                [
                    partial(
                        self._every,
                        section.poll_interval.seconds,
                        "poll",
                        partial(self._poll_csv, folders),
                    )
                ],
            )
        elif section.adapter == "selectline":
            from actors.selectline_location import SelectLineWarehouse  # cycle

            warehouse = SelectLineWarehouse(
                section, erp=self._erp, store=self.store, sink=self.sink
            )
            yield (
                warehouse.deliver,
                [
                    partial(
                        self._every,
                        section.poll_interval.seconds,
                        "poll",
                        partial(self._read, warehouse.poll),
                    )
                ],
            )
        else:  # manual: the operator API; no deliverer, no polling
            yield None, []

    def _http_client(self) -> httpx.AsyncClient:
        headers: dict[str, str] = {}
        tokens = self.section.token_file.lines() if self.section.token_file else []
        if tokens:
            # The first line: a token file may list more for rotation on the server's side.
            headers["Authorization"] = f"Bearer {tokens[0].reveal()}"
        # Connections: the dispatcher's deliveries to this location, one poll and one stock
        # fetch, so no request ever waits for a connection in normal operation.
        connections = self.dispatcher.per_target + 2
        return httpx.AsyncClient(
            base_url=self.section.url or "",
            headers=headers,
            timeout=self.http_timeout,
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                # Below the 65 s keep-alive servers like ours (and nginx's 75 s) keep, so we
                # never reuse a connection the server is about to close.
                keepalive_expiry=30.0,
            ),
        )

    async def _serve(self) -> None:
        async for message in self.mailbox:
            self.handled += 1
            match message:
                case Describe(reply=reply):
                    reply.set(
                        IntegrationStatus(self.name, self.kind, self.created_at, self.handled)
                    )
                case DescribeLocation(reply=reply):
                    reply.set(self.status())
                case HandleCallback(callback=callback, reply=reply):
                    await self._handle_callback(callback, reply)

    def status(self) -> LocationHealth:
        return LocationHealth(
            name=self.section.name,
            adapter=self.section.adapter,
            available=self.upstream.is_available(self.target),
            cursor=self._cursor,
            last_poll_at=self._last_poll_at,
            problems=dict(self._problems),
            callbacks=self._callbacks,
        )

    # -- deliverers (called by the dispatcher, in its tasks) -------------------------------

    async def _deliver_rest(self, client: ThreePLClient, entry: OutboxEntry) -> None:
        request = rest_request(decode_delivery(entry))
        await client.send_fulfillment(request, idempotency_key=entry.idempotency_key)

    async def _deliver_csv(self, folders: CsvLocation, entry: OutboxEntry) -> None:
        file = csv_file(decode_delivery(entry))
        try:
            await folders.send_fulfillment(file)
        except ValueError as exc:  # the id cannot be a file name: it never will be
            raise PermanentUpstreamError(
                self.target, f"{self.target}: {exc}", operation="write fulfilment file"
            ) from exc

    # -- pollers ---------------------------------------------------------------------------

    async def _every(self, interval: float, what: str, step: Callable[[], Awaitable[None]]) -> None:
        """Run `step` now and then every `interval` seconds; after a failure, sooner.

        A failed step is retried after 1 s, doubling up to `interval`: with a five-minute stock
        interval, a 3PL that was down at start-up must not leave its stock unknown (and every
        order routed elsewhere) for five minutes. Transient upstream failures are logged by the
        monitor (once per outage); anything else once per distinct problem, so a wrong token
        does not log a line every poll.
        """
        failures = 0
        while True:
            failures += 1
            try:
                await step()
            except TransientUpstreamError:
                pass  # counted and logged once per outage by the monitor; the next run retries
            except UpstreamError as exc:  # permanent: wrong token, url, protocol
                self._note_problem(what, str(exc), None)
            except Exception as exc:  # a sink refusing, or a bug: the traceback says where
                self._note_problem(what, f"{type(exc).__name__}: {exc}", exc)
            else:
                failures = 0
                if what == "poll":
                    self._last_poll_at = self._clock()
                solved = self._problems.pop(what, None)
                if solved is not None:
                    log.info("location_problem_solved", location=self.section.name, step=what)
            await trio.sleep(min(interval, 2.0 ** (failures - 1)) if failures else interval)

    def _note_problem(self, what: str, detail: str, error: Exception | None) -> None:
        """Log a step's problem once, not once per poll (a wrong token would flood the log)."""
        if self._problems.get(what) != detail:
            log.error(
                "location_problem",
                location=self.section.name,
                step=what,
                problem=detail,
                exc_info=error,
            )
        self._problems[what] = detail

    async def _read(self, call: Callable[[], Awaitable[T]]) -> T:
        """One upstream read, timed and counted, feeding the availability rule."""
        started = time.perf_counter()
        try:
            result = await call()
        except TransientUpstreamError as exc:
            self.upstream.observe(self.target, "retry", time.perf_counter() - started)
            self.upstream.unavailable(self.target, str(exc))
            raise
        except PermanentUpstreamError:
            self.upstream.observe(self.target, "failed", time.perf_counter() - started)
            self.upstream.available(self.target)
            raise
        self.upstream.observe(self.target, "ok", time.perf_counter() - started)
        self.upstream.available(self.target)
        return result

    async def _poll_rest(self, client: ThreePLClient) -> None:
        """Every page of changes since the stored cursor; the cursor moves after each page."""
        async with self._feed:
            while True:
                page = await self._read(partial(client.fetch_updates_since, self._cursor))
                for item in page.items:
                    await self._hand_over(rest_update(item))
                # Nothing handed over, nothing to store: the protocol keeps the cursor unchanged
                # then (the first empty answer's "0" is the same place as no cursor at all).
                if page.items and page.next_cursor != self._cursor:
                    await self._save_cursor(page.next_cursor)
                if not page.has_more:
                    return

    async def _fetch_stock(self, client: ThreePLClient) -> None:
        """The count, handed over once the feed was read past it (see the module docstring)."""
        snapshot = await self._read(client.fetch_stock)
        await self._poll_rest(client)
        await self.sink.stock_report(stock_report(self.section.name, snapshot))

    async def _poll_csv(self, folders: CsvLocation) -> None:
        """Hand each finished inbound file to the sink, in name order, then move it away.

        A file is moved only after all its rows were accepted; a refusal stops the round so
        later files (later changes) are not applied before it.
        """
        for file in await self._read(folders.read_inbound):
            match file:
                case StatusFile():
                    for update in csv_updates(file):
                        await self._hand_over(update)
                case StockFile():
                    for report in stock_reports(self.section.name, file):
                        await self.sink.stock_report(report)
            await self._read(partial(folders.mark_processed, file))

    async def _hand_over(self, update: LocationUpdate) -> None:
        await self.sink.location_update(
            self.section.name,
            update.fulfilment_id,
            update.status,
            lines=update.lines,
            tracking_number=update.tracking_number,
            carrier=update.carrier,
            reason=update.reason,
            at=update.at,
        )

    # -- callbacks ---------------------------------------------------------------------------

    async def _handle_callback(
        self, callback: StatusCallback, reply: Reply[CallbackAnswer]
    ) -> None:
        if callback.event_id in self._seen:
            reply.set(CallbackAnswer(callback.event_id, duplicate=True))
            return
        try:
            await self._hand_over(rest_update(callback.fulfillment))
        except Exception as exc:
            log.warning(
                "location_callback_refused",  # the sender retries; polling catches up anyway
                location=self.section.name,
                event_id=callback.event_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            reply.fail(exc)
            return
        self._callbacks += 1
        self._seen[callback.event_id] = None
        while len(self._seen) > SEEN_CALLBACKS:
            self._seen.popitem(last=False)
        reply.set(CallbackAnswer(callback.event_id, duplicate=False))

    def callback_keys(self) -> list[bytes]:
        """HMAC keys callbacks may be signed with (one per line of `callback_secret_file`)."""
        secret_file = self.section.callback_secret_file
        return [secret.reveal().encode() for secret in secret_file.lines()] if secret_file else []

    # -- the cursor -------------------------------------------------------------------------

    async def _load_cursor(self) -> None:
        stream = cursor_stream(self.section.name)
        self._version = await self.store.stream_version(stream)
        self._cursor = None
        if self._version:
            [last] = await self.store.read_stream(stream, after_version=self._version - 1)
            self._cursor = last.decode(CursorAdvanced).cursor

    async def _save_cursor(self, cursor: str) -> None:
        event = NewEvent(
            CURSOR_EVENT,
            _payload_encoder.encode(CursorAdvanced(cursor)),
            {"actor": self.name},
        )
        try:
            appended = await self.store.append(
                cursor_stream(self.section.name), [event], expected_version=self._version
            )
        except VersionConflict:
            # Another writer moved the cursor (two actors for one location during a botched
            # reload): take theirs and poll on from it; repeats are harmless, skips are not.
            log.warning("location_cursor_moved_elsewhere", location=self.section.name)
            await self._load_cursor()
            raise
        self._version = appended.version
        self._cursor = cursor


_Poller = Callable[[], Awaitable[None]]


# -- the callback route -------------------------------------------------------------------------


class LocationRoutes:
    """`POST /v1/locations/{location}/callbacks`: signed status callbacks from `rest` 3PLs.

    Authenticated by the signature (`X-Somsd-Signature` with the location's
    `callback_secret_file`), not by the admin token: the 3PL is not an admin. Checked in the
    order that costs least first: the location takes callbacks (404), the body fits (413), the
    signature (401), the body is a callback (400). Answered 200 only after the sink recorded
    it; 503 when the actor cannot, so the sender retries.
    """

    def __init__(
        self,
        locations: Callable[[], Mapping[str, LocationActor]],
        *,
        clock: Callable[[], float] = time.time,
        max_body_bytes: int = MAX_CALLBACK_BYTES,
    ) -> None:
        """`locations` maps a location's name (`wh-1`, not `location/wh-1`) to its running
        actor; it is called per request, so actors replaced by a reload are found."""
        self._locations = locations
        self._clock = clock
        self._max_body_bytes = max_body_bytes

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "/v1/locations/{location}/callbacks",
                "POST",
                self.callback,
                "Status callback from a rest 3PL, signed with the location's callback key",
                request=StatusCallback,
                responses={
                    200: CallbackAnswer,
                    400: None,
                    401: None,
                    404: None,
                    413: None,
                    503: None,
                },
                tags=("locations",),
                runs_on="location/{location}",
            )
        ]

    async def callback(self, request: Request) -> Response:
        name = request.path_params["location"]
        actor = self._locations().get(name)
        keys = (
            actor.callback_keys() if actor is not None and actor.section.adapter == "rest" else []
        )
        if actor is None or not keys:
            raise ApiError(
                404,
                "unknown_location",
                f"no rest location {name!r} taking callbacks; set its callback_secret_file",
            )
        body = await self._read_limited(request)
        callback = self._verify(body, request.headers.get(SIGNATURE_HEADER), keys)
        answer: CallbackAnswer | None = None
        with trio.move_on_after(CALLBACK_ANSWER_DEADLINE):
            try:
                answer = await actor.ask(partial(HandleCallback, callback))
            except ReplyError as exc:
                raise ApiError(503, "unavailable", str(exc)) from None
            except Exception:
                raise ApiError(
                    503, "not_recorded", "the callback could not be recorded; retry later"
                ) from None
        if answer is None:
            raise ApiError(503, "busy", f"location {name!r} did not answer in time; retry later")
        return json_response(answer)

    def _verify(self, body: bytes, signature: str | None, keys: list[bytes]) -> StatusCallback:
        now = self._clock()
        failure: SignatureError | None = None
        for key in keys:
            try:
                return decode_callback(body, signature, key, now=now)
            except SignatureError as exc:
                failure = exc
            except InvalidCallback as exc:
                raise ApiError(400, "invalid_callback", str(exc)) from None
        assert failure is not None
        raise ApiError(401, "bad_signature", str(failure))

    async def _read_limited(self, request: Request) -> bytes:
        return await read_limited_body(
            request, self._max_body_bytes, limit_name="the callback limit"
        )

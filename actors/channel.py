"""`ChannelActor`: one per polled `[[channel]]` (kind smartstore), driving the shop's driver.

The actor is generic; what is shop-specific (the protocol, the SKU -> id map, how a product is
hidden) lives in a `ShopDriver` (for Smartstore: `actors/smartstore_driver.py`). A new shop
system adds an adapter package and a driver, never a new actor kind.

**Intake by polling.** Every `poll_interval` the actor reads the shop's orders changed since
its watermark minus `poll_overlap` (clock skew, late commits), page by page with keyset
continuation. Each order goes to the order desk like a webhook order (`ReceiveOrder`, same
validation, holds, idempotency on the shop's stable key: a re-read order is recognised by the
store as a duplicate). Updates made in the shop afterwards are applied: cancelled in the shop
-> `CancelOrder`, paid in the shop -> `RecordPayment`, both as user `channel:<name>` so the
effects planner does not send them back. An order that cannot be represented at all is
recorded as a rejected intake (stream `channel-<name>-rejected`, `GET
/v1/channels/{channel}/rejected`, `somsd_channel_intake_rejected_total{channel,reason}`) and the
poll moves on. **The watermark is stored (event `channel_watermark_advanced` in stream
`channel-<name>`) only after every order of the page is committed**: a crash repeats orders,
never skips one.

**Effects.** The order desk writes `order_effect` outbox items for `channel/<name>` in the same
transaction as the events that cause them (`order_effects_for`); the actor registers the
deliverer for that target, which hands each entry (order effects, the inventory's stock pushes,
reconciliation fixes) to the driver.

**Reconciliation.** `reconcile(dry_run)` pages the shop's catalogue through the driver, compares
it with the inventory's channel availability (`somsd.domain.channel_sync.reconcile`), and
appends the report as an event in `channel-<name>-reconcile`, with one outbox item per fix in
the same transaction (none for a dry run). `reconcile_interval` runs it on a schedule.

A shop that refuses our credentials never stops the actor or the daemon: one log line per
distinct problem, `somsd_channel_poll_failures_total{channel,reason}`, and the next poll at
the interval.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from functools import partial
from typing import Final, Protocol

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from actors.integration import Describe, IntegrationStatus
from actors.inventory import GetChannelAvailability, Inventory, stock_push_target
from actors.order_desk import (
    CancelOrder,
    OrderCommand,
    OrderDesk,
    Received,
    ReceiveOrder,
    RecordPayment,
)
from actors.outbox import OutboxDispatcher
from adapters.errors import TransientUpstreamError, UpstreamError
from somsd.actor import Actor, Reply
from somsd.api import ApiError, ApiRoute, json_response
from somsd.config import ChannelConfig
from somsd.domain.channel_sync import (
    DEFAULT_STATUS_MAP,
    ReconcileFix,
    ReconcileReport,
    ShopItem,
    channel_actor,
    delivered_effect,
    plan_order_effects,
    reconcile,
)
from somsd.domain.errors import DomainError
from somsd.domain.events import OrderEvent
from somsd.domain.holds import HoldReason
from somsd.domain.order import Order
from somsd.domain.state import OrderState, apply
from somsd.projections.fulfilments import FulfilmentEvent, FulfilmentProgressed, FulfilmentState
from somsd.projections.orders import decode_state, fetch_state
from somsd.store import (
    Duplicate,
    EventStore,
    IdempotencyKey,
    NewEvent,
    OutboxEntry,
    OutboxItem,
    utc_now,
)

__all__ = [
    "DRIVERS",
    "ORDER_EFFECT_CONCURRENCY",
    "WATERMARK_EVENT",
    "ChannelActor",
    "ChannelMetrics",
    "ChannelRoutes",
    "IntakeRejected",
    "ReconcileProgress",
    "ReconciliationDone",
    "ShopDriver",
    "ShopOrder",
    "ShopOrderPage",
    "channel_target",
    "fulfilment_effects_for",
    "order_effects_for",
]

log = structlog.get_logger("actors.channel")

WATERMARK_EVENT: Final = "channel_watermark_advanced"
REJECTED_EVENT: Final = "channel_intake_rejected"
RECONCILED_EVENT: Final = "channel_reconciled"
# The payment id of "marked paid in the shop": one per order, so a repeated read is refused
# by the desk as a known payment instead of being counted twice.
SHOP_PAYMENT_ID: Final = "shop-paid"
# Rejected intakes shown by the API: the newest; older ones stay in the stream.
REJECTED_SHOWN: Final = 500

_encoder = msgspec.json.Encoder()

# Order effects of one channel delivered at once: each is one or two shop requests.
ORDER_EFFECT_CONCURRENCY: Final = 4


def channel_target(channel: str) -> str:
    return f"channel/{channel}"


# -- what a driver gives and takes ----------------------------------------------------------------


class ShopOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One order as read from the shop, mapped (or not) to the canonical order."""

    key: str  # the shop's stable key (Smartstore: OrderGuid); the intake idempotency key
    shop_id: int
    number: str
    updated_at: datetime
    order: Order | None  # None: it cannot be represented; `rejected` says why
    holds: tuple[HoldReason, ...] = ()  # taken in on hold for these reasons
    rejected: str = ""  # reason code of an unrepresentable order
    detail: str = ""
    paid: bool = False  # the shop says paid
    cancelled: bool = False  # the shop says cancelled


class ShopOrderPage(msgspec.Struct, frozen=True, kw_only=True):
    orders: tuple[ShopOrder, ...]
    has_more: bool
    server_date: datetime | None = None


class ShopDriver(Protocol):
    """What the channel actor needs from a shop system's driver."""

    async def orders_since(
        self, updated_from: datetime, after: tuple[datetime, int] | None
    ) -> ShopOrderPage: ...

    async def deliver(self, entry: OutboxEntry) -> None:
        """Apply one `channel/<name>` outbox entry (order effect, stock push, fix) or raise."""

    def catalogue(self) -> AsyncIterator[Sequence[ShopItem]]:
        """Every product and combination of the shop, page by page."""
        ...


DriverFactory = Callable[["ChannelActor"], AbstractAsyncContextManager[ShopDriver]]

# Channel kinds that are polled, with the driver that speaks their protocol. A kind without a
# driver keeps the status-only `IntegrationActor` (webhook channels need none: their orders
# arrive at the intake route). Drivers add themselves here when their module is imported.
DRIVERS: dict[str, DriverFactory] = {}


# -- events ---------------------------------------------------------------------------------------


class WatermarkAdvanced(msgspec.Struct, frozen=True):
    """Every shop order up to (updated_at, shop_id) is committed in somsd.

    `ids`: the shop's numeric id of each order of the page by its stable key, so effects can
    address the order in the shop after a restart without searching for it.
    """

    updated_at: datetime
    shop_id: int
    ids: dict[str, int] = msgspec.field(default_factory=dict)


class IntakeRejected(msgspec.Struct, frozen=True):
    key: str
    number: str
    shop_id: int
    reason: str
    detail: str
    updated_at: datetime
    at: datetime


class ReconciliationDone(msgspec.Struct, frozen=True, kw_only=True):
    channel: str
    dry_run: bool
    started_at: datetime
    finished_at: datetime
    seconds: float
    counts: dict[str, int]
    report: ReconcileReport


class ReconcileProgress(msgspec.Struct, frozen=True, kw_only=True):
    read: int  # products and combinations read from the shop so far
    running: bool


class StockFix(msgspec.Struct, frozen=True, kw_only=True, tag="stock_fix"):
    """The outbox payload of one reconciliation fix."""

    fix: ReconcileFix


def order_effects_for(
    channels: Callable[[], Mapping[str, ChannelConfig]],
) -> Callable[[str, OrderState | None, Sequence[OrderEvent]], list[OutboxItem]]:
    """The order desk's `effects` hook: shop effects for orders of polled channels."""

    def effects(
        channel: str, before: OrderState | None, events: Sequence[OrderEvent]
    ) -> list[OutboxItem]:
        section = channels().get(channel)
        # Only polled channels with a driver: for others nobody would deliver the entries.
        if section is None or section.kind not in DRIVERS:
            return []
        state = before
        for event in events:
            state = apply(state, event)
        assert state is not None
        status_map = {**DEFAULT_STATUS_MAP, **section.status_map}
        # The shop's "cancelled" needs the Cancel action, which settles the order in the shop;
        # "processing"/"pending" have no action of their own, so they travel as notes.
        mapped = {k: v for k, v in status_map.items() if v in ("complete", "cancelled")}
        return [
            OutboxItem(channel_target(state.channel), _encoder.encode(effect), effect.key)
            for effect in plan_order_effects(state, events, status_map=mapped)
        ]

    return effects


def fulfilment_effects_for(
    store: EventStore, channels: Callable[[], Mapping[str, ChannelConfig]]
) -> Callable[[FulfilmentState, Sequence[FulfilmentEvent]], Awaitable[list[OutboxItem]]]:
    """The fulfilment desk's `effects` hook: the shop's Deliver when a parcel arrived."""

    async def effects(
        fulfilment: FulfilmentState, events: Sequence[FulfilmentEvent]
    ) -> list[OutboxItem]:
        if not any(isinstance(e, FulfilmentProgressed) and e.state == "delivered" for e in events):
            return []
        blob = await store.read(partial(fetch_state, order_id=fulfilment.order_id))
        if blob is None:
            return []
        order = decode_state(blob)
        section = channels().get(order.channel)
        if section is None or section.kind not in DRIVERS:
            return []
        effect = delivered_effect(order, fulfilment.fulfilment_id)
        return [OutboxItem(channel_target(order.channel), _encoder.encode(effect), effect.key)]

    return effects


# -- metrics ----------------------------------------------------------------------------------


class ChannelMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.rejected = Counter(
            "somsd_channel_intake_rejected",
            "Shop orders somsd cannot represent, recorded as rejected intakes, per reason.",
            ["channel", "reason"],
            registry=registry,
        )
        self.poll_failures = Counter(
            "somsd_channel_poll_failures",
            "Order polls that failed, per reason (auth, unavailable, error).",
            ["channel", "reason"],
            registry=registry,
        )
        self.stock_delivery = Histogram(
            "somsd_stock_sync_delivery_seconds",
            "From a stock change queued for a shop to the shop having it (outbox wait, retries "
            "and the PATCH), per channel.",
            ["channel"],
            registry=registry,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
        )
        self.polled = Counter(
            "somsd_channel_orders_polled",
            "Shop orders read by polling (new, updated and re-read ones).",
            ["channel"],
            registry=registry,
        )


# -- the actor --------------------------------------------------------------------------------


class Reconcile(msgspec.Struct, frozen=True, tag=True):
    dry_run: bool
    reply: Reply[ReconciliationDone]


ChannelMessage = Describe | Reconcile


class ChannelActor(Actor[ChannelMessage]):
    def __init__(
        self,
        section: ChannelConfig,
        *,
        store: EventStore,
        dispatcher: OutboxDispatcher,
        desk: OrderDesk,
        inventory: Inventory,
        driver: DriverFactory,
        metrics: ChannelMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(channel_target(section.name))
        self.section = section
        self.kind: str = section.kind
        self.target = channel_target(section.name)
        self.stock_target = stock_push_target(section.name)
        self.store = store
        self.dispatcher = dispatcher
        self.desk = desk
        self.inventory = inventory
        self._driver_factory = driver
        self.metrics = metrics
        self.created_at = clock()
        self.handled = 0
        self.user = channel_actor(section.name)
        self.watermark: WatermarkAdvanced | None = None
        self._version = 0
        self._seen: dict[int, datetime] = {}  # shop id -> UpdatedOnUtc applied
        self._shop_ids: dict[str, int] = {}  # stable key (OrderGuid) -> the shop's id
        self._problem: str | None = None
        self.last_report: ReconciliationDone | None = None
        self.progress: ReconcileProgress | None = None  # while a reconciliation reads the shop
        self._reconcile_lock = trio.Lock()
        self._poll_lock = trio.Lock()  # the schedule and an explicit poll never overlap
        self.driver: ShopDriver | None = None  # while running

    @property
    def stream(self) -> str:
        return f"channel-{self.section.name}"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._load_watermark()
        async with self._driver_factory(self) as driver:
            self.driver = driver
            # Order effects and stock pushes are delivered side by side (see
            # `stock_push_target`); the shop's own bound applies to the pushes, and order
            # effects, a few per order, need only a few requests at once.
            self.dispatcher.register(self.target, driver.deliver, limit=ORDER_EFFECT_CONCURRENCY)
            self.dispatcher.register(
                self.stock_target, driver.deliver, limit=self.section.stock_sync_concurrency
            )
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._poll_forever, driver)
                    if self.section.reconcile_interval is not None:
                        nursery.start_soon(self._reconcile_forever, driver)
                    log.info("channel_started", channel=self.section.name, kind=self.kind)
                    task_status.started()
                    async for message in self.mailbox:
                        self.handled += 1
                        match message:
                            case Describe(reply=reply):
                                reply.set(
                                    IntegrationStatus(
                                        self.name, self.kind, self.created_at, self.handled
                                    )
                                )
                            case Reconcile(dry_run=dry_run, reply=reply):
                                nursery.start_soon(self._reconcile_for, driver, dry_run, reply)
            finally:
                self.dispatcher.unregister(self.target, driver.deliver)
                self.dispatcher.unregister(self.stock_target, driver.deliver)

    # -- polling ----------------------------------------------------------------------------

    async def _poll_forever(self, driver: ShopDriver) -> None:
        interval = self.section.poll_interval.seconds
        while True:
            try:
                await self.poll_once(driver)
            except UpstreamError as exc:
                reason = getattr(exc, "reason", None) or (
                    "unavailable" if isinstance(exc, TransientUpstreamError) else "refused"
                )
                self.metrics.poll_failures.labels(self.section.name, str(reason)).inc()
                self._note_problem(f"{reason}: {exc}")
            except Exception as exc:
                self.metrics.poll_failures.labels(self.section.name, "error").inc()
                self._note_problem(f"{type(exc).__name__}: {exc}", exc)
            else:
                if self._problem is not None:
                    log.info("channel_poll_recovered", channel=self.section.name)
                    self._problem = None
            await trio.sleep(interval)

    def _note_problem(self, detail: str, error: Exception | None = None) -> None:
        if detail != self._problem:  # once per distinct problem, not once per poll
            log.error(
                "channel_poll_failed", channel=self.section.name, problem=detail, exc_info=error
            )
        self._problem = detail

    async def poll_once(self, driver: ShopDriver) -> int:
        """Read every order changed since the watermark (minus the overlap); return how many."""
        async with self._poll_lock:
            return await self._poll(driver)

    async def _poll(self, driver: ShopDriver) -> int:
        overlap = timedelta(seconds=self.section.poll_overlap.seconds)
        start = (
            self.watermark.updated_at - overlap
            if self.watermark is not None
            else datetime(2000, 1, 1, tzinfo=utc_now().tzinfo)
        )
        total = 0
        page = await driver.orders_since(start, None)
        while True:
            self.metrics.polled.labels(self.section.name).inc(len(page.orders))
            total += len(page.orders)
            more = page.has_more and bool(page.orders)
            following: list[ShopOrderPage] = []

            async def fetch_next(after: tuple[datetime, int], into: list[ShopOrderPage]) -> None:
                into.append(await driver.orders_since(start, after))

            # The next page is read while this one is committed: the shop's answer time and
            # our commits overlap instead of adding up. The watermark still moves only after
            # every order of this page is committed.
            async with trio.open_nursery() as nursery:
                if more:
                    last = page.orders[-1]
                    nursery.start_soon(fetch_next, (last.updated_at, last.shop_id), following)
                for order in page.orders:
                    if self._seen.get(order.shop_id) == order.updated_at:
                        continue
                    nursery.start_soon(self._take, order)
            if page.orders:
                await self._advance(page)
            if not more:
                return total
            [page] = following

    async def _advance(self, page: ShopOrderPage) -> None:
        last = page.orders[-1]
        new_ids = {o.key: o.shop_id for o in page.orders if self._shop_ids.get(o.key) != o.shop_id}
        if (
            new_ids
            or self.watermark is None
            or (last.updated_at, last.shop_id) > (self.watermark.updated_at, self.watermark.shop_id)
        ):
            await self._save_watermark(WatermarkAdvanced(last.updated_at, last.shop_id, new_ids))

    async def _take(self, shop: ShopOrder) -> None:
        order = shop.order
        if order is None:
            await self._reject(shop)
        else:
            try:
                received: Received = await self.desk.ask(
                    lambda reply: ReceiveOrder(self.section.name, order, reply, holds=shop.holds)
                )
            except DomainError as exc:  # invalid after mapping: the shop's data is wrong
                await self._reject(
                    msgspec.structs.replace(shop, rejected=exc.code, detail=str(exc))
                )
            else:
                await self._apply_shop_update(shop, received)
        self._seen[shop.shop_id] = shop.updated_at

    async def _apply_shop_update(self, shop: ShopOrder, received: Received) -> None:
        """Cancelled or paid in the shop, as far as somsd does not know it yet.

        A new order came in with its payment status (the intake recorded a paid one); only a
        re-read order can have been paid since.
        """
        if not shop.cancelled and not (shop.paid and received.duplicate):
            return
        blob = await self.store.read(partial(fetch_state, order_id=received.order_id))
        if blob is None:
            return
        state = decode_state(blob)
        if shop.cancelled:
            if not state.canceled:
                await self._command(received.order_id, CancelOrder("cancelled in the shop"))
        elif state.paid <= 0 and state.order.payment.amount > 0:
            await self._command(
                received.order_id, RecordPayment(state.order.payment.amount, SHOP_PAYMENT_ID)
            )

    async def _command(self, order_id: str, action: CancelOrder | RecordPayment) -> None:
        # DomainError: already cancelled / already paid: the shop repeats what we know.
        with contextlib.suppress(DomainError):
            await self.desk.ask(lambda reply: OrderCommand(order_id, action, self.user, reply))

    async def _reject(self, shop: ShopOrder) -> None:
        event = IntakeRejected(
            key=shop.key,
            number=shop.number,
            shop_id=shop.shop_id,
            reason=shop.rejected or "unrepresentable",
            detail=shop.detail,
            updated_at=shop.updated_at,
            at=utc_now(),
        )
        result = await self.store.append(
            f"{self.stream}-rejected",
            [NewEvent(REJECTED_EVENT, _encoder.encode(event), {"actor": self.name})],
            idempotency=IdempotencyKey(
                f"{self.target}/rejected", f"{shop.key}@{shop.updated_at.isoformat()}"
            ),
        )
        if isinstance(result, Duplicate):
            return
        self.metrics.rejected.labels(self.section.name, event.reason).inc()
        log.warning(
            "channel_order_rejected",
            channel=self.section.name,
            number=shop.number,
            shop_id=shop.shop_id,
            reason=event.reason,
            detail=event.detail,
        )

    async def rejected(self) -> list[IntakeRejected]:
        events = await self.store.read_stream(f"{self.stream}-rejected")
        return [event.decode(IntakeRejected) for event in events[-REJECTED_SHOWN:]]

    # -- the watermark ------------------------------------------------------------------------

    async def _load_watermark(self) -> None:
        self._version = await self.store.stream_version(self.stream)
        self.watermark = None
        self._shop_ids = {}
        for stored in await self.store.read_stream(self.stream):
            mark = stored.decode(WatermarkAdvanced)
            self._shop_ids.update(mark.ids)
            if self.watermark is None or (mark.updated_at, mark.shop_id) > (
                self.watermark.updated_at,
                self.watermark.shop_id,
            ):
                self.watermark = mark
        reports = await self.store.read_stream(f"{self.stream}-reconcile")
        if reports:
            self.last_report = reports[-1].decode(ReconciliationDone)

    async def _save_watermark(self, mark: WatermarkAdvanced) -> None:
        event = NewEvent(WATERMARK_EVENT, _encoder.encode(mark), {"actor": self.name})
        appended = await self.store.append(self.stream, [event], expected_version=self._version)
        self._version = appended.version
        self._shop_ids.update(mark.ids)
        if self.watermark is None or (mark.updated_at, mark.shop_id) > (
            self.watermark.updated_at,
            self.watermark.shop_id,
        ):
            self.watermark = mark

    def shop_id_of(self, key: str) -> int | None:
        """The shop's numeric id of an order taken in by polling (None: never seen)."""
        return self._shop_ids.get(key)

    # -- reconciliation -------------------------------------------------------------------------

    async def _reconcile_forever(self, driver: ShopDriver) -> None:
        assert self.section.reconcile_interval is not None
        while True:
            await trio.sleep(self.section.reconcile_interval.seconds)
            try:
                await self.reconcile(driver, dry_run=False)
            except Exception:
                log.exception("channel_reconcile_failed", channel=self.section.name)

    async def _reconcile_for(
        self, driver: ShopDriver, dry_run: bool, reply: Reply[ReconciliationDone]
    ) -> None:
        try:
            reply.set(await self.reconcile(driver, dry_run=dry_run))
        except Exception as exc:
            reply.fail(exc)

    async def reconcile(self, driver: ShopDriver, *, dry_run: bool) -> ReconciliationDone:
        async with self._reconcile_lock:
            started, clock = utc_now(), time.perf_counter()
            atp = await self.inventory.ask(partial_channel(self.section.name))
            items: list[ShopItem] = []
            self.progress = ReconcileProgress(read=0, running=True)
            try:
                async for page in driver.catalogue():
                    items.extend(page)
                    self.progress = ReconcileProgress(read=len(items), running=True)
            finally:
                self.progress = ReconcileProgress(read=len(items), running=False)
            report, fixes = reconcile(items, atp, hide_sold_out=self.section.hide_sold_out)
            done = ReconciliationDone(
                channel=self.section.name,
                dry_run=dry_run,
                started_at=started,
                finished_at=utc_now(),
                seconds=round(time.perf_counter() - clock, 3),
                counts=report.counts(),
                report=report,
            )
            stream = f"{self.stream}-reconcile"
            version = await self.store.stream_version(stream)
            outbox = (
                []
                if dry_run
                else [
                    OutboxItem(
                        self.stock_target,
                        _encoder.encode(StockFix(fix=fix)),
                        f"reconcile/{self.section.name}/{version + 1}/{fix.kind}/{fix.id}",
                    )
                    for fix in fixes
                ]
            )
            await self.store.append(
                stream,
                [NewEvent(RECONCILED_EVENT, _encoder.encode(done), {"actor": self.name})],
                expected_version=version,
                outbox=outbox,
            )
            if outbox:
                self.dispatcher.wake()
            self.last_report = done
            log.info(
                "channel_reconciled", channel=self.section.name, dry_run=dry_run, **done.counts
            )
            return done


def partial_channel(channel: str) -> Callable[[Reply[dict[str, int]]], GetChannelAvailability]:
    return lambda reply: GetChannelAvailability(channel, reply)


# -- routes -----------------------------------------------------------------------------------


class RejectedList(msgspec.Struct, frozen=True):
    channel: str
    rejected: list[IntakeRejected]


class ChannelRoutes:
    """Reconciliation and rejected intakes of polled channels."""

    def __init__(self, channels: Callable[[], Mapping[str, ChannelActor]]) -> None:
        self._channels = channels

    def _actor(self, request: Request) -> ChannelActor:
        name = request.path_params["channel"]
        actor = self._channels().get(name)
        if actor is None:
            raise ApiError(404, "unknown_channel", f"no polled channel {name!r}")
        return actor

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "/v1/channels/{channel}/reconcile",
                "POST",
                self.reconcile,
                "Compare the shop's stock and visibility with somsd and fix the drift "
                "(?dry_run=true only reports)",
                admin=True,
                responses={200: ReconciliationDone, 404: None, 503: None},
                tags=("channels",),
                runs_on="channel/{channel}",
            ),
            ApiRoute(
                "/v1/channels/{channel}/reconciliation",
                "GET",
                self.reconciliation,
                "The last reconciliation report of a channel",
                admin=True,
                responses={200: ReconciliationDone, 404: None},
                tags=("channels",),
                runs_on="channel/{channel}",  # the report is the running actor's
            ),
            ApiRoute(
                "/v1/channels/{channel}/reconciliation/progress",
                "GET",
                self.reconcile_progress,
                "How far a running reconciliation has read the shop's catalogue",
                admin=True,
                responses={200: ReconcileProgress, 404: None},
                tags=("channels",),
                runs_on="channel/{channel}",
            ),
            ApiRoute(
                "/v1/channels/{channel}/rejected",
                "GET",
                self.rejected,
                "Shop orders that could not be taken in, newest last",
                admin=True,
                responses={200: RejectedList, 404: None},
                tags=("channels",),
            ),
        ]

    async def reconcile(self, request: Request) -> Response:
        actor = self._actor(request)
        flag = request.query_params.get("dry_run", "false").lower()
        if flag not in ("true", "false", "1", "0"):
            raise ApiError(400, "invalid_query", "$.dry_run: must be true or false")
        dry_run = flag in ("true", "1")
        try:
            done: ReconciliationDone = await actor.ask(lambda reply: Reconcile(dry_run, reply))
        except UpstreamError as exc:
            raise ApiError(503, "shop_unavailable", str(exc)) from None
        return json_response(done)

    async def reconciliation(self, request: Request) -> Response:
        actor = self._actor(request)
        if actor.last_report is None:
            raise ApiError(404, "no_report", "no reconciliation has run for this channel yet")
        return json_response(actor.last_report)

    async def reconcile_progress(self, request: Request) -> Response:
        actor = self._actor(request)
        return json_response(actor.progress or ReconcileProgress(read=0, running=False))

    async def rejected(self, request: Request) -> Response:
        actor = self._actor(request)
        return json_response(RejectedList(actor.section.name, await actor.rejected()))

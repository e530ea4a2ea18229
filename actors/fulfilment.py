"""The fulfilment desk: one fulfilment per allocation, moved step by step to the customer.

It is the only writer of the `fulfilment-<id>` streams (see `somsd.projections.fulfilments` for
the events and the pure state machine). Who moves a fulfilment: store staff through the
fulfilment API (`actors/fulfilment_api.py`), location adapters through `location_update` (this
desk is the `LocationSink` of `actors/location.py`), the router through `CreateFulfilments`,
and order cancellations through `CancelFulfilments`.

Why facts first, effects after. A step is appended to the fulfilment's stream before anything
it causes: shipping (or a pickup's hand-over) then consumes the reservation at the inventory
(`ShipStock`) and tells the order desk (`RecordShipment`); a transfer leaving its warehouse frees
the store's pickup to become ready. Only when those are done does `FulfilmentSettled` follow.
Each effect is idempotent - the reservation id and the shipment id are the fulfilment id, so a
repeat is answered "unknown reservation" or "duplicate shipment" - and a desk that crashed in
between finds the unsettled fulfilments in the projection at start and finishes them. A shipment
of an order on hold is not recorded until the hold is released (the router then sends
`SettleOrder`).

Rejections go the other way round: the inventory releases (and, for missing or damaged units,
writes off) the reserved units first, then the rejection is appended, and the router is nudged
to route the lines again elsewhere. A crash between the two leaves the reservation smaller than
the fulfilment believes; shipping then consumes what is left (logged), and the refused units
stay open on the order for an operator - the only gap, because the inventory offers no way to
ask what a reservation still holds.

Concurrency: every message runs in its own task (bounded, so back-pressure reaches the mailbox),
serialised per fulfilment by a FIFO lock; recording a shipment is also serialised per order,
because the shipped SKUs are mapped onto the order's line indices from the order's current
state. Lock order is transfer before pickup, never the other way, so the two never deadlock.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from typing import Final, Literal

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter

from actors.inventory import (
    Inventory,
    RejectStock,
    ReleaseStock,
    ReportStock,
    ShipStock,
)
from actors.location import LineRejection, location_target, send_fulfilment_payload
from actors.order_desk import (
    ChangeStatus,
    OrderCommand,
    OrderDesk,
    OrderNotFound,
    RecordShipment,
)
from somsd.actor import Actor, Reply, ReplyError
from somsd.config import Config, LocationConfig
from somsd.domain.atp import (
    Oversold,
    ReservationRejected,
    ReservationReleased,
    StockLine,
    StockRefused,
    StockReport,
    StockReportDecision,
    StockShipped,
)
from somsd.domain.atp import (
    RejectionReason as StockRejectionReason,
)
from somsd.domain.errors import Conflict, DomainError, DuplicateCommand
from somsd.domain.events import LineQuantity
from somsd.domain.order import Address, Order
from somsd.domain.routing import Allocation
from somsd.domain.routing import OrderLine as RoutedLine
from somsd.domain.state import OrderState
from somsd.domain.status import ON_HOLD, PENDING, PROCESSING
from somsd.projections.fulfilments import (
    FulfilmentCanceled,
    FulfilmentEvent,
    FulfilmentKind,
    FulfilmentLinesRejected,
    FulfilmentNotFound,
    FulfilmentRequested,
    FulfilmentSettled,
    FulfilmentState,
    FulfilmentView,
    Step,
    TransferDispatched,
    TransferLinesWithdrawn,
    apply_fulfilment,
    decide_rejection,
    decide_step,
    fetch_fulfilment,
    fulfilment_stream,
    fulfilments_of_order,
    list_fulfilments,
    merge_lines,
    unsettled_fulfilments,
)
from somsd.projections.orders import decode_state, fetch_state
from somsd.store import (
    EventStore,
    NewEvent,
    OutboxItem,
    StoreUnavailable,
    VersionConflict,
    utc_now,
)

__all__ = [
    "ACTOR",
    "CancelFulfilments",
    "CreateFulfilments",
    "FulfilmentDesk",
    "FulfilmentMessage",
    "LocationStatus",
    "NewFulfilment",
    "RejectLines",
    "SettleOrder",
    "StepFulfilment",
    "new_pickup_code",
    "order_line_quantities",
]

log = structlog.get_logger("actors.fulfilment")

ACTOR = "fulfilments"

# Steps in flight at once. Each waits on an fsync and an inventory or desk answer; 64 keeps a
# store's burst of clicks and a 3PL's poll page moving without letting a flood of requests
# hold hundreds of tasks.
CONCURRENCY: Final = 64
# Adapters that take a fulfilment request through the outbox (`actors/location.py`); `manual`
# stores work the pick list in somsd itself; `selectline` makes it a delivery note in the ERP.
_DELIVERED_BY_OUTBOX: Final = frozenset({"rest", "csv", "selectline"})

# What a location system reports (`actors.location.FulfilmentStatus`) plus "delivered", which a
# carrier integration may report for a shipped parcel.
LocationStatus = Literal[
    "accepted",
    "picked",
    "packed",
    "shipped",
    "delivered",
    "ready_for_pickup",
    "picked_up",
    "rejected",
]
_STATUS_STEPS: Final[dict[str, Step]] = {
    "accepted": "accept",
    "picked": "pick",
    "packed": "pack",
    "shipped": "ship",
    "delivered": "deliver",
    "ready_for_pickup": "ready",
    "picked_up": "picked-up",
}


def new_pickup_code() -> str:
    """Six random digits: short enough to read out at a counter, from a CSPRNG."""
    return f"{secrets.randbelow(1_000_000):06d}"


# -- messages -----------------------------------------------------------------------------------


class NewFulfilment(msgspec.Struct, frozen=True, kw_only=True):
    """A fulfilment the router wants, its reservation (id = fulfilment id) already held."""

    fulfilment_id: str
    location: str
    kind: FulfilmentKind
    lines: tuple[StockLine, ...]
    reserved_lines: tuple[StockLine, ...]
    carrier: str | None = None
    deliver_to: str | None = None
    pickup_fulfilment: str | None = None
    awaiting: tuple[str, ...] = ()


class CreateFulfilments(msgspec.Struct, frozen=True, tag=True):
    """Create fulfilments of one routing decision; answered with the ids that exist now.

    Idempotent: a fulfilment that already exists (a router repeating an interrupted decision)
    is left as it is and counted as created.
    """

    order_id: str
    order: Order
    routing_version: int
    items: tuple[NewFulfilment, ...]
    reply: Reply[tuple[str, ...]]


class StepFulfilment(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """Move a fulfilment one step. `lenient` for location systems (see `decide_step`)."""

    fulfilment_id: str
    step: Step
    actor: str
    reply: Reply[FulfilmentState]
    location: str | None = None  # the caller's location: a fulfilment elsewhere is "not found"
    lenient: bool = False
    carrier: str = ""
    tracking_number: str = ""
    pickup_code: str | None = None
    at: datetime | None = None  # when the location did it; None: now


class RejectLines(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    """The location refuses units; they are released (written off if missing or damaged) and
    routed again elsewhere."""

    fulfilment_id: str
    lines: tuple[StockLine, ...]
    reason: StockRejectionReason
    actor: str
    reply: Reply[FulfilmentState]
    location: str | None = None
    at: datetime | None = None


class CancelFulfilments(msgspec.Struct, frozen=True, tag=True):
    """The order was canceled: cancel its open fulfilments and release their reservations;
    answered with how many were canceled."""

    order_id: str
    reason: str
    reply: Reply[int]


class SettleOrder(msgspec.Struct, frozen=True, tag=True):
    """Finish the unsettled fulfilments of one order (None: of every order), e.g. after its
    hold was released; answered with how many were settled."""

    order_id: str | None
    reply: Reply[int]


FulfilmentMessage = (
    CreateFulfilments | StepFulfilment | RejectLines | CancelFulfilments | SettleOrder
)


# -- helpers --------------------------------------------------------------------------------------


class _KeyedLocks:
    """A FIFO lock per key, dropped once nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, trio.Lock] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(key, None)


def order_line_quantities(
    state: OrderState, lines: Sequence[StockLine]
) -> tuple[LineQuantity, ...]:
    """Shipped SKUs as the order's line indices: each SKU fills its lines' open units in order.

    Routing merges lines of one SKU, so a fulfilment knows SKUs, while the order desk counts
    per line. Units beyond what the order still has open (lines canceled meanwhile) are left
    out; the caller logs them.
    """
    taken: dict[int, int] = {}
    for line in merge_lines(lines):
        remaining = line.quantity
        for index, (ordered, counters) in enumerate(
            zip(state.order.lines, state.lines, strict=True)
        ):
            if remaining == 0:
                break
            if ordered.sku != line.sku:
                continue
            take = min(remaining, counters.open - taken.get(index, 0))
            if take > 0:
                taken[index] = taken.get(index, 0) + take
                remaining -= take
    return tuple(LineQuantity(index, quantity) for index, quantity in sorted(taken.items()))


def _store_address(location: LocationConfig | None) -> Address | None:
    if location is None or location.address is None:
        return None
    address = location.address
    return Address(
        name=address.name,
        street=address.street,
        zip=address.zip,
        city=address.city,
        country=address.country,
    )


class _Deferred(Exception):
    """A settlement that has to wait (the order is on hold); the fulfilment stays unsettled."""


class FulfilmentMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.steps = Counter(
            "somsd_fulfilment_steps",
            "Fulfilment steps recorded, per step and kind.",
            ["step", "kind"],
            registry=registry,
        )
        self.rejected_units = Counter(
            "somsd_fulfilment_rejected_units",
            "Units locations refused (then routed again), per reason.",
            ["reason"],
            registry=registry,
        )


# -- the actor ------------------------------------------------------------------------------------


class FulfilmentDesk(Actor[FulfilmentMessage]):
    """Owns the fulfilment streams; see the module docstring. Start `run` under a supervisor.

    `on_lines_rejected(order_id)` is called (synchronously, never blocking) after lines were
    rejected, so the router routes them again; the router sets it when it is constructed.
    """

    def __init__(
        self,
        store: EventStore,
        inventory: Inventory,
        desk: OrderDesk,
        *,
        config: Config,
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = utc_now,
        pickup_code: Callable[[], str] = new_pickup_code,
        concurrency: int = CONCURRENCY,
    ) -> None:
        super().__init__(ACTOR)
        self.store = store
        # Outbox items to write with a fulfilment's events (the shop's Deliver when a parcel
        # arrived); set by the composition root, may read the order, must not change anything.
        self.effects: (
            Callable[[FulfilmentState, Sequence[FulfilmentEvent]], Awaitable[list[OutboxItem]]]
            | None
        ) = None
        self.inventory = inventory
        self.desk = desk
        self.on_lines_rejected: Callable[[str], None] | None = None
        self._now = now
        self._pickup_code = pickup_code
        self._concurrency = concurrency
        self._fulfilment_locks = _KeyedLocks()
        self._order_locks = _KeyedLocks()
        self.metrics = FulfilmentMetrics(registry)
        self._locations: dict[str, LocationConfig] = {}
        self.configure(config)

    def configure(self, config: Config) -> None:
        """Take a new config (load and reload): which locations deliver through the outbox,
        and the store addresses transfers go to."""
        self._locations = {location.name: location for location in config.location}

    # -- the public face: location adapters (LocationSink) and the API ------------------------

    async def location_update(
        self,
        location: str,
        fulfilment_id: str,
        status: LocationStatus,
        *,
        lines: tuple[LineRejection, ...] = (),
        tracking_number: str | None = None,
        carrier: str | None = None,
        reason: StockRejectionReason | None = None,
        at: datetime | None = None,
    ) -> None:
        """A location system reports a fulfilment's status (`actors.location.LocationSink`).

        Repeated and late reports change nothing. `lines` are absolute per SKU: only units
        beyond those already rejected are rejected now, before the status is applied (a 3PL
        reports a partial shipment as "shipped" with the refused lines). "rejected" refuses
        whatever is left, with `reason` (default `stock_missing`). A handover needs no pickup
        code: the location's own counter checked it. Returns once everything is committed.
        """
        actor = f"location/{location}"
        try:
            await self._location_update(
                actor,
                location,
                fulfilment_id,
                status,
                lines=lines,
                tracking_number=tracking_number,
                carrier=carrier,
                reason=reason,
                at=at,
            )
        except DomainError as exc:
            # Permanent: the same update would be refused again on every poll, and raising
            # would hold the location's feed (cursor, inbound file) on it forever. Transient
            # failures (store, a stopped actor) still raise, so the update is offered again.
            log.error(  # noqa: TRY400  # an expected refusal: the message says it all
                "location_update_refused",
                location=location,
                fulfilment_id=fulfilment_id,
                status=status,
                error=exc.message,
            )

    async def _location_update(
        self,
        actor: str,
        location: str,
        fulfilment_id: str,
        status: LocationStatus,
        *,
        lines: tuple[LineRejection, ...],
        tracking_number: str | None,
        carrier: str | None,
        reason: StockRejectionReason | None,
        at: datetime | None,
    ) -> None:
        state = await self._get(fulfilment_id, location)
        already: dict[tuple[str, str], int] = {}
        for line in state.rejected:
            key = (line.sku, line.reason)
            already[key] = already.get(key, 0) + line.quantity
        by_reason: dict[StockRejectionReason, list[StockLine]] = {}
        for rejection in lines:
            extra = rejection.quantity - already.get((rejection.sku, rejection.reason), 0)
            if extra > 0:
                by_reason.setdefault(rejection.reason, []).append(StockLine(rejection.sku, extra))
        for why, refused in by_reason.items():
            if state.state not in _REJECTABLE:
                log.warning(
                    "late_rejection_ignored", fulfilment_id=fulfilment_id, state=state.state
                )
                break
            capped = _within(state, refused)
            if capped:
                state = await self._ask_state(
                    partial(
                        _reject_message,
                        fulfilment_id=fulfilment_id,
                        lines=capped,
                        reason=why,
                        actor=actor,
                        location=location,
                        at=at,
                    )
                )
        if status == "rejected":
            if state.lines and state.state in _REJECTABLE:
                await self._ask_state(
                    partial(
                        _reject_message,
                        fulfilment_id=fulfilment_id,
                        lines=state.lines,
                        reason=reason or "stock_missing",
                        actor=actor,
                        location=location,
                        at=at,
                    )
                )
            return
        step = _STATUS_STEPS[status]
        await self._ask_state(
            lambda reply: StepFulfilment(
                fulfilment_id=fulfilment_id,
                step=step,
                actor=actor,
                reply=reply,
                location=location,
                lenient=True,
                carrier=carrier or "",
                tracking_number=tracking_number or "",
                at=at,
            )
        )

    async def stock_report(self, report: StockReport) -> None:
        """A location's absolute count (`actors.location.LocationSink`).

        Reservations the new count no longer covers (`oversold`) are given up at that location,
        youngest fulfilments first (older orders keep their claim), and routed again. They are
        refused as "declined": the count already says the units are gone, so writing them off
        again would count them missing twice.
        """
        decision: StockReportDecision = await self.inventory.ask(
            lambda reply: ReportStock(report, reply)
        )
        await self.reroute_oversold(decision.oversold)

    async def reroute_oversold(self, oversold: Iterable[Oversold]) -> None:
        """Give up reservations a count no longer covers (see `stock_report`); for callers that
        send `ReportStock` themselves, such as `PUT /v1/locations/{location}/stock`."""
        for over in oversold:
            await self._give_up_oversold(over.location, over.sku, over.reserved - over.on_hand)

    async def step(
        self,
        fulfilment_id: str,
        step: Step,
        *,
        actor: str,
        carrier: str = "",
        tracking_number: str = "",
        pickup_code: str | None = None,
    ) -> FulfilmentView:
        """A step taken through the fulfilment API (strict: a repeated step is a 409)."""
        state = await self._ask_state(
            lambda reply: StepFulfilment(
                fulfilment_id=fulfilment_id,
                step=step,
                actor=actor,
                reply=reply,
                carrier=carrier,
                tracking_number=tracking_number,
                pickup_code=pickup_code,
            )
        )
        return FulfilmentView.of(state)

    async def reject(
        self,
        fulfilment_id: str,
        lines: Sequence[StockLine],
        reason: StockRejectionReason,
        *,
        actor: str,
    ) -> FulfilmentView:
        """Lines refused through the fulfilment API."""
        state = await self._ask_state(
            lambda reply: RejectLines(
                fulfilment_id=fulfilment_id,
                lines=tuple(lines),
                reason=reason,
                actor=actor,
                reply=reply,
            )
        )
        return FulfilmentView.of(state)

    async def _ask_state(
        self, make: Callable[[Reply[FulfilmentState]], FulfilmentMessage]
    ) -> FulfilmentState:
        return await self.ask(make)

    async def _get(self, fulfilment_id: str, location: str | None) -> FulfilmentState:
        state = await self.store.read(partial(fetch_fulfilment, fulfilment_id=fulfilment_id))
        if state is None or (location is not None and state.location != location):
            where = f" at {location}" if location is not None else ""
            raise FulfilmentNotFound(f"no fulfilment {fulfilment_id!r}{where}")
        return state

    # -- the actor's loop ---------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve messages, each in its own task; settle what a previous run left unsettled."""
        self._fulfilment_locks = _KeyedLocks()
        self._order_locks = _KeyedLocks()
        slots = trio.Semaphore(self._concurrency)
        async with trio.open_nursery() as nursery:
            task_status.started()
            # After `started`: settling asks the order desk, which may start after us.
            nursery.start_soon(self._settle_all, None)
            async for message in self.mailbox:
                await slots.acquire()
                nursery.start_soon(self._handle, message, slots)

    async def _handle(self, message: FulfilmentMessage, slots: trio.Semaphore) -> None:
        try:
            match message:
                case CreateFulfilments():
                    message.reply.set(await self._create(message))
                case StepFulfilment():
                    message.reply.set(await self._step(message))
                case RejectLines():
                    message.reply.set(await self._reject(message))
                case CancelFulfilments():
                    message.reply.set(await self._cancel(message.order_id, message.reason))
                case SettleOrder():
                    message.reply.set(await self._settle_all(message.order_id))
        except (DomainError, VersionConflict, ReplyError, StoreUnavailable) as exc:
            # StoreUnavailable (a full disk) fails the request, not the desk: a restart would
            # not make the store writable.
            message.reply.fail(exc)
        except Exception as exc:
            message.reply.fail(exc)
            raise  # a store or programming error: let the supervisor restart the desk
        finally:
            slots.release()
            if not message.reply.done:  # cancelled: the desk is stopping or restarting
                message.reply.fail(ReplyError("the fulfilment desk stopped; retry the request"))

    # -- creating -----------------------------------------------------------------------------

    async def _create(self, message: CreateFulfilments) -> tuple[str, ...]:
        now = self._now()
        pending = []
        for item in message.items:
            event = FulfilmentRequested(
                at=now,
                actor=ACTOR,
                fulfilment_id=item.fulfilment_id,
                order_id=message.order_id,
                order_number=message.order.number,
                location=item.location,
                kind=item.kind,
                lines=item.lines,
                reserved_lines=item.reserved_lines,
                carrier=item.carrier,
                deliver_to=item.deliver_to,
                pickup_fulfilment=item.pickup_fulfilment,
                awaiting=item.awaiting,
                routing_version=message.routing_version,
            )
            # Submitted together, so one decision's fulfilments share a group commit.
            reply = await self.store.submit(
                fulfilment_stream(item.fulfilment_id),
                _to_new_events([event]),
                expected_version=0,
                outbox=self._outbox(message.order, item),
            )
            pending.append((item, reply))
        created: list[str] = []
        for item, reply in pending:
            try:
                await reply.wait()
            except VersionConflict:
                pass  # created by an earlier, interrupted run of the same decision
            else:
                log.info(
                    "fulfilment_requested",
                    fulfilment_id=item.fulfilment_id,
                    order_id=message.order_id,
                    location=item.location,
                    kind=item.kind,
                )
            created.append(item.fulfilment_id)
        return tuple(created)

    def _outbox(self, order: Order, item: NewFulfilment) -> tuple[OutboxItem, ...]:
        """The request for a location system that takes it through the outbox (rest, csv)."""
        location = self._locations.get(item.location)
        if location is None or location.adapter not in _DELIVERED_BY_OUTBOX:
            return ()
        allocation = Allocation(
            location=item.location,
            kind=item.kind,
            lines=tuple(RoutedLine(line.sku, line.quantity) for line in item.lines),
            carrier=item.carrier,
            deliver_to=item.deliver_to,
        )
        store_address = None
        if item.kind == "transfer":
            store_address = _store_address(self._locations.get(item.deliver_to or ""))
            if store_address is None:
                log.error(
                    "transfer_without_store_address",
                    fulfilment_id=item.fulfilment_id,
                    store=item.deliver_to,
                    hint="set [[location]].address for the pickup store",
                )
                return ()
        payload = send_fulfilment_payload(
            item.fulfilment_id, order, allocation, store_address=store_address
        )
        target = location_target(item.location)
        return (OutboxItem(target, payload, f"{target}:{item.fulfilment_id}"),)

    # -- steps --------------------------------------------------------------------------------

    async def _step(self, message: StepFulfilment) -> FulfilmentState:
        async with self._fulfilment_locks.hold(message.fulfilment_id):
            before = await self._get(message.fulfilment_id, message.location)
            events = decide_step(
                before,
                message.step,
                now=message.at or self._now(),
                actor=message.actor,
                lenient=message.lenient,
                carrier=message.carrier,
                tracking_number=message.tracking_number,
                pickup_code=message.pickup_code,
                new_pickup_code=self._pickup_code() if message.step == "ready" else "",
            )
            state = await self._append(before, events)
            if events:
                self.metrics.steps.labels(message.step, state.kind).inc()
                log.info(
                    "fulfilment_step",
                    fulfilment_id=state.fulfilment_id,
                    step=message.step,
                    state=state.state,
                    actor=message.actor,
                )
            if state.needs_settlement:
                try:
                    state = await self._settle(state)
                except ReplyError as exc:
                    # The step is recorded; its effects are finished at the next start, on a
                    # repeated report, or when the order's hold is released.
                    log.warning(
                        "settlement_postponed", fulfilment_id=state.fulfilment_id, error=str(exc)
                    )
        if events and before.state == "requested":
            await self._mark_processing(state)
        return state

    async def _append(
        self, state: FulfilmentState, events: Sequence[FulfilmentEvent]
    ) -> FulfilmentState:
        if not events:
            return state
        after = state
        for event in events:
            after = apply_fulfilment(after, event)
        await self.store.append(
            fulfilment_stream(state.fulfilment_id),
            _to_new_events(events),
            expected_version=state.version,
            outbox=await self.effects(after, events) if self.effects is not None else (),
        )
        return after

    async def _mark_processing(self, state: FulfilmentState) -> None:
        """The first fulfilment a location takes on moves a pending order to processing."""
        blob = await self.store.read(partial(fetch_state, order_id=state.order_id))
        if blob is None or decode_state(blob).status != PENDING:
            return
        reason = f"fulfilment {state.fulfilment_id} accepted at {state.location}"
        try:
            await self.desk.ask(
                lambda reply: OrderCommand(
                    state.order_id, ChangeStatus(PROCESSING, reason), ACTOR, reply
                )
            )
        except (DomainError, ReplyError) as exc:
            # The order moved on meanwhile (held, canceled, processing already): nothing to do.
            log.info("processing_not_set", order_id=state.order_id, reason=str(exc))

    # -- settling: what a shipment or a hand-over causes ----------------------------------------

    async def _settle(self, state: FulfilmentState) -> FulfilmentState:
        """Consume the reservation and tell the order (or the pickup); caller holds the lock."""
        at = next(
            (e.at for e in reversed(state.history) if e.state in ("shipped", "picked_up")),
            state.updated_at,
        )
        if state.reserved_lines:
            shipped: StockShipped | StockRefused = await self.inventory.ask(
                lambda reply: ShipStock(
                    reservation_id=state.fulfilment_id,
                    at=at,
                    lines=state.reserved_lines,
                    reply=reply,
                )
            )
            if isinstance(shipped, StockRefused):
                await self._ship_what_is_left(state, shipped, at)
        note = ""
        try:
            if state.kind == "transfer":
                await self._dispatch_transfer(state)
            else:
                note = await self._record_shipment(state)
        except _Deferred as deferred:
            log.info("settlement_deferred", fulfilment_id=state.fulfilment_id, why=str(deferred))
            return state
        settled = FulfilmentSettled(at=self._now(), actor=ACTOR, note=note)
        return await self._append(state, [settled])

    async def _ship_what_is_left(
        self, state: FulfilmentState, refused: StockRefused, at: datetime
    ) -> None:
        if refused.reason == "unknown_reservation":
            return  # consumed by an earlier, interrupted settlement
        log.warning(
            "reservation_smaller_than_fulfilment",
            fulfilment_id=state.fulfilment_id,
            reason=refused.reason,
        )
        rest: StockShipped | StockRefused = await self.inventory.ask(
            lambda reply: ShipStock(
                reservation_id=state.fulfilment_id, at=at, lines=None, reply=reply
            )
        )
        if isinstance(rest, StockRefused) and rest.reason != "unknown_reservation":
            log.error("reservation_not_shipped", fulfilment_id=state.fulfilment_id)

    async def _record_shipment(self, state: FulfilmentState) -> str:
        """`RecordShipment` on the order; returns a note when there was nothing to record."""
        async with self._order_locks.hold(state.order_id):
            blob = await self.store.read(partial(fetch_state, order_id=state.order_id))
            if blob is None:
                return f"order {state.order_id} not found; shipment not recorded"
            order = decode_state(blob)
            if order.status == ON_HOLD:
                raise _Deferred(f"order {state.order_id} is on hold")
            if state.fulfilment_id in order.shipment_ids:
                return ""
            lines = order_line_quantities(order, state.lines)
            units = sum(line.quantity for line in lines)
            if units < sum(line.quantity for line in state.lines):
                log.warning(
                    "shipment_exceeds_open_units",
                    fulfilment_id=state.fulfilment_id,
                    order_id=state.order_id,
                )
            if not lines:
                return "nothing open on the order; shipment not recorded"
            action = RecordShipment(
                lines,
                state.fulfilment_id,
                location=state.location,
                tracking_number=state.tracking_number or "",
            )
            try:
                await self.desk.ask(
                    lambda reply: OrderCommand(state.order_id, action, ACTOR, reply)
                )
            except DuplicateCommand:
                return ""
            except OrderNotFound:
                return f"order {state.order_id} not found; shipment not recorded"
            except Conflict as exc:
                if exc.code == "not_shippable":
                    current = await self.store.read(partial(fetch_state, order_id=state.order_id))
                    if current is not None and decode_state(current).status == ON_HOLD:
                        raise _Deferred(f"order {state.order_id} is on hold") from exc
                log.error(  # noqa: TRY400  # an expected refusal: the message says it all
                    "shipment_not_recorded",
                    fulfilment_id=state.fulfilment_id,
                    order_id=state.order_id,
                    error=exc.message,
                )
                return f"shipment not recorded: {exc.message}"
            return ""

    async def _dispatch_transfer(self, transfer: FulfilmentState) -> None:
        """The transfer left its source: the store's pickup no longer waits for it."""
        pickup_id = transfer.pickup_fulfilment
        if pickup_id is None:
            return
        async with self._fulfilment_locks.hold(pickup_id):
            pickup = await self.store.read(partial(fetch_fulfilment, fulfilment_id=pickup_id))
            if pickup is None or transfer.fulfilment_id not in pickup.awaiting:
                return
            event = TransferDispatched(
                at=self._now(), actor=ACTOR, transfer_id=transfer.fulfilment_id
            )
            await self._append(pickup, [event])

    async def _settle_all(self, order_id: str | None) -> int:
        """Settle every unsettled fulfilment (of one order): after a restart or a hold release."""
        states = await self.store.read(unsettled_fulfilments)
        settled = 0
        for candidate in states:
            if order_id is not None and candidate.order_id != order_id:
                continue
            async with self._fulfilment_locks.hold(candidate.fulfilment_id):
                state = await self._get(candidate.fulfilment_id, None)
                if state.needs_settlement:
                    state = await self._settle(state)
                    settled += state.settled
        return settled

    # -- rejections ---------------------------------------------------------------------------

    async def _reject(self, message: RejectLines) -> FulfilmentState:
        at = message.at or self._now()
        async with self._fulfilment_locks.hold(message.fulfilment_id):
            state = await self._get(message.fulfilment_id, message.location)
            rejection = decide_rejection(state, message.lines)
            written_off = False
            if rejection.from_reservation:
                answer: ReservationRejected | StockRefused = await self.inventory.ask(
                    lambda reply: RejectStock(
                        reservation_id=state.fulfilment_id,
                        reason=message.reason,
                        at=at,
                        lines=rejection.from_reservation,
                        reply=reply,
                    )
                )
                if isinstance(answer, ReservationRejected):
                    written_off = answer.written_off
                else:
                    log.error(
                        "rejection_not_in_stock_book",
                        fulfilment_id=state.fulfilment_id,
                        reason=answer.reason,
                    )
            event = FulfilmentLinesRejected(
                at=at,
                actor=message.actor,
                lines=rejection.lines,
                reason=message.reason,
                written_off=written_off,
                from_reservation=rejection.from_reservation,
            )
            state = await self._append(state, [event])
            for line in rejection.lines:
                self.metrics.rejected_units.labels(message.reason).inc(line.quantity)
            log.info(
                "fulfilment_lines_rejected",
                fulfilment_id=state.fulfilment_id,
                reason=message.reason,
                units=sum(line.quantity for line in rejection.lines),
                state=state.state,
            )
            if state.kind == "transfer":
                await self._withdraw_from_pickup(state, rejection.lines)
        if self.on_lines_rejected is not None:
            self.on_lines_rejected(state.order_id)
        return state

    async def _withdraw_from_pickup(
        self, transfer: FulfilmentState, lines: tuple[StockLine, ...]
    ) -> None:
        pickup_id = transfer.pickup_fulfilment
        if pickup_id is None:
            return
        async with self._fulfilment_locks.hold(pickup_id):
            pickup = await self.store.read(partial(fetch_fulfilment, fulfilment_id=pickup_id))
            if pickup is None or pickup.state in ("picked_up", "rejected", "canceled"):
                return
            event = TransferLinesWithdrawn(
                at=self._now(),
                actor=ACTOR,
                transfer_id=transfer.fulfilment_id,
                lines=lines,
                transfer_closed=not transfer.lines,
            )
            await self._append(pickup, [event])

    async def _give_up_oversold(self, location: str, sku: str, units: int) -> None:
        open_here = await self.store.read(
            partial(
                list_fulfilments,
                location=location,
                states=_REJECTABLE,
                limit=10_000,
            )
        )
        holding = [
            state for state in open_here if any(line.sku == sku for line in state.reserved_lines)
        ]
        for state in sorted(holding, key=lambda s: s.created_at, reverse=True):
            if units <= 0:
                break
            held = sum(line.quantity for line in state.reserved_lines if line.sku == sku)
            take = min(held, units)
            try:
                await self._ask_state(
                    partial(
                        _reject_message,
                        fulfilment_id=state.fulfilment_id,
                        lines=(StockLine(sku, take),),
                        reason="declined",
                        actor="inventory",
                        location=None,
                        at=None,
                    )
                )
            except DomainError as exc:  # it moved on meanwhile (shipped, canceled)
                log.info("oversold_not_rejected", fulfilment_id=state.fulfilment_id, error=str(exc))
                continue
            units -= take
        if units > 0:
            log.warning("oversold_not_covered", location=location, sku=sku, units=units)

    # -- cancellation -------------------------------------------------------------------------

    async def _cancel(self, order_id: str, reason: str) -> int:
        canceled = 0
        for candidate in await self.store.read(partial(fulfilments_of_order, order_id=order_id)):
            async with self._fulfilment_locks.hold(candidate.fulfilment_id):
                state = await self._get(candidate.fulfilment_id, None)
                if state.state not in _CANCELABLE:
                    continue
                if state.reserved_lines:
                    released: ReservationReleased | StockRefused = await self.inventory.ask(
                        partial(_release_all, state.fulfilment_id)
                    )
                    if isinstance(released, StockRefused):
                        log.info(
                            "reservation_already_gone",
                            fulfilment_id=state.fulfilment_id,
                            reason=released.reason,
                        )
                event = FulfilmentCanceled(at=self._now(), actor=ACTOR, reason=reason)
                await self._append(state, [event])
                canceled += 1
                log.info("fulfilment_canceled", fulfilment_id=state.fulfilment_id, reason=reason)
        return canceled


# Lines can be refused while the goods are still at the location and nobody has them.
_REJECTABLE: Final = frozenset({"requested", "accepted", "picked", "packed"})
_CANCELABLE: Final = frozenset({"requested", "accepted", "picked", "packed", "ready_for_pickup"})

_encoder = msgspec.json.Encoder()


def _to_new_events(events: Sequence[FulfilmentEvent]) -> list[NewEvent]:
    return [NewEvent(type(event).__name__, _encoder.encode(event)) for event in events]


def _release_all(
    reservation_id: str, reply: Reply[ReservationReleased | StockRefused]
) -> ReleaseStock:
    return ReleaseStock(reservation_id=reservation_id, lines=None, reply=reply)


def _reject_message(
    reply: Reply[FulfilmentState],
    *,
    fulfilment_id: str,
    lines: tuple[StockLine, ...],
    reason: StockRejectionReason,
    actor: str,
    location: str | None,
    at: datetime | None,
) -> RejectLines:
    return RejectLines(
        fulfilment_id=fulfilment_id,
        lines=lines,
        reason=reason,
        actor=actor,
        reply=reply,
        location=location,
        at=at,
    )


def _within(state: FulfilmentState, lines: Sequence[StockLine]) -> tuple[StockLine, ...]:
    """`lines` capped at what the fulfilment still holds (a location may count more)."""
    holding = {line.sku: line.quantity for line in state.lines}
    capped = [StockLine(line.sku, min(line.quantity, holding.get(line.sku, 0))) for line in lines]
    return tuple(line for line in capped if line.quantity > 0)

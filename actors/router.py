"""The router: decides where each order is fulfilled, reserves it, and keeps the backorder queue.

Inputs are nudges, the work is durable. The order desk calls `order_committed` after every
commit, the inventory calls `stock_added` when a SKU's ATP rose, the fulfilment desk calls
`lines_rejected` after a location refused units. Each only queues a message (never blocks); if
the mailbox is full, a flag makes the router look the work up in the projections instead, which
is also exactly what it does at start: orders never routed, decisions never applied, rejected
lines not routed again, canceled orders with open fulfilments, and every backorder. So a lost
nudge delays work, it never loses it.

One order at a time. Deciding reads ATP (`GetAvailability`) and reserving changes it; doing one
order after the other means the next decision already sees the last reservation, so a refusal
can only come from a stock report landing in between. Throughput is then bound by the commits
per order (decision, reservations, fulfilments, outcome: four group commits, ~5 ms on the
machines we measured), a few hundred orders a second, well above any shop's peak.

How one routing goes (see `somsd.projections.fulfilments` for the events):
1. `OrderRouted` - the decision with every candidate, score and rejection reason, and the
   fulfilment ids it plans - is appended *before* anything is reserved. Reservation ids are the
   fulfilment ids, so after a crash the router asks again and `duplicate_reservation` tells it
   the reservation is already held.
2. `ReserveStock` per allocation. A refusal (ATP fell meanwhile) sends those lines through a
   new decision, at most `max_attempts` times; what is still refused then is backordered.
3. The fulfilment desk creates the fulfilments (idempotent per id).
4. `RoutingApplied` records what exists now and the order's whole backorder.
A retry of a backorder that allocates nothing stores nothing: it would be a decision identical
to the last one, thousands of times over while a SKU is sold out.

Backorders are re-routed oldest first (by when the order went on backorder), whenever stock of
one of their SKUs rises, and once at start.

With several daemons (`[cluster]`) the router runs only on the holder of the `core/routing`
lease (`actors.lease_keeper.ROUTING_DUTY`), so one task still decides every routing. The other
members take orders in and commit them but nudge nobody; the holder looks for their work every
`catch_up_every` seconds (`CatchUp`): accepted orders never routed, canceled orders still open,
refused lines, and - through the inventory, which applies the other members' stock events -
stock that rose elsewhere. A new holder starts the router afresh, which is the same catch-up.

Today's orders per location (for `daily_capacity`)
count fulfilments created per UTC day; they are read back from the fulfilments table at start
and when the day changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from functools import partial
from typing import Final

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram

from actors.fulfilment import (
    CancelFulfilments,
    CreateFulfilments,
    FulfilmentDesk,
    NewFulfilment,
    SettleOrder,
)
from actors.inventory import CatchUpStock, GetAvailability, Inventory, ReserveStock
from somsd.actor import Actor, Reply
from somsd.config import Config, LocationConfig
from somsd.domain.atp import StockLine, StockRefused, StockReserved
from somsd.domain.events import (
    HoldReleased,
    OrderAccepted,
    OrderCanceled,
    OrderEvent,
    StatusChanged,
)
from somsd.domain.geo import SHIPPED_CENTROIDS
from somsd.domain.routing import (
    Destination,
    FulfilmentLocation,
    RoutingDecision,
    RoutingNetwork,
    RoutingPolicy,
    RoutingRequest,
    RoutingWeights,
    ShippingRate,
    route_order,
)
from somsd.domain.routing import OrderLine as RoutedLine
from somsd.domain.state import OrderState
from somsd.domain.status import NEW, ON_HOLD, PENDING, PROCESSING
from somsd.projections.fulfilments import (
    OrderRouted,
    PlannedFulfilment,
    RoutingApplied,
    RoutingClosed,
    RoutingEvent,
    RoutingOrder,
    RoutingRecord,
    backordered_orders,
    fetch_routing_order,
    merge_lines,
    orders_to_close,
    orders_today,
    pending_rejections,
    routing_stream,
    unapplied_routings,
    unrouted_orders,
)
from somsd.projections.orders import decode_state, fetch_state
from somsd.store import EventStore, NewEvent, StoreUnavailable, utc_now

__all__ = [
    "ACTOR",
    "DEFAULT_MAX_ATTEMPTS",
    "CatchUp",
    "CloseOrder",
    "Describe",
    "RetryRejections",
    "RouteOrder",
    "Router",
    "RouterMessage",
    "RouterStatus",
    "StockAdded",
    "routing_network",
    "routing_policy",
]

log = structlog.get_logger("actors.router")

ACTOR = "router"
# Decisions per routing when reservations are refused. A refusal means a stock report lowered
# ATP between reading it and reserving - rare, since the router is the only one reserving - so
# a third refusal in a row means the counts are moving fast and waiting for stock is wiser.
DEFAULT_MAX_ATTEMPTS: Final = 3
# Orders and backorders read per query while catching up: large enough that a restart with
# thousands waiting needs few queries, small enough to hold in memory without thought.
_PAGE: Final = 500
# Statuses in which an order is fulfilled. Custom statuses (say "awaiting-stock") are left
# alone: what they mean is the operator's, and routing resumes when the order returns here.
ROUTABLE: Final = frozenset({PENDING, PROCESSING})


# -- configuration --------------------------------------------------------------------------------


def _fulfilment_location(location: LocationConfig) -> FulfilmentLocation:
    """The routing view of one `[[location]]`.

    An empty `ships_to` means the location's own country (the config's default would otherwise
    make it ship nowhere). Without lat/lon the location stands at its store address's postcode
    centroid, else its country's centroid: distances then compare regions, which still ranks a
    Dortmund warehouse ahead of a Munich one for a customer in Essen.
    """
    lat, lon = location.lat, location.lon
    if lat is None or lon is None:
        postcode = location.address.zip if location.address is not None else None
        centroid = SHIPPED_CENTROIDS.locate(location.country, postcode)
        if centroid is None:
            log.warning("location_without_position", location=location.name)
            lat, lon = 0.0, 0.0
        else:
            lat, lon = centroid.point.lat, centroid.point.lon
    return FulfilmentLocation(
        name=location.name,
        kind=location.kind,
        country=location.country,
        lat=lat,
        lon=lon,
        ships_to=frozenset(location.ships_to or (location.country,)),
        capabilities=frozenset(location.capabilities),
        priority=location.priority,
        daily_capacity=location.daily_capacity,
        rates=tuple(
            ShippingRate(
                rate.carrier,
                rate.cost,
                rate.days,
                frozenset(rate.countries) if rate.countries else None,
            )
            for rate in location.rates
        ),
    )


def routing_network(config: Config) -> RoutingNetwork:
    """Locations with their rates, and who serves which channel, from the config."""
    return RoutingNetwork(
        [_fulfilment_location(location) for location in config.location],
        {channel.name: channel.locations for channel in config.channel},
    )


def routing_policy(config: Config) -> RoutingPolicy:
    weights = config.routing.weights
    return RoutingPolicy(
        weights=RoutingWeights(
            distance=weights.distance,
            cost=weights.cost,
            speed=weights.speed,
            priority=weights.priority,
        ),
        allow_split=config.routing.allow_split,
        max_locations=config.routing.max_locations,
    )


# -- messages -------------------------------------------------------------------------------------


class RouteOrder(msgspec.Struct, frozen=True, tag=True):
    """Route an order that became routable. `cause` "order" routes it if it never was;
    "hold_released" retries its backorder and refused lines and settles its shipments."""

    order_id: str
    cause: str = "order"
    state: OrderState | None = None  # the committed state, saving a read; None: read it


class CloseOrder(msgspec.Struct, frozen=True, tag=True):
    """The order was canceled: cancel its open fulfilments, drop its backorder."""

    order_id: str
    reason: str = "order canceled"


class StockAdded(msgspec.Struct, frozen=True, tag=True):
    """ATP of these SKUs rose somewhere: retry their backorders, oldest first."""

    skus: frozenset[str]


class RetryRejections(msgspec.Struct, frozen=True, tag=True):
    """Route lines that locations refused (of one order, or all when None)."""

    order_id: str | None = None


class CatchUp(msgspec.Struct, frozen=True, tag=True):
    """Look up work other members committed (`[cluster]`): what a missed nudge would be."""


class RouterStatus(msgspec.Struct, frozen=True):
    day: date
    orders_today: dict[str, int]
    decisions: int  # stored since start
    backorder_retries: int  # backorders tried since start


class Describe(msgspec.Struct, frozen=True, tag=True):
    """The router's counters. Answered after everything queued before it was handled, which
    also makes it the way to wait until the router has caught up."""

    reply: Reply[RouterStatus]


RouterMessage = RouteOrder | CloseOrder | StockAdded | RetryRejections | CatchUp | Describe


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.decision_seconds = Histogram(
            "somsd_routing_decision_seconds",
            "Time to decide one routing (route_order), without reading ATP or reserving.",
            registry=registry,
            # bench/routing.py: ~50 us for a few locations up to ~1.5 ms for an exact split
            # over 50; the top buckets catch a greedy search gone slow.
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1),
        )
        self.decisions = Counter(
            "somsd_routing_decisions",
            "Routing decisions stored, per fill (complete, partial, none).",
            ["fill"],
            registry=registry,
        )
        self.refusals = Counter(
            "somsd_routing_reservations_refused",
            "Reservations the inventory refused because ATP fell after the decision.",
            registry=registry,
        )


class _Job(msgspec.Struct, kw_only=True):
    """One routing in progress: the order, what to route, and where it stands."""

    state: OrderState
    lines: tuple[StockLine, ...]
    cause: str
    excluded: dict[str, frozenset[str]]  # sku -> locations kept out
    version: int  # of the routing stream
    planned: int  # fulfilment numbers used so far
    backorder: tuple[StockLine, ...]  # the order's backorder besides `lines`


# -- the actor ------------------------------------------------------------------------------------


class Router(Actor[RouterMessage]):
    """Routes orders; see the module docstring. Start `run` under a supervisor."""

    def __init__(
        self,
        store: EventStore,
        inventory: Inventory,
        fulfilments: FulfilmentDesk,
        *,
        config: Config,
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = utc_now,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        catch_up_every: float | None = None,
    ) -> None:
        """`catch_up_every`: seconds between looks at work committed by other members (only
        with `[cluster]`; alone, every change is nudged and nothing polls)."""
        super().__init__(ACTOR)
        self.store = store
        self.inventory = inventory
        self.fulfilments = fulfilments
        fulfilments.on_lines_rejected = self.lines_rejected
        self._now = now
        self._max_attempts = max_attempts
        self._catch_up_every = catch_up_every
        self.metrics = RouterMetrics(registry)
        self._network = routing_network(config)
        self._policy = routing_policy(config)
        self._day = now().date()
        self._orders_today: dict[str, int] = {}
        self._decisions = 0
        self._backorder_retries = 0
        # Work a full mailbox could not take; looked up in the projections instead.
        self._missed_orders = False
        self._missed_closes = False
        self._missed_rejections = False
        self._missed_skus: set[str] = set()

    def configure(self, config: Config) -> None:
        """Take a new config (load and reload): locations, rates, channels, weights."""
        self._network = routing_network(config)
        self._policy = routing_policy(config)

    # -- nudges (synchronous, never blocking) -------------------------------------------------

    def order_committed(self, state: OrderState, events: Sequence[OrderEvent]) -> None:
        """`OrderDesk.on_committed`: queue the orders that became routable or were canceled."""
        if any(isinstance(event, OrderCanceled) for event in events):
            if not self._offer(CloseOrder(state.order_id)):
                self._missed_closes = True
            return
        if state.status not in ROUTABLE:
            return
        for event in events:
            if isinstance(event, HoldReleased) or (
                isinstance(event, StatusChanged) and event.from_status == ON_HOLD
            ):
                cause = "hold_released"
            elif isinstance(event, OrderAccepted) or (
                isinstance(event, StatusChanged) and event.from_status == NEW
            ):
                cause = "order"
            else:
                continue
            if not self._offer(RouteOrder(state.order_id, cause, state)):
                self._missed_orders = True
            return

    def stock_added(self, skus: frozenset[str]) -> None:
        """`Inventory(on_stock_added=...)`: ATP of these SKUs rose."""
        if not self._offer(StockAdded(skus)):
            self._missed_skus.update(skus)

    def lines_rejected(self, order_id: str) -> None:
        """`FulfilmentDesk.on_lines_rejected`: a location refused lines of the order."""
        if not self._offer(RetryRejections(order_id)):
            self._missed_rejections = True

    def _offer(self, message: RouterMessage) -> bool:
        try:
            self.mailbox.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    # -- the loop -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Catch up with what a previous run (or a full mailbox) left, then handle messages."""
        await self._count_today(force=True)
        task_status.started()
        # Everything the projections say is waiting, as if every nudge had been missed.
        self._missed_orders = self._missed_closes = self._missed_rejections = True
        await self._finish_unapplied()
        await self._catch_up()
        await self._retry_backorders(None)
        async with trio.open_nursery() as nursery:
            if self._catch_up_every is not None:
                nursery.start_soon(self._tick, self._catch_up_every)
            await self._serve()
            nursery.cancel_scope.cancel()

    async def _tick(self, every: float) -> None:
        while True:
            await trio.sleep(every)
            if not self._offer(CatchUp()):  # a full mailbox: its catch-ups look anyway
                self._missed_orders = self._missed_closes = self._missed_rejections = True

    async def _serve(self) -> None:
        async for message in self.mailbox:
            try:
                await self._handle(message)
                await self._catch_up()
            except StoreUnavailable as exc:
                # A full disk: what the router does is derived from the projections, so the
                # next message's catch-up redoes it; a restart would free no disk space.
                log.warning("routing_deferred", reason=str(exc))
                self._missed_orders = self._missed_closes = self._missed_rejections = True
                if isinstance(message, StockAdded):
                    self._missed_skus.update(message.skus)

    async def _handle(self, message: RouterMessage) -> None:
        match message:
            case RouteOrder(order_id=order_id, cause=cause, state=state):
                await self._route_order(order_id, cause, state)
            case CloseOrder(order_id=order_id, reason=reason):
                await self._close(order_id, reason)
            case StockAdded(skus=skus):
                await self._retry_backorders(skus)
            case RetryRejections(order_id=order_id):
                await self._retry_rejections(order_id)
            case CatchUp():
                self._missed_orders = self._missed_closes = self._missed_rejections = True
                # Stock events of other members: a rise comes back as `stock_added`.
                await self.inventory.ask(CatchUpStock)
            case Describe(reply=reply):
                reply.set(
                    RouterStatus(
                        self._day,
                        dict(self._orders_today),
                        self._decisions,
                        self._backorder_retries,
                    )
                )

    async def _catch_up(self) -> None:
        """Do the work whose nudges a full mailbox could not take."""
        if self._missed_closes:
            self._missed_closes = False
            for order_id in await self.store.read(partial(orders_to_close, limit=_PAGE)):
                await self._close(order_id, "order canceled")
        if self._missed_rejections:
            self._missed_rejections = False
            await self._retry_rejections(None)
        if self._missed_orders:
            self._missed_orders = False
            # By cursor: an order with nothing open to route stays "unrouted" and must not
            # hide the ones behind it.
            after = 0
            while batch := await self.store.read(
                partial(unrouted_orders, after_seq=after, limit=_PAGE)
            ):
                for after, order_id in batch:  # noqa: B007  # the cursor is the last one seen
                    await self._route_order(order_id, "order", None)
        if self._missed_skus:
            skus, self._missed_skus = frozenset(self._missed_skus), set()
            await self._retry_backorders(skus)

    # -- routing ------------------------------------------------------------------------------

    async def _route_order(self, order_id: str, cause: str, state: OrderState | None) -> bool:
        """Route an order that became routable; True if a decision was stored."""
        row = await self.store.read(partial(fetch_routing_order, order_id=order_id))
        if row is not None:
            if row.closed or cause == "order":
                return False  # routed before (a repeated nudge), or canceled
            # Back from hold: what waited for it - backorder, refused lines, shipments.
            await self._retry_backorder(order_id)
            await self._retry_rejections(order_id)
            await self.fulfilments.ask(lambda reply: SettleOrder(order_id, reply))
            return False
        state = state if state is not None else await self._load(order_id)
        if state is None or state.status not in ROUTABLE:
            return False
        lines = merge_lines(
            StockLine(ordered.sku, counters.open)
            for ordered, counters in zip(state.order.lines, state.lines, strict=True)
        )
        if not lines:
            return False
        job = _Job(
            state=state,
            lines=lines,
            cause="order",
            excluded={},
            version=0,
            planned=0,
            backorder=(),
        )
        return await self._route(job)

    async def _route(self, job: _Job, *, from_backorder: bool = False) -> bool:
        """Decide, reserve, create, record - and again for refused lines; see the docstring."""
        stored = False
        for attempt in range(1, self._max_attempts + 1):
            decision = await self._decide(job)
            if decision is None:
                return stored
            if from_backorder and attempt == 1 and not decision.allocations:
                return False  # still nothing to allocate: not worth another record
            planned = self._plan(job, decision)
            routed = OrderRouted(
                at=self._now(),
                order_id=job.state.order_id,
                cause=job.cause,
                lines=job.lines,
                decision=decision,
                fulfilments=planned,
                excluded=tuple(sorted({loc for locs in job.excluded.values() for loc in locs})),
            )
            backorder = _from_routed(decision.backorders)
            stored = True
            self._decisions += 1
            self.metrics.decisions.labels(decision.fill).inc()
            if not planned:
                applied = self._applied(job, job.version + 1, (), (), (*job.backorder, *backorder))
                await self._append(job, [routed, applied])
                log.info(
                    "order_backordered",
                    order_id=job.state.order_id,
                    cause=job.cause,
                    units=sum(line.quantity for line in applied.backorder),
                )
                return True
            await self._append(job, [routed])
            created, refused = await self._apply(job.state, planned, job.version)
            refused_lines = merge_lines(
                line for plan in planned if plan.fulfilment_id in refused for line in plan.lines
            )
            last = attempt == self._max_attempts
            waiting = (*job.backorder, *backorder, *(refused_lines if last else ()))
            applied = self._applied(job, job.version, created, refused, waiting)
            await self._append(job, [applied])
            log.info(
                "order_routed",
                order_id=job.state.order_id,
                cause=job.cause,
                fill=decision.fill,
                fulfilments=len(created),
                refused=len(refused),
                backordered=sum(line.quantity for line in applied.backorder),
            )
            if not refused_lines or last:
                return True
            self.metrics.refusals.inc(len(refused))
            job.lines, job.cause, job.backorder = (
                refused_lines,
                "reserve_refused",
                applied.backorder,
            )
        return stored

    async def _decide(self, job: _Job) -> RoutingDecision | None:
        state = job.state
        skus = tuple(line.sku for line in job.lines)
        availability: dict[str, dict[str, int]] = await self.inventory.ask(
            lambda reply: GetAvailability(skus, reply)
        )
        for sku, locations in job.excluded.items():
            for location in locations:
                availability.get(sku, {}).pop(location, None)
        shipping = state.order.shipping
        address = state.order.shipping_address
        pickup = shipping.pickup_location if shipping.method == "pickup" else None
        request = RoutingRequest(
            order_id=state.order_id,
            channel=state.channel,
            lines=tuple(RoutedLine(line.sku, line.quantity) for line in job.lines),
            destination=None if pickup else Destination(address.country, address.zip),
            pickup_store=pickup,
        )
        await self._count_today()
        started = time.perf_counter()
        try:
            decision = route_order(
                request, self._network, availability, self._orders_today, self._policy
            )
        except ValueError as exc:  # not routable as it stands (e.g. a pickup without a store)
            log.error("order_not_routable", order_id=state.order_id, error=str(exc))  # noqa: TRY400  # the message is the whole story
            return None
        finally:
            self.metrics.decision_seconds.observe(time.perf_counter() - started)
        return decision

    def _plan(self, job: _Job, decision: RoutingDecision) -> tuple[PlannedFulfilment, ...]:
        """Name the fulfilments of a decision: `<order id>-<n>`, n counting up per order.

        A pickup order's transfers deliver into one pickup fulfilment at the store: the
        store's own allocation if it has one, else one planned just for the handover.
        """
        order_id = job.state.order_id

        def next_id() -> str:
            job.planned += 1
            return f"{order_id}-{job.planned}"

        planned: list[PlannedFulfilment] = []
        pickup_id: str | None = None
        store: str | None = None
        for allocation in decision.allocations:
            if allocation.kind == "pickup":
                pickup_id, store = next_id(), allocation.location
                planned.append(
                    PlannedFulfilment(
                        fulfilment_id=pickup_id,
                        location=allocation.location,
                        kind="pickup",
                        lines=_to_stock(allocation.lines),
                    )
                )
        transfers = [a for a in decision.allocations if a.kind == "transfer"]
        if transfers and pickup_id is None:
            pickup_id, store = next_id(), transfers[0].deliver_to
            assert store is not None  # the router sets deliver_to on every transfer
            planned.append(
                PlannedFulfilment(
                    fulfilment_id=pickup_id, location=store, kind="pickup", lines=(), reserve=False
                )
            )
        for allocation in decision.allocations:
            if allocation.kind == "pickup":
                continue
            planned.append(
                PlannedFulfilment(
                    fulfilment_id=next_id(),
                    location=allocation.location,
                    kind=allocation.kind,
                    lines=_to_stock(allocation.lines),
                    carrier=allocation.carrier,
                    deliver_to=allocation.deliver_to,
                    pickup_fulfilment=pickup_id if allocation.kind == "transfer" else None,
                )
            )
        return tuple(planned)

    async def _apply(
        self, state: OrderState, planned: Sequence[PlannedFulfilment], routed_version: int
    ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """Reserve what a decision allocates and create its fulfilments: (created, refused)."""
        held: set[str] = set()
        refused: list[str] = []
        for plan in planned:
            if not plan.reserve:
                continue
            answer: StockReserved | StockRefused = await self.inventory.ask(partial(_reserve, plan))
            if isinstance(answer, StockReserved) or answer.reason == "duplicate_reservation":
                held.add(plan.fulfilment_id)
            else:
                refused.append(plan.fulfilment_id)
                log.info(
                    "reservation_refused",
                    order_id=state.order_id,
                    fulfilment_id=plan.fulfilment_id,
                    location=plan.location,
                    reason=answer.reason,
                )
        items: list[NewFulfilment] = []
        for plan in planned:
            if plan.kind == "pickup":
                own = plan.fulfilment_id in held
                transfers = [
                    p
                    for p in planned
                    if p.pickup_fulfilment == plan.fulfilment_id and p.fulfilment_id in held
                ]
                lines = merge_lines(
                    [*(plan.lines if own else ()), *(line for t in transfers for line in t.lines)]
                )
                if lines:
                    items.append(
                        NewFulfilment(
                            fulfilment_id=plan.fulfilment_id,
                            location=plan.location,
                            kind="pickup",
                            lines=lines,
                            reserved_lines=plan.lines if own else (),
                            awaiting=tuple(t.fulfilment_id for t in transfers),
                        )
                    )
            elif plan.fulfilment_id in held:
                # A held transfer's pickup is always created: it carries the transfer's lines.
                items.append(
                    NewFulfilment(
                        fulfilment_id=plan.fulfilment_id,
                        location=plan.location,
                        kind=plan.kind,
                        lines=plan.lines,
                        reserved_lines=plan.lines,
                        carrier=plan.carrier,
                        deliver_to=plan.deliver_to,
                        pickup_fulfilment=plan.pickup_fulfilment,
                    )
                )
        created: tuple[str, ...] = ()
        if items:
            created = await self.fulfilments.ask(
                lambda reply: CreateFulfilments(
                    state.order_id, state.order, routed_version, tuple(items), reply
                )
            )
            await self._count_today()
            for item in items:
                self._orders_today[item.location] = self._orders_today.get(item.location, 0) + 1
        return created, tuple(refused)

    def _applied(
        self,
        job: _Job,
        routed_version: int,
        created: tuple[str, ...],
        refused: tuple[str, ...],
        backorder: Iterable[StockLine],
    ) -> RoutingApplied:
        return RoutingApplied(
            at=self._now(),
            order_id=job.state.order_id,
            routed_version=routed_version,
            created=created,
            refused=refused,
            backorder=merge_lines(backorder),
        )

    async def _append(self, job: _Job, events: Sequence[RoutingEvent]) -> None:
        await self.store.append(
            routing_stream(job.state.order_id),
            [NewEvent(type(event).__name__, _encoder.encode(event)) for event in events],
            expected_version=job.version,
        )
        job.version += len(events)

    # -- what waits: backorders, refused lines, interrupted decisions ---------------------------

    async def _retry_backorders(self, skus: frozenset[str] | None) -> None:
        """Re-route backorders holding any of `skus` (None: all), oldest first.

        SKUs found with no ATP anywhere are remembered for the pass, so a restock of one SKU
        does not send a thousand orders waiting for another through the router.
        """
        dry: set[str] = set()
        after = 0
        while page := await self.store.read(
            partial(backordered_orders, skus=skus, after_seq=after, limit=_PAGE)
        ):
            for position, order_id in page:
                after = position
                await self._retry_backorder(order_id, dry)

    async def _retry_backorder(self, order_id: str, dry: set[str] | None = None) -> None:
        row = await self.store.read(partial(fetch_routing_order, order_id=order_id))
        if row is None or row.closed or not row.backorder:
            return
        if dry is not None and all(line.sku in dry for line in row.backorder):
            return
        state = await self._load(order_id)
        if state is None or state.status not in ROUTABLE:
            return  # held (retried on release) or canceled (closed by its own nudge)
        skus = tuple(line.sku for line in row.backorder)
        available: dict[str, dict[str, int]] = await self.inventory.ask(
            lambda reply: GetAvailability(skus, reply)
        )
        if dry is not None:
            dry.update(sku for sku in skus if not available.get(sku))
        if not any(available.get(sku) for sku in skus):
            return
        self._backorder_retries += 1
        job = _job_for(state, row, row.backorder, cause="backorder", backorder=())
        await self._route(job, from_backorder=True)

    async def _retry_rejections(self, order_id: str | None) -> None:
        """Route refused lines again, away from the location that refused them."""
        for rejection in await self.store.read(
            partial(pending_rejections, order_id=order_id, limit=_PAGE)
        ):
            row = await self.store.read(partial(fetch_routing_order, order_id=rejection.order_id))
            state = await self._load(rejection.order_id)
            if row is None or row.closed or state is None or state.status not in ROUTABLE:
                continue  # held: retried on release; canceled: closed with the order
            job = _job_for(
                state,
                row,
                rejection.lines,
                cause=f"rejection:{rejection.cause}",
                backorder=row.backorder,
            )
            job.excluded = {line.sku: frozenset({rejection.location}) for line in rejection.lines}
            await self._route(job)

    async def _finish_unapplied(self) -> None:
        """Decisions stored before a crash whose outcome was not: reserve (again) and record.

        Lines refused now are backordered rather than decided again: this runs once at start,
        and the next restock routes them anyway.
        """
        for record in await self.store.read(unapplied_routings):
            order_id = record.decision.order_id
            row = await self.store.read(partial(fetch_routing_order, order_id=order_id))
            state = await self._load(order_id)
            if row is None or state is None:
                continue
            await self._finish(record, row, state)

    async def _finish(self, record: RoutingRecord, row: RoutingOrder, state: OrderState) -> None:
        base = () if record.cause == "backorder" else row.backorder
        job = _job_for(state, row, record.lines, cause=record.cause, backorder=base)
        created, refused = await self._apply(state, record.fulfilments, record.version)
        refused_lines = [
            line for p in record.fulfilments if p.fulfilment_id in refused for line in p.lines
        ]
        waiting = (*base, *_from_routed(record.decision.backorders), *refused_lines)
        await self._append(job, [self._applied(job, record.version, created, refused, waiting)])
        log.info("routing_finished_after_restart", order_id=state.order_id, version=record.version)

    # -- cancellation -------------------------------------------------------------------------

    async def _close(self, order_id: str, reason: str) -> None:
        await self.fulfilments.ask(lambda reply: CancelFulfilments(order_id, reason, reply))
        row = await self.store.read(partial(fetch_routing_order, order_id=order_id))
        if row is None or row.closed:
            return
        closed = RoutingClosed(
            at=self._now(), order_id=order_id, reason=reason, dropped=row.backorder
        )
        await self.store.append(
            routing_stream(order_id),
            [NewEvent(type(closed).__name__, _encoder.encode(closed))],
            expected_version=row.version,
        )
        log.info("routing_closed", order_id=order_id, reason=reason)

    # -- state --------------------------------------------------------------------------------

    async def _load(self, order_id: str) -> OrderState | None:
        blob = await self.store.read(partial(fetch_state, order_id=order_id))
        return None if blob is None else decode_state(blob)

    async def _count_today(self, *, force: bool = False) -> None:
        """Today's fulfilments per location; read back when the UTC day changes."""
        today = self._now().date()
        if today == self._day and not force:
            return
        counts = await self.store.read(partial(orders_today, day=today.isoformat()))
        self._day, self._orders_today = today, counts


_encoder = msgspec.json.Encoder()


def _reserve(plan: PlannedFulfilment, reply: Reply[StockReserved | StockRefused]) -> ReserveStock:
    return ReserveStock(plan.fulfilment_id, plan.location, plan.lines, reply)


def _to_stock(lines: Iterable[RoutedLine]) -> tuple[StockLine, ...]:
    return tuple(StockLine(line.sku, line.quantity) for line in lines)


def _from_routed(lines: Iterable[RoutedLine]) -> tuple[StockLine, ...]:
    return _to_stock(lines)


def _job_for(
    state: OrderState,
    row: RoutingOrder,
    lines: tuple[StockLine, ...],
    *,
    cause: str,
    backorder: tuple[StockLine, ...],
) -> _Job:
    return _Job(
        state=state,
        lines=lines,
        cause=cause,
        excluded={},
        version=row.version,
        planned=row.fulfilments_planned,
        backorder=backorder,
    )

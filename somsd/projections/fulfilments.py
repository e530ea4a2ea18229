"""Routing and fulfilment: their events, the fulfilment's life, and the tables that answer queries.

Two kinds of streams live here, each with exactly one writer:

- `routing-<order_id>` (written by the router): every routing decision for the order with all
  candidates, scores and rejection reasons (`OrderRouted`), what applying it achieved
  (`RoutingApplied`: which reservations held, which were refused, what is backordered now), and
  `RoutingClosed` when the order was canceled. Decisions are kept here and not in the order
  stream because the order desk is that stream's only writer, because a decision with one
  assessment per location is kilobytes that the order's state row would otherwise rewrite on
  every later event, and because `GET /v1/orders/{id}` has to merge in the fulfilments, which
  live in their own streams anyway; `read_order_detail` does both in one read snapshot.
- `fulfilment-<id>` (written by the fulfilment desk): one allocation's way through a location,
  `requested -> accepted -> picked -> packed -> shipped -> delivered` for kinds ship and transfer,
  `... -> ready_for_pickup -> picked_up` for pickup; `rejected` when every line was refused,
  `canceled` when the order was.

The fulfilment's life is pure (`decide_step`, `decide_rejection`, `apply_fulfilment`: values in,
events or errors out, no clock, no I/O) and would sit in `somsd/domain/` next to `routing.py`;
it is here only because this change could not add a domain module. Moving it is mechanical.

Tables are durable work queues as much as query tables: the router rebuilds its work after a
restart from them (orders never routed, decisions never applied, rejected lines not routed
again, backorders per SKU oldest first), so the hooks that feed it in normal operation may drop
a nudge without losing work.

Every event follows msgspec's schema-evolution rules (a later field needs a default, no type
ever changes, unknown fields are ignored), like the order events.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from somsd.domain.atp import RejectionReason, StockLine
from somsd.domain.errors import Conflict, DomainError, InvalidCommand
from somsd.domain.routing import RoutingDecision
from somsd.domain.state import OrderState
from somsd.projections._blob import pack, unpack
from somsd.projections.orders import decode_state, fetch_state
from somsd.store import Connection, StoredEvent

__all__ = [
    "FINAL_STATES",
    "FULFILMENT_STREAM_PREFIX",
    "OPEN_STATES",
    "ROUTING_STREAM_PREFIX",
    "STEP_TARGETS",
    "FulfilmentBook",
    "FulfilmentCanceled",
    "FulfilmentEvent",
    "FulfilmentKind",
    "FulfilmentLinesRejected",
    "FulfilmentNotFound",
    "FulfilmentPage",
    "FulfilmentPickedUp",
    "FulfilmentProgressed",
    "FulfilmentReady",
    "FulfilmentRequested",
    "FulfilmentSettled",
    "FulfilmentShipped",
    "FulfilmentState",
    "FulfilmentStatus",
    "FulfilmentView",
    "OrderDetail",
    "OrderFulfilment",
    "OrderRouted",
    "PendingRejection",
    "PlannedFulfilment",
    "RejectedLine",
    "RoutingApplied",
    "RoutingClosed",
    "RoutingEvent",
    "RoutingOrder",
    "RoutingRecord",
    "Step",
    "StepRefused",
    "TransferDispatched",
    "TransferLinesWithdrawn",
    "WrongPickupCode",
    "allowed_steps",
    "apply_fulfilment",
    "backordered_orders",
    "decide_rejection",
    "decide_step",
    "decode_fulfilment_event",
    "decode_routing_event",
    "fetch_fulfilment",
    "fetch_routing_order",
    "fulfilment_stream",
    "fulfilments_of_order",
    "list_fulfilments",
    "merge_lines",
    "orders_to_close",
    "orders_today",
    "pending_rejections",
    "read_order_detail",
    "routing_stream",
    "subtract_lines",
    "unapplied_routings",
    "unrouted_orders",
    "unsettled_fulfilments",
]

ROUTING_STREAM_PREFIX: Final = "routing-"
FULFILMENT_STREAM_PREFIX: Final = "fulfilment-"

FulfilmentKind = Literal["ship", "pickup", "transfer"]
FulfilmentStatus = Literal[
    "requested",
    "accepted",
    "picked",
    "packed",
    "shipped",
    "delivered",
    "ready_for_pickup",
    "picked_up",
    "rejected",
    "canceled",
]
Step = Literal["accept", "pick", "pack", "ship", "deliver", "ready", "picked-up"]

# Where the location still has work to do: what the pick list shows by default.
OPEN_STATES: Final[frozenset[str]] = frozenset(
    {"requested", "accepted", "picked", "packed", "ready_for_pickup"}
)
# The same split as `adapters/storesim/wire.FINAL_STATES`: nothing left for the location to do
# (a shipped parcel may still be reported delivered, but nobody at the location acts on it).
FINAL_STATES: Final[frozenset[str]] = frozenset(
    {"shipped", "delivered", "picked_up", "rejected", "canceled"}
)
STEP_TARGETS: Final[dict[Step, FulfilmentStatus]] = {
    "accept": "accepted",
    "pick": "picked",
    "pack": "packed",
    "ship": "shipped",
    "deliver": "delivered",
    "ready": "ready_for_pickup",
    "picked-up": "picked_up",
}
_PATHS: Final[dict[FulfilmentKind, tuple[FulfilmentStatus, ...]]] = {
    "ship": ("requested", "accepted", "picked", "packed", "shipped", "delivered"),
    "transfer": ("requested", "accepted", "picked", "packed", "shipped", "delivered"),
    "pickup": ("requested", "accepted", "picked", "packed", "ready_for_pickup", "picked_up"),
}
ProgressState = Literal["accepted", "picked", "packed", "delivered"]
_PROGRESS: Final[dict[str, ProgressState]] = {
    "accept": "accepted",
    "pick": "picked",
    "pack": "packed",
    "deliver": "delivered",
}
# Lines can be refused while they are still at the location and nobody has them yet.
_REJECTABLE: Final = frozenset({"requested", "accepted", "picked", "packed"})


def routing_stream(order_id: str) -> str:
    return ROUTING_STREAM_PREFIX + order_id


def fulfilment_stream(fulfilment_id: str) -> str:
    return FULFILMENT_STREAM_PREFIX + fulfilment_id


# --------------------------------------------------------------------------------------------
# Lines


def merge_lines(lines: Iterable[StockLine]) -> tuple[StockLine, ...]:
    """One line per SKU (quantities summed, zero lines dropped), in first-seen order."""
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    return tuple(StockLine(sku, quantity) for sku, quantity in merged.items() if quantity > 0)


def subtract_lines(lines: Iterable[StockLine], taken: Iterable[StockLine]) -> tuple[StockLine, ...]:
    """`lines` minus `taken` per SKU, never below zero."""
    remaining = {line.sku: line.quantity for line in merge_lines(lines)}
    for line in taken:
        if line.sku in remaining:
            remaining[line.sku] = max(remaining[line.sku] - line.quantity, 0)
    return tuple(StockLine(sku, quantity) for sku, quantity in remaining.items() if quantity > 0)


# --------------------------------------------------------------------------------------------
# Routing events (stream routing-<order_id>, written by the router)


class PlannedFulfilment(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A fulfilment a decision intends to create, named before its reservation is asked for.

    The reservation id is the fulfilment id, so a router that crashed between deciding and
    reserving can ask again and learn from `duplicate_reservation` that it already holds it.
    `reserve` is False only for the pickup fulfilment that exists just to hand over transfers.
    """

    fulfilment_id: str
    location: str
    kind: FulfilmentKind
    lines: tuple[StockLine, ...]
    reserve: bool = True
    carrier: str | None = None
    deliver_to: str | None = None  # transfer: the pickup store
    pickup_fulfilment: str | None = None  # transfer: the store's pickup fulfilment


class RoutingEventBase(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    at: datetime

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise ValueError(f"{type(self).__name__}.at must be timezone-aware, got {self.at}")


class OrderRouted(RoutingEventBase, frozen=True, kw_only=True):
    """A routing decision, written before any of its reservations is asked for.

    `cause`: "order" (first routing), "backorder" (stock arrived), "rejection:<cause>" (lines a
    location refused), "hold_released", or "reserve_refused" (the previous decision's
    reservation was refused because ATP changed meanwhile). `excluded` names locations kept out
    of this decision (the one that just refused the lines).
    """

    order_id: str
    cause: str
    lines: tuple[StockLine, ...]
    decision: RoutingDecision
    fulfilments: tuple[PlannedFulfilment, ...]
    excluded: tuple[str, ...] = ()


class RoutingApplied(RoutingEventBase, frozen=True, kw_only=True):
    """What applying decision `routed_version` achieved, and the order's backorder after it.

    `backorder` is absolute (every SKU still waiting for stock), so replaying needs no
    arithmetic and a lost intermediate state can not skew it.
    """

    order_id: str
    routed_version: int
    created: tuple[str, ...]  # fulfilments that exist now
    refused: tuple[str, ...]  # planned fulfilments whose reservation was refused
    backorder: tuple[StockLine, ...]


class RoutingClosed(RoutingEventBase, frozen=True, kw_only=True):
    """The order will not be routed again (canceled); its backorder is dropped."""

    order_id: str
    reason: str
    dropped: tuple[StockLine, ...] = ()


RoutingEvent = OrderRouted | RoutingApplied | RoutingClosed


# --------------------------------------------------------------------------------------------
# Fulfilment events (stream fulfilment-<id>, written by the fulfilment desk)


class FulfilmentEventBase(msgspec.Struct, frozen=True, tag=True, kw_only=True):
    at: datetime
    actor: str  # "fulfilments", "location/<name>" or "user:<login>"

    def __post_init__(self) -> None:
        if self.at.utcoffset() is None:
            raise ValueError(f"{type(self).__name__}.at must be timezone-aware, got {self.at}")


class FulfilmentRequested(FulfilmentEventBase, frozen=True, kw_only=True):
    """The first event: lines of one order for one location.

    `reserved_lines` are the units held by the reservation whose id is this fulfilment's id: all
    lines for ship and transfer, the store's own part for pickup (transferred units are reserved
    at their source, by the transfer). `awaiting` lists the transfers a pickup waits for.
    """

    fulfilment_id: str
    order_id: str
    order_number: str
    location: str
    kind: FulfilmentKind
    lines: tuple[StockLine, ...]
    reserved_lines: tuple[StockLine, ...]
    carrier: str | None = None
    deliver_to: str | None = None
    pickup_fulfilment: str | None = None
    awaiting: tuple[str, ...] = ()
    routing_version: int = 0


class FulfilmentProgressed(FulfilmentEventBase, frozen=True, kw_only=True):
    """A step that carries no data of its own."""

    state: ProgressState


class FulfilmentShipped(FulfilmentEventBase, frozen=True, kw_only=True):
    carrier: str = ""
    tracking_number: str = ""


class FulfilmentReady(FulfilmentEventBase, frozen=True, kw_only=True):
    """The pickup waits at the counter; the customer shows `pickup_code` to collect it.

    The code is stored as it is, not hashed: six digits are 10^6 possibilities, which any
    unkeyed hash gives back in well under a second, so a hash would only pretend to protect it,
    while whoever tells the customer (mail, shop) needs the code itself. It is shown in the
    order's detail, never in the store's work list: the counter must ask the customer for it.
    """

    pickup_code: str


class FulfilmentPickedUp(FulfilmentEventBase, frozen=True, kw_only=True):
    pass


class FulfilmentLinesRejected(FulfilmentEventBase, frozen=True, kw_only=True):
    """The location refused units; they are routed again elsewhere.

    `from_reservation` is the part the inventory released (and wrote off when `written_off`);
    the rest of a pickup's refused units came by transfer and were never reserved here.
    """

    lines: tuple[StockLine, ...]
    reason: RejectionReason
    written_off: bool = False
    from_reservation: tuple[StockLine, ...] = ()


class TransferDispatched(FulfilmentEventBase, frozen=True, kw_only=True):
    """On a pickup: transfer `transfer_id` left its source, so nothing holds the pickup back
    once every transfer it awaits has."""

    transfer_id: str


class TransferLinesWithdrawn(FulfilmentEventBase, frozen=True, kw_only=True):
    """On a pickup: units transfer `transfer_id` will not bring (its source refused them)."""

    transfer_id: str
    lines: tuple[StockLine, ...]
    transfer_closed: bool = False  # the transfer has nothing left: stop waiting for it


class FulfilmentCanceled(FulfilmentEventBase, frozen=True, kw_only=True):
    reason: str


class FulfilmentSettled(FulfilmentEventBase, frozen=True, kw_only=True):
    """The effects of shipping or handing over are done: the reservation consumed and, for
    what reached the customer, the order told. `note` says why an effect was skipped."""

    note: str = ""


FulfilmentEvent = (
    FulfilmentRequested
    | FulfilmentProgressed
    | FulfilmentShipped
    | FulfilmentReady
    | FulfilmentPickedUp
    | FulfilmentLinesRejected
    | TransferDispatched
    | TransferLinesWithdrawn
    | FulfilmentCanceled
    | FulfilmentSettled
)

_routing_decoder: msgspec.json.Decoder[RoutingEvent] = msgspec.json.Decoder(RoutingEvent)
_fulfilment_decoder: msgspec.json.Decoder[FulfilmentEvent] = msgspec.json.Decoder(FulfilmentEvent)


def decode_routing_event(payload: bytes) -> RoutingEvent:
    return _routing_decoder.decode(payload)


def decode_fulfilment_event(payload: bytes) -> FulfilmentEvent:
    return _fulfilment_decoder.decode(payload)


# --------------------------------------------------------------------------------------------
# The fulfilment's state and decisions (pure)


class RejectedLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int
    reason: RejectionReason


class HistoryEntry(msgspec.Struct, frozen=True):
    state: str
    at: datetime
    actor: str


class FulfilmentState(msgspec.Struct, frozen=True, kw_only=True):
    """What a fulfilment's stream adds up to. `lines` are the units still to hand over."""

    fulfilment_id: str
    order_id: str
    order_number: str
    location: str
    kind: FulfilmentKind
    state: FulfilmentStatus
    lines: tuple[StockLine, ...]
    reserved_lines: tuple[StockLine, ...]
    version: int
    created_at: datetime
    updated_at: datetime
    carrier: str | None = None
    tracking_number: str | None = None
    deliver_to: str | None = None
    pickup_fulfilment: str | None = None
    awaiting: tuple[str, ...] = ()
    pickup_code: str | None = None
    rejected: tuple[RejectedLine, ...] = ()
    settled: bool = False
    routing_version: int = 0
    history: tuple[HistoryEntry, ...] = ()

    @property
    def needs_settlement(self) -> bool:
        """Shipped or handed over, but stock and order not yet told."""
        return not self.settled and self.state in ("shipped", "delivered", "picked_up")


class FulfilmentNotFound(DomainError):
    code = "fulfillment_not_found"


class StepRefused(Conflict):
    """The step does not fit the fulfilment's state; `allowed` lists what does."""

    code = "illegal_step"

    def __init__(self, state: FulfilmentState, step: str, allowed: Sequence[str]) -> None:
        self.allowed = tuple(allowed)
        choices = ", ".join(allowed) if allowed else "none"
        super().__init__(
            f"cannot {step} fulfilment {state.fulfilment_id} ({state.kind}) in state "
            f'"{state.state}"; allowed: {choices}'
        )


class WrongPickupCode(Conflict):
    code = "wrong_pickup_code"


def allowed_steps(state: FulfilmentState) -> tuple[str, ...]:
    """The steps (and "reject") the fulfilment accepts now, in path order."""
    path = _PATHS[state.kind]
    if state.state not in path:
        return ()
    rank = path.index(state.state)
    steps: list[str] = []
    for step, target in STEP_TARGETS.items():
        if target not in path or path.index(target) <= rank:
            continue
        if step == "picked-up" and state.state != "ready_for_pickup":
            continue
        if step == "deliver" and state.state != "shipped":
            continue
        if step == "ready" and state.awaiting:
            continue
        steps.append(step)
    if state.state in _REJECTABLE:
        steps.append("reject")
    return tuple(steps)


def decide_step(
    state: FulfilmentState,
    step: Step,
    *,
    now: datetime,
    actor: str,
    lenient: bool = False,
    carrier: str = "",
    tracking_number: str = "",
    pickup_code: str | None = None,
    new_pickup_code: str = "",
) -> list[FulfilmentEvent]:
    """The events of one step, or a `StepRefused`/`WrongPickupCode`.

    Steps may skip ahead along the kind's path (a store that picks without accepting first, a
    3PL whose "shipped" is the first status we hear), but never go back. `lenient` is for
    location systems: a status we already have or have passed (a redelivered or late callback)
    is no change rather than an error, and a handover needs no code (their counter checked it).
    `new_pickup_code` is the code a "ready" step hands out, chosen by the caller.
    """
    target = STEP_TARGETS[step]
    path = _PATHS[state.kind]
    if state.state not in path or target not in path:
        if lenient and state.state in ("rejected", "canceled"):
            return []
        raise StepRefused(state, step, allowed_steps(state))
    rank, target_rank = path.index(state.state), path.index(target)
    if target_rank <= rank:
        if lenient:
            return []
        raise StepRefused(state, step, allowed_steps(state))
    if step == "ready" and state.awaiting and not lenient:
        # A location system saying "ready" has the goods, whatever we recorded of the transfer.
        waiting = ", ".join(state.awaiting)
        raise Conflict(
            f"fulfilment {state.fulfilment_id} waits for transfer(s) {waiting}; mark it ready "
            "once they have been shipped to the store",
            code="awaiting_transfer",
        )
    if step == "picked-up" and state.state != "ready_for_pickup":
        if not lenient:
            raise StepRefused(state, step, allowed_steps(state))
    elif step == "deliver" and state.state != "shipped" and not lenient:
        raise StepRefused(state, step, allowed_steps(state))
    if step == "picked-up" and not lenient and not _code_matches(state.pickup_code, pickup_code):
        raise WrongPickupCode(
            f"the pickup code does not match fulfilment {state.fulfilment_id}; ask the "
            "customer for the code from their notification"
        )
    events: list[FulfilmentEvent] = []
    if step == "deliver" and state.state != "shipped":
        # A carrier's "delivered" is the first we hear: it was shipped, too.
        events.append(FulfilmentShipped(at=now, actor=actor, carrier=carrier))
    match step:
        case "accept" | "pick" | "pack" | "deliver":
            events.append(FulfilmentProgressed(at=now, actor=actor, state=_PROGRESS[step]))
        case "ship":
            events.append(
                FulfilmentShipped(
                    at=now, actor=actor, carrier=carrier, tracking_number=tracking_number
                )
            )
        case "ready":
            events.append(FulfilmentReady(at=now, actor=actor, pickup_code=new_pickup_code))
        case "picked-up":
            events.append(FulfilmentPickedUp(at=now, actor=actor))
    return events


def _code_matches(expected: str | None, given: str | None) -> bool:
    # Constant-time: how long a wrong guess takes must not tell how much of it was right.
    if expected is None or given is None:
        return False
    return hmac.compare_digest(expected.strip().encode(), given.strip().encode())


class Rejection(msgspec.Struct, frozen=True):
    """What refusing `lines` means: the reserved part to release at the inventory, the rest."""

    lines: tuple[StockLine, ...]
    from_reservation: tuple[StockLine, ...]


def decide_rejection(state: FulfilmentState, lines: Sequence[StockLine]) -> Rejection:
    """Check refused lines against what the fulfilment still holds; split off the reserved part.

    Raises `StepRefused` when the fulfilment is past the point of refusing, `InvalidCommand`
    for lines it does not hold.
    """
    if state.state not in _REJECTABLE:
        raise StepRefused(state, "reject", allowed_steps(state))
    if not lines or any(line.quantity <= 0 for line in lines):
        raise InvalidCommand(
            "reject needs at least one line with a positive quantity", path="$.lines"
        )
    wanted = merge_lines(lines)
    holding = {line.sku: line.quantity for line in state.lines}
    for index, line in enumerate(wanted):
        if line.quantity > holding.get(line.sku, 0):
            raise InvalidCommand(
                f"fulfilment {state.fulfilment_id} holds {holding.get(line.sku, 0)} x "
                f"{line.sku!r}, cannot reject {line.quantity}",
                code="invalid_lines",
                path=f"$.lines[{index}]",
            )
    reserved = {line.sku: line.quantity for line in state.reserved_lines}
    from_reservation = merge_lines(
        StockLine(line.sku, min(line.quantity, reserved.get(line.sku, 0))) for line in wanted
    )
    return Rejection(wanted, from_reservation)


def apply_fulfilment(state: FulfilmentState | None, event: FulfilmentEvent) -> FulfilmentState:
    """The state after `event`; `state` is None only before `FulfilmentRequested`."""
    if isinstance(event, FulfilmentRequested):
        return FulfilmentState(
            fulfilment_id=event.fulfilment_id,
            order_id=event.order_id,
            order_number=event.order_number,
            location=event.location,
            kind=event.kind,
            state="requested",
            lines=merge_lines(event.lines),
            reserved_lines=merge_lines(event.reserved_lines),
            version=1,
            created_at=event.at,
            updated_at=event.at,
            carrier=event.carrier,
            deliver_to=event.deliver_to,
            pickup_fulfilment=event.pickup_fulfilment,
            awaiting=event.awaiting,
            routing_version=event.routing_version,
            history=(HistoryEntry("requested", event.at, event.actor),),
        )
    if state is None:
        raise ValueError(f"{type(event).__name__} before FulfilmentRequested")
    state = msgspec.structs.replace(state, version=state.version + 1, updated_at=event.at)
    match event:
        case FulfilmentProgressed():
            return _enter(state, event, event.state)
        case FulfilmentShipped():
            state = _enter(state, event, "shipped")
            return msgspec.structs.replace(
                state,
                carrier=event.carrier or state.carrier,
                tracking_number=event.tracking_number or state.tracking_number,
            )
        case FulfilmentReady():
            state = _enter(state, event, "ready_for_pickup")
            return msgspec.structs.replace(state, pickup_code=event.pickup_code)
        case FulfilmentPickedUp():
            return _enter(state, event, "picked_up")
        case FulfilmentLinesRejected():
            lines = subtract_lines(state.lines, event.lines)
            state = msgspec.structs.replace(
                state,
                lines=lines,
                reserved_lines=subtract_lines(state.reserved_lines, event.from_reservation),
                rejected=(
                    *state.rejected,
                    *(RejectedLine(line.sku, line.quantity, event.reason) for line in event.lines),
                ),
            )
            return state if lines else _enter(state, event, "rejected")
        case TransferDispatched():
            awaiting = tuple(t for t in state.awaiting if t != event.transfer_id)
            return msgspec.structs.replace(state, awaiting=awaiting)
        case TransferLinesWithdrawn():
            lines = subtract_lines(state.lines, event.lines)
            awaiting = state.awaiting
            if event.transfer_closed:
                awaiting = tuple(t for t in awaiting if t != event.transfer_id)
            state = msgspec.structs.replace(state, lines=lines, awaiting=awaiting)
            return state if lines else _enter(state, event, "canceled")
        case FulfilmentCanceled():
            return _enter(state, event, "canceled")
        case FulfilmentSettled():
            return msgspec.structs.replace(state, settled=True)
        case FulfilmentRequested():  # pragma: no cover - handled above; keeps match exhaustive
            raise AssertionError("unreachable")


def _enter(
    state: FulfilmentState, event: FulfilmentEventBase, status: FulfilmentStatus
) -> FulfilmentState:
    entry = HistoryEntry(status, event.at, event.actor)
    return msgspec.structs.replace(state, state=status, history=(*state.history, entry))


# --------------------------------------------------------------------------------------------
# Views


class FulfilmentView(msgspec.Struct, frozen=True, kw_only=True):
    """One fulfilment as the API shows it; a superset of `adapters/storesim/wire.WorkItem`.

    Lines are sorted by SKU (a pick list is walked by bin, then SKU; there is no bin data yet).
    `pickup_code` is only filled in the order's detail, never on the store's work list.
    """

    id: str
    state: FulfilmentStatus
    kind: FulfilmentKind
    lines: tuple[StockLine, ...]
    order_id: str
    order_number: str
    location: str
    steps: tuple[str, ...]
    carrier: str | None = None
    tracking_number: str | None = None
    deliver_to: str | None = None
    pickup_fulfilment: str | None = None
    awaiting: tuple[str, ...] = ()
    rejected: tuple[RejectedLine, ...] = ()
    settled: bool = False
    created_at: datetime
    updated_at: datetime
    history: tuple[HistoryEntry, ...] = ()
    pickup_code: str | None = None

    @classmethod
    def of(cls, state: FulfilmentState, *, with_code: bool = False) -> FulfilmentView:
        return cls(
            id=state.fulfilment_id,
            state=state.state,
            kind=state.kind,
            lines=tuple(sorted(state.lines, key=lambda line: line.sku)),
            order_id=state.order_id,
            order_number=state.order_number,
            location=state.location,
            steps=allowed_steps(state),
            carrier=state.carrier,
            tracking_number=state.tracking_number,
            deliver_to=state.deliver_to,
            pickup_fulfilment=state.pickup_fulfilment,
            awaiting=state.awaiting,
            rejected=state.rejected,
            settled=state.settled,
            created_at=state.created_at,
            updated_at=state.updated_at,
            history=state.history,
            pickup_code=state.pickup_code if with_code else None,
        )


class FulfilmentPage(msgspec.Struct, frozen=True):
    """`GET /v1/fulfillments`: the shape `adapters/storesim/wire.WorkPage` reads."""

    fulfillments: tuple[FulfilmentView, ...]
    next_cursor: int | None  # null: no more


class RoutingRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One stored decision with its outcome (`applied` False while reservations are asked)."""

    version: int
    at: datetime
    cause: str
    lines: tuple[StockLine, ...]
    excluded: tuple[str, ...]
    decision: RoutingDecision
    fulfilments: tuple[PlannedFulfilment, ...]
    applied: bool = False
    created: tuple[str, ...] = ()
    refused: tuple[str, ...] = ()


class OrderFulfilment(msgspec.Struct, frozen=True, kw_only=True):
    """Where an order is fulfilled: every decision, what waits for stock, every fulfilment."""

    routing: tuple[RoutingRecord, ...] = ()
    backorder: tuple[StockLine, ...] = ()
    backordered_since: datetime | None = None
    closed: bool = False
    fulfilments: tuple[FulfilmentView, ...] = ()


class OrderDetail(OrderState, frozen=True, kw_only=True):
    """`GET /v1/orders/{id}`: the order's state plus its routing and fulfilments."""

    fulfilment: OrderFulfilment = msgspec.field(default_factory=OrderFulfilment)


class RoutingOrder(msgspec.Struct, frozen=True):
    """The router's per-order bookkeeping (one row): stream version, ids used, backorder."""

    order_id: str
    version: int
    fulfilments_planned: int
    backorder: tuple[StockLine, ...]
    unapplied: int  # version of an OrderRouted without its RoutingApplied, 0 if none
    closed: bool


class PendingRejection(msgspec.Struct, frozen=True):
    """Refused lines not routed again yet (the router's durable work item)."""

    cause: str
    order_id: str
    fulfilment_id: str
    location: str
    lines: tuple[StockLine, ...]


# --------------------------------------------------------------------------------------------
# The projection

# Deterministic: sets (an order's shipment ids) and dict keys come out sorted, so a replay in
# another process (`somsd db verify`, other hash seed) writes byte-identical rows.
_encoder = msgspec.json.Encoder(order="deterministic")
_state_decoder = msgspec.json.Decoder(FulfilmentState)
_record_decoder = msgspec.json.Decoder(RoutingRecord)
_lines_decoder = msgspec.json.Decoder(tuple[StockLine, ...])


class FulfilmentBook:
    """Projection of every `routing-*` and `fulfilment-*` stream (see the module docstring)."""

    name = "fulfilments"
    # 2: documents deflated and deterministically encoded (rebuilt once at the upgrade).
    version = 2
    tables: Sequence[str] = (
        "fulfilments",
        "fulfilment_rejections",
        "routing_orders",
        "routing_decisions",
        "backorder_skus",
    )
    ddl: Sequence[str] = (
        """CREATE TABLE fulfilments (
            fulfilment_id TEXT PRIMARY KEY,
            order_id TEXT NOT NULL,
            location TEXT NOT NULL,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            first_sku TEXT NOT NULL,       -- pick-list order: by SKU (no bin data yet), then age
            seq INTEGER NOT NULL,          -- FulfilmentRequested's seq
            created_day TEXT NOT NULL,     -- UTC date of creation: daily capacity counts
            version INTEGER NOT NULL,
            unsettled INTEGER NOT NULL,    -- shipped or handed over, effects not yet done
            state_json BLOB NOT NULL
        )""",
        "CREATE INDEX fulfilments_by_location ON fulfilments (location, state, first_sku, seq)",
        "CREATE INDEX fulfilments_by_order ON fulfilments (order_id, seq)",
        "CREATE INDEX fulfilments_by_day ON fulfilments (created_day, location)",
        "CREATE INDEX fulfilments_unsettled ON fulfilments (unsettled) WHERE unsettled = 1",
        """CREATE TABLE fulfilment_rejections (
            cause TEXT PRIMARY KEY,        -- <fulfilment id>#<version of the rejection event>
            order_id TEXT NOT NULL,
            fulfilment_id TEXT NOT NULL,
            location TEXT NOT NULL,
            lines BLOB NOT NULL,
            seq INTEGER NOT NULL,
            handled INTEGER NOT NULL       -- routed again (or the order was closed)
        )""",
        "CREATE INDEX fulfilment_rejections_pending ON fulfilment_rejections (handled, seq)",
        """CREATE TABLE routing_orders (
            order_id TEXT PRIMARY KEY,
            version INTEGER NOT NULL,
            fulfilments_planned INTEGER NOT NULL,
            backorder BLOB NOT NULL,
            backorder_seq INTEGER,         -- seq of the event that started the backorder
            backorder_since TEXT,
            unapplied INTEGER NOT NULL,
            closed INTEGER NOT NULL
        )""",
        "CREATE INDEX routing_orders_unapplied ON routing_orders (unapplied) WHERE unapplied > 0",
        """CREATE TABLE routing_decisions (
            order_id TEXT NOT NULL,
            version INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            cause TEXT NOT NULL,
            fill TEXT NOT NULL,
            record BLOB NOT NULL,
            PRIMARY KEY (order_id, version)
        )""",
        """CREATE TABLE backorder_skus (
            sku TEXT NOT NULL,
            order_id TEXT NOT NULL,
            since_seq INTEGER NOT NULL,
            PRIMARY KEY (sku, order_id)
        )""",
        "CREATE INDEX backorder_skus_oldest ON backorder_skus (sku, since_seq)",
    )

    def apply(self, conn: Connection, event: StoredEvent) -> None:
        if event.stream.startswith(FULFILMENT_STREAM_PREFIX):
            self._apply_fulfilment(conn, event)
        elif event.stream.startswith(ROUTING_STREAM_PREFIX):
            self._apply_routing(conn, event)

    # -- fulfilments ---------------------------------------------------------------------

    def _apply_fulfilment(self, conn: Connection, stored: StoredEvent) -> None:
        event = decode_fulfilment_event(stored.payload)
        fulfilment_id = stored.stream.removeprefix(FULFILMENT_STREAM_PREFIX)
        if isinstance(event, FulfilmentRequested):
            state = apply_fulfilment(None, event)
            conn.execute(
                "INSERT INTO fulfilments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    fulfilment_id,
                    state.order_id,
                    state.location,
                    state.kind,
                    state.state,
                    _first_sku(state),
                    stored.seq,
                    event.at.astimezone(UTC).date().isoformat(),
                    stored.version,
                    0,
                    pack(_encoder.encode(state)),
                ),
            )
            return
        row = conn.execute(
            "SELECT state_json FROM fulfilments WHERE fulfilment_id = ?", (fulfilment_id,)
        ).fetchone()
        if row is None:
            raise ValueError(f"{stored.stream}: {stored.type} before FulfilmentRequested")
        state = apply_fulfilment(_state_decoder.decode(unpack(row[0])), event)
        conn.execute(
            "UPDATE fulfilments SET state = ?, first_sku = ?, version = ?, unsettled = ?, "
            "state_json = ? WHERE fulfilment_id = ?",
            (
                state.state,
                _first_sku(state),
                stored.version,
                int(state.needs_settlement),
                pack(_encoder.encode(state)),
                fulfilment_id,
            ),
        )
        if isinstance(event, FulfilmentLinesRejected):
            conn.execute(
                "INSERT INTO fulfilment_rejections VALUES (?, ?, ?, ?, ?, ?, 0)",
                (
                    f"{fulfilment_id}#{stored.version}",
                    state.order_id,
                    fulfilment_id,
                    state.location,
                    _encoder.encode(event.lines),
                    stored.seq,
                ),
            )

    # -- routing -------------------------------------------------------------------------

    def _apply_routing(self, conn: Connection, stored: StoredEvent) -> None:
        event = decode_routing_event(stored.payload)
        order_id = event.order_id
        row = conn.execute(
            "SELECT fulfilments_planned, backorder, backorder_seq FROM routing_orders "
            "WHERE order_id = ?",
            (order_id,),
        ).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO routing_orders VALUES (?, 0, 0, '[]', NULL, NULL, 0, 0)", (order_id,)
            )
            planned, backorder_seq = 0, None
            backorder: tuple[StockLine, ...] = ()
        else:
            planned, backorder, backorder_seq = row[0], _lines_decoder.decode(row[1]), row[2]
        conn.execute(
            "UPDATE routing_orders SET version = ? WHERE order_id = ?", (stored.version, order_id)
        )
        match event:
            case OrderRouted():
                record = RoutingRecord(
                    version=stored.version,
                    at=event.at,
                    cause=event.cause,
                    lines=event.lines,
                    excluded=event.excluded,
                    decision=event.decision,
                    fulfilments=event.fulfilments,
                )
                conn.execute(
                    "INSERT INTO routing_decisions VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        order_id,
                        stored.version,
                        stored.seq,
                        event.cause,
                        event.decision.fill,
                        pack(_encoder.encode(record)),
                    ),
                )
                conn.execute(
                    "UPDATE routing_orders SET fulfilments_planned = ?, unapplied = ? "
                    "WHERE order_id = ?",
                    (planned + len(event.fulfilments), stored.version, order_id),
                )
                if event.cause.startswith("rejection:"):
                    conn.execute(
                        "UPDATE fulfilment_rejections SET handled = 1 WHERE cause = ?",
                        (event.cause.removeprefix("rejection:"),),
                    )
            case RoutingApplied():
                found = conn.execute(
                    "SELECT record FROM routing_decisions WHERE order_id = ? AND version = ?",
                    (order_id, event.routed_version),
                ).fetchone()
                if found is None:
                    raise ValueError(
                        f"{stored.stream}: RoutingApplied for unknown decision "
                        f"{event.routed_version}"
                    )
                record = msgspec.structs.replace(
                    _record_decoder.decode(unpack(found[0])),
                    applied=True,
                    created=event.created,
                    refused=event.refused,
                )
                conn.execute(
                    "UPDATE routing_decisions SET record = ? WHERE order_id = ? AND version = ?",
                    (pack(_encoder.encode(record)), order_id, event.routed_version),
                )
                self._set_backorder(
                    conn,
                    stored,
                    order_id,
                    event.backorder,
                    was_backordered=bool(backorder),
                    since_seq=backorder_seq,
                )
                conn.execute(
                    "UPDATE routing_orders SET unapplied = 0 WHERE order_id = ?", (order_id,)
                )
            case RoutingClosed():
                self._set_backorder(
                    conn,
                    stored,
                    order_id,
                    (),
                    was_backordered=bool(backorder),
                    since_seq=backorder_seq,
                )
                conn.execute(
                    "UPDATE routing_orders SET closed = 1, unapplied = 0 WHERE order_id = ?",
                    (order_id,),
                )
                conn.execute(
                    "UPDATE fulfilment_rejections SET handled = 1 WHERE order_id = ?", (order_id,)
                )

    @staticmethod
    def _set_backorder(
        conn: Connection,
        stored: StoredEvent,
        order_id: str,
        lines: tuple[StockLine, ...],
        *,
        was_backordered: bool,
        since_seq: int | None,
    ) -> None:
        """Replace the order's backorder; it keeps its place in the queue while it lasts."""
        lines = merge_lines(lines)
        if lines and (not was_backordered or since_seq is None):
            since_seq = stored.seq
            conn.execute(
                "UPDATE routing_orders SET backorder_seq = ?, backorder_since = ? "
                "WHERE order_id = ?",
                (since_seq, stored.recorded_at.isoformat(), order_id),
            )
        elif not lines:
            conn.execute(
                "UPDATE routing_orders SET backorder_seq = NULL, backorder_since = NULL "
                "WHERE order_id = ?",
                (order_id,),
            )
        conn.execute(
            "UPDATE routing_orders SET backorder = ? WHERE order_id = ?",
            (_encoder.encode(lines), order_id),
        )
        conn.execute("DELETE FROM backorder_skus WHERE order_id = ?", (order_id,))
        conn.executemany(
            "INSERT INTO backorder_skus VALUES (?, ?, ?)",
            [(line.sku, order_id, since_seq) for line in lines],
        )


def _first_sku(state: FulfilmentState) -> str:
    return min((line.sku for line in state.lines), default="")


# --------------------------------------------------------------------------------------------
# Queries (run by `EventStore.read` on a reader connection)


def fetch_fulfilment(conn: Connection, fulfilment_id: str) -> FulfilmentState | None:
    row = conn.execute(
        "SELECT state_json FROM fulfilments WHERE fulfilment_id = ?", (fulfilment_id,)
    ).fetchone()
    return None if row is None else _state_decoder.decode(unpack(row[0]))


def fulfilments_of_order(conn: Connection, order_id: str) -> list[FulfilmentState]:
    rows = conn.execute(
        "SELECT state_json FROM fulfilments WHERE order_id = ? ORDER BY seq", (order_id,)
    ).fetchall()
    return [_state_decoder.decode(unpack(row[0])) for row in rows]


def list_fulfilments(
    conn: Connection,
    *,
    location: str | None,
    states: Iterable[str],
    offset: int = 0,
    limit: int = 100,
) -> list[FulfilmentState]:
    """A pick list: fulfilments in `states`, by their first SKU, then oldest first."""
    wanted = sorted(set(states))
    # Numbered throughout: PostgreSQL's translation (`somsd.store._postgres.translate`) takes
    # `?N` or `?` in one statement, never both.
    marks = ", ".join(f"?{n}" for n in range(2, 2 + len(wanted)))
    after = 2 + len(wanted)
    rows = conn.execute(
        "SELECT state_json FROM fulfilments "  # noqa: S608  # only placeholders are spliced in
        f"WHERE (?1 IS NULL OR location = ?1) AND state IN ({marks}) "
        f"ORDER BY first_sku, seq LIMIT ?{after} OFFSET ?{after + 1}",
        (location, *wanted, limit, offset),
    ).fetchall()
    return [_state_decoder.decode(unpack(row[0])) for row in rows]


def unsettled_fulfilments(conn: Connection, limit: int = 1000) -> list[FulfilmentState]:
    rows = conn.execute(
        "SELECT state_json FROM fulfilments WHERE unsettled = 1 ORDER BY seq LIMIT ?", (limit,)
    ).fetchall()
    return [_state_decoder.decode(unpack(row[0])) for row in rows]


def orders_today(conn: Connection, day: str) -> dict[str, int]:
    """Fulfilments created per location on the UTC date `day` (YYYY-MM-DD)."""
    rows = conn.execute(
        "SELECT location, count(*) FROM fulfilments WHERE created_day = ? GROUP BY location",
        (day,),
    ).fetchall()
    return {location: count for location, count in rows}


def fetch_routing_order(conn: Connection, order_id: str) -> RoutingOrder | None:
    row = conn.execute(
        "SELECT order_id, version, fulfilments_planned, backorder, unapplied, closed "
        "FROM routing_orders WHERE order_id = ?",
        (order_id,),
    ).fetchone()
    if row is None:
        return None
    return RoutingOrder(row[0], row[1], row[2], _lines_decoder.decode(row[3]), row[4], bool(row[5]))


def unapplied_routings(conn: Connection) -> list[RoutingRecord]:
    """Decisions whose reservations were (maybe) asked for but whose outcome was not stored."""
    rows = conn.execute(
        "SELECT d.record FROM routing_orders o JOIN routing_decisions d "
        "ON d.order_id = o.order_id AND d.version = o.unapplied "
        "WHERE o.unapplied > 0 ORDER BY d.seq"
    ).fetchall()
    return [_record_decoder.decode(unpack(row[0])) for row in rows]


def pending_rejections(
    conn: Connection, order_id: str | None = None, limit: int = 1000
) -> list[PendingRejection]:
    rows = conn.execute(
        "SELECT cause, order_id, fulfilment_id, location, lines FROM fulfilment_rejections "
        "WHERE handled = 0 AND (?1 IS NULL OR order_id = ?1) ORDER BY seq LIMIT ?2",
        (order_id, limit),
    ).fetchall()
    return [
        PendingRejection(cause, order, fid, location, _lines_decoder.decode(lines))
        for cause, order, fid, location, lines in rows
    ]


def backordered_orders(
    conn: Connection, skus: Iterable[str] | None, *, after_seq: int = 0, limit: int = 500
) -> list[tuple[int, str]]:
    """(queue position, order id) of backorders holding any of `skus` (None: all), oldest first.

    The position is the seq of the event that put the order on backorder, so paging with
    `after_seq` walks the queue in order even while routing takes orders off it.
    """
    if skus is None:
        rows = conn.execute(
            "SELECT min(since_seq) AS s, order_id FROM backorder_skus WHERE since_seq > ? "
            "GROUP BY order_id ORDER BY s LIMIT ?",
            (after_seq, limit),
        ).fetchall()
    else:
        wanted = sorted(set(skus))
        if not wanted:
            return []
        marks = ", ".join("?" for _ in wanted)
        rows = conn.execute(
            "SELECT min(since_seq) AS s, order_id FROM backorder_skus "  # noqa: S608  # placeholders only
            f"WHERE sku IN ({marks}) AND since_seq > ? GROUP BY order_id ORDER BY s LIMIT ?",
            (*wanted, after_seq, limit),
        ).fetchall()
    return [(seq, order_id) for seq, order_id in rows]


def unrouted_orders(
    conn: Connection, *, after_seq: int = 0, limit: int = 1000
) -> list[tuple[int, str]]:
    """(cursor, order id) of orders waiting to be fulfilled that the router has never seen
    (after a restart, or nudges lost to a full mailbox), in arrival order after `after_seq`."""
    rows = conn.execute(
        "SELECT o.seq, o.order_id FROM orders o "
        "LEFT JOIN routing_orders r ON r.order_id = o.order_id "
        "WHERE o.status IN ('pending', 'processing') AND r.order_id IS NULL AND o.seq > ? "
        "ORDER BY o.seq LIMIT ?",
        (after_seq, limit),
    ).fetchall()
    return [(seq, order_id) for seq, order_id in rows]


def orders_to_close(conn: Connection, limit: int = 1000) -> list[str]:
    """Canceled orders whose routing is still open (a backorder, or fulfilments still open)."""
    marks = ", ".join("?" for _ in OPEN_STATES)
    rows = conn.execute(
        "SELECT o.order_id FROM orders o JOIN routing_orders r ON r.order_id = o.order_id "  # noqa: S608  # placeholders only
        "WHERE o.status = 'canceled' AND (r.closed = 0 OR EXISTS (SELECT 1 FROM fulfilments f "
        f"WHERE f.order_id = o.order_id AND f.state IN ({marks}))) LIMIT ?",
        (*sorted(OPEN_STATES), limit),
    ).fetchall()
    return [row[0] for row in rows]


def read_order_detail(conn: Connection, order_id: str) -> OrderDetail | None:
    """The order's state with its routing and fulfilments, from one read snapshot."""
    blob = fetch_state(conn, order_id)
    if blob is None:
        return None
    state = decode_state(blob)
    records = tuple(
        _record_decoder.decode(unpack(row[0]))
        for row in conn.execute(
            "SELECT record FROM routing_decisions WHERE order_id = ? ORDER BY version",
            (order_id,),
        )
    )
    row = conn.execute(
        "SELECT backorder, backorder_since, closed FROM routing_orders WHERE order_id = ?",
        (order_id,),
    ).fetchone()
    fulfilment = OrderFulfilment(
        routing=records,
        backorder=_lines_decoder.decode(row[0]) if row else (),
        backordered_since=datetime.fromisoformat(row[1]) if row and row[1] else None,
        closed=bool(row[2]) if row else False,
        fulfilments=tuple(
            FulfilmentView.of(item, with_code=True) for item in fulfilments_of_order(conn, order_id)
        ),
    )
    fields = {name: getattr(state, name) for name in state.__struct_fields__}
    return OrderDetail(**fields, fulfilment=fulfilment)

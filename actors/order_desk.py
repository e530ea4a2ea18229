"""The order desk: owns every order's state; every change is an event appended through it.

Why it pipelines: intake must not run at the speed of one fsync. The desk hands each message to
its own task (bounded by `concurrency`, so back-pressure still reaches the mailbox and from
there the HTTP layer), and those tasks' appends meet in the event store's group commit. Each
caller is answered only after its own events are committed.

Why changes to one order are serialised: a decision is computed from the order's state, so two
concurrent operator actions on one order would both decide on the same state. A per-order lock
(FIFO) makes the second wait for the first's commit; orders do not wait for each other.

State: the last committed `OrderState` of recently used orders, in an LRU cache; an order not
in the cache is loaded from the orders projection (one row). The cache only ever holds
committed state, so a refused or failed append changes nothing. After a restart the cache
starts empty, which is always correct. With several daemons on one store (`[cluster]`) another
member may have changed a cached order (an operator's request on one daemon for an order taken
in on another): the append then meets a version conflict, and the desk drops the cached state,
loads the order's committed state and decides the command again.

Decisions are the pure functions of `somsd.domain`; the desk only supplies ids, the clock and
the current `OrderPolicy`, and maps the store's answers.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from datetime import datetime
from decimal import Decimal
from functools import partial

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter

from somsd.actor import Actor, Reply, ReplyError
from somsd.domain.cancellation import cancel_lines, cancel_order
from somsd.domain.errors import DomainError
from somsd.domain.events import (
    CreditNoteIssued,
    ErpDocumentRecorded,
    InvoiceIssued,
    LineQuantity,
    OrderEvent,
    OrderHeld,
    ReturnedLine,
    decode_event,
    encode_event,
)
from somsd.domain.holds import HoldReason
from somsd.domain.invoicing import issue_invoice
from somsd.domain.lifecycle import (
    change_status,
    correct_address,
    hold_for,
    receive_order,
    record_payment,
    record_shipment,
    release_hold,
)
from somsd.domain.order import Address, Order
from somsd.domain.policy import OrderPolicy
from somsd.domain.reorder import copy_order
from somsd.domain.returns import (
    approve_return,
    receive_return,
    refund_return,
    reject_return,
    request_return,
)
from somsd.domain.state import OrderState, apply
from somsd.metrics import LabelChildren
from somsd.projections.orders import (
    decode_state,
    fetch_state,
    order_id_of_stream,
    order_stream,
)
from somsd.store import (
    Appended,
    Duplicate,
    EventStore,
    IdempotencyKey,
    NewEvent,
    OutboxItem,
    StoreUnavailable,
    VersionConflict,
    utc_now,
)

__all__ = [
    "ApproveReturn",
    "CancelOrder",
    "ChangeStatus",
    "CopyOrder",
    "CorrectAddress",
    "DeskMessage",
    "HoldOrder",
    "IssueInvoice",
    "OrderCommand",
    "OrderDesk",
    "OrderNotFound",
    "ReceiveOrder",
    "ReceiveReturn",
    "Received",
    "RecordErpDocument",
    "RecordPayment",
    "RecordShipment",
    "RefundReturn",
    "RejectReturn",
    "ReleaseHold",
    "RequestReturn",
]

log = structlog.get_logger("actors.order_desk")

ACTOR = "order-desk"
# Decisions of one command when its order keeps changing elsewhere in between (each retry
# reloads the committed state first); past that the caller gets the conflict.
MAX_DECISIONS = 5


class OrderNotFound(DomainError):
    code = "order_not_found"


# -- what operators (and later actors) ask of an existing order -----------------------------


class ChangeStatus(msgspec.Struct, frozen=True, tag=True):
    status: str
    reason: str


class ReleaseHold(msgspec.Struct, frozen=True, tag=True):
    reason: str


class HoldOrder(msgspec.Struct, frozen=True, tag=True):
    """A system's hold with its own reasons (see `somsd.domain.lifecycle.hold_for`)."""

    reasons: tuple[HoldReason, ...]


class CorrectAddress(msgspec.Struct, frozen=True, tag=True):
    billing_address: Address | None
    shipping_address: Address | None
    reason: str


class RecordPayment(msgspec.Struct, frozen=True, tag=True):
    amount: Decimal
    payment_id: str
    reference: str = ""


class RecordShipment(msgspec.Struct, frozen=True, tag=True):
    lines: tuple[LineQuantity, ...]
    shipment_id: str
    location: str = ""
    tracking_number: str = ""


class IssueInvoice(msgspec.Struct, frozen=True, tag=True):
    pass


class CancelOrder(msgspec.Struct, frozen=True, tag=True):
    reason: str
    lines: tuple[LineQuantity, ...] | None = None  # None: the whole order


class RequestReturn(msgspec.Struct, frozen=True, tag=True):
    lines: tuple[LineQuantity, ...]
    reason: str


class ApproveReturn(msgspec.Struct, frozen=True, tag=True):
    rma_id: str
    reason: str = ""


class RejectReturn(msgspec.Struct, frozen=True, tag=True):
    rma_id: str
    reason: str


class ReceiveReturn(msgspec.Struct, frozen=True, tag=True):
    rma_id: str
    lines: tuple[ReturnedLine, ...]


class RefundReturn(msgspec.Struct, frozen=True, tag=True):
    rma_id: str
    reason: str = ""


class RecordErpDocument(msgspec.Struct, frozen=True, tag=True):
    """An ERP created a document for the order (see `ErpDocumentRecorded`); a repeat of one
    already recorded changes nothing."""

    system: str
    kind: str
    key: str
    cause: str


class CopyOrder(msgspec.Struct, frozen=True, tag=True):
    reason: str
    replacement: bool = False
    lines: tuple[LineQuantity, ...] | None = None


OrderAction = (
    ChangeStatus
    | ReleaseHold
    | RecordPayment
    | RecordShipment
    | IssueInvoice
    | CancelOrder
    | RequestReturn
    | ApproveReturn
    | RejectReturn
    | ReceiveReturn
    | RefundReturn
    | CopyOrder
    | CorrectAddress
    | RecordErpDocument
    | HoldOrder
)


# -- messages ---------------------------------------------------------------------------------


class Received(msgspec.Struct, frozen=True):
    order_id: str
    duplicate: bool


class ReceiveOrder(msgspec.Struct, frozen=True, tag=True):
    channel: str
    order: Order
    reply: Reply[Received]
    validated: bool = False  # decoded by `decode_order` with the desk's pickup locations
    holds: tuple[HoldReason, ...] = ()  # the channel's own doubts: taken in, but held


class OrderCommand(msgspec.Struct, frozen=True, tag=True):
    """`action` on order `order_id`, decided by `user`; answered with the committed state.

    For `CopyOrder` the answer is the new order's state; for `RequestReturn` the new return is
    the last one in the state's `returns`.
    """

    order_id: str
    action: OrderAction
    user: str  # "user:<login>" for operators, an actor's name otherwise
    reply: Reply[OrderState]


DeskMessage = ReceiveOrder | OrderCommand


class _RandomPool:
    """Random bytes from the OS in 4 KiB draws: one `getrandom` call per 512 ids instead of
    one per id (`secrets.token_hex` was 4 % of the intake's trio thread, measured)."""

    _DRAW = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()  # the API and the desk may both ask; no slice twice
        self._pool = b""
        self._offset = 0

    def hex(self, size: int) -> str:
        with self._lock:
            if self._offset + size > len(self._pool):
                self._pool, self._offset = secrets.token_bytes(self._DRAW), 0
            start = self._offset
            self._offset += size
            return self._pool[start : start + size].hex()


_random_pool = _RandomPool()


def new_id(prefix: str) -> str:
    # 64 random bits: unguessable in URLs, and a collision among a retailer's orders is
    # as likely as never; the event store's unique stream versions would refuse one anyway.
    return f"{prefix}{_random_pool.hex(8)}"


def to_new_events(events: Sequence[OrderEvent]) -> list[NewEvent]:
    return [NewEvent(type(event).__name__, encode_event(event)) for event in events]


class DeskMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.received = Counter(
            "somsd_orders_received",
            "Orders taken in and committed, per channel.",
            ["channel"],
            registry=registry,
        )
        self.duplicates = Counter(
            "somsd_orders_duplicate",
            "Redelivered orders recognised by channel and external id, per channel.",
            ["channel"],
            registry=registry,
        )
        self.status = Counter(
            "somsd_order_status",
            "Orders entering a status (status transitions), per target status.",
            ["status"],
            registry=registry,
        )
        self.holds = Counter(
            "somsd_order_holds",
            "Orders put on hold, per reason code.",
            ["reason"],
            registry=registry,
        )
        self.documents = Counter(
            "somsd_documents_issued",
            "Invoices and credit notes issued, per kind.",
            ["kind"],
            registry=registry,
        )
        # Children resolved once per label value: these run for every order.
        self.received_in = LabelChildren(self.received)
        self.duplicates_in = LabelChildren(self.duplicates)
        self.entering = LabelChildren(self.status)
        self.held_for = LabelChildren(self.holds)
        self.issued = LabelChildren(self.documents)

    def event_committed(
        self, before: OrderState | None, after: OrderState, event: OrderEvent
    ) -> None:
        if before is None or after.status != before.status:
            self.entering(after.status).inc()
        if isinstance(event, OrderHeld):
            for reason in event.reasons:
                self.held_for(reason.code).inc()
        elif isinstance(event, InvoiceIssued):
            self.issued("invoice").inc()
        elif isinstance(event, CreditNoteIssued):
            self.issued("credit_note").inc()


class OrderDesk(Actor[DeskMessage]):
    def __init__(
        self,
        store: EventStore,
        policy: OrderPolicy,
        *,
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = utc_now,
        concurrency: int = 512,
        cache_size: int = 10_000,
        on_committed: Callable[[OrderState, Sequence[OrderEvent]], None] | None = None,
    ) -> None:
        super().__init__(ACTOR)
        # Called (synchronously, on the desk's task) after events of an order are committed,
        # with the order's new state: how the router learns of accepted and released orders.
        # It must not block; a listener that has work to do queues it for its own actor.
        self.on_committed = on_committed
        # Called before an append with the order's channel, its committed state (None for a new
        # order) and the events about to be appended: the outbox items (effects on other
        # systems, e.g. the shop the order came from) to write in the same transaction. Pure and
        # quick; set by the composition root. It folds the events itself, and only for channels
        # that have effects, so webhook intake pays nothing for it.
        self.effects: (
            Callable[[str, OrderState | None, Sequence[OrderEvent]], list[OutboxItem]] | None
        ) = None
        self.store = store
        self.policy = policy  # replaced by the composition root on reload
        self._now = now
        # 512 in flight covers two full group-commit batches (the store's batch limit is 500)
        # while the next ones are prepared; more only adds memory and latency.
        self._concurrency = concurrency
        self._cache: OrderedDict[str, OrderState] = OrderedDict()
        self._cache_size = cache_size
        self._locks: dict[str, trio.Lock] = {}
        self.metrics = DeskMetrics(registry)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._cache.clear()  # after a restart, only the projection is trusted
        self._locks.clear()
        slots = trio.Semaphore(self._concurrency)
        async with trio.open_nursery() as nursery:
            task_status.started()
            async for message in self.mailbox:
                await slots.acquire()
                nursery.start_soon(self._handle, message, slots)

    async def _handle(self, message: DeskMessage, slots: trio.Semaphore) -> None:
        try:
            match message:
                case ReceiveOrder():
                    await self._receive(message)
                case OrderCommand():
                    await self._command(message)
        except (DomainError, VersionConflict, StoreUnavailable) as exc:
            # StoreUnavailable (a full disk): fail the request, not the desk; a restart would
            # not make the store writable.
            message.reply.fail(exc)
        except Exception as exc:
            message.reply.fail(exc)
            raise  # a store or programming error: let the supervisor restart the desk
        finally:
            slots.release()
            if not message.reply.done:  # cancelled: the desk is stopping or restarting
                message.reply.fail(ReplyError("the order desk stopped; retry the request"))

    # -- intake ------------------------------------------------------------------------

    async def _receive(self, message: ReceiveOrder) -> None:
        message.reply.set(
            await self.receive(
                message.channel, message.order, validated=message.validated, holds=message.holds
            )
        )

    async def receive(
        self,
        channel: str,
        order: Order,
        *,
        validated: bool = False,
        holds: tuple[HoldReason, ...] = (),
    ) -> Received:
        """Take a new order in, in the caller's task; returns once its events are committed.

        What a `ReceiveOrder` message does, without the mailbox and the task the desk starts
        per message (a tenth of the trio thread per order on the webhook intake, measured): a
        new order touches no other order's state and needs no per-order lock, its stream is
        new (`expected_version=0`) and the idempotency key makes a redelivery a `Duplicate`
        however many callers race. Raises what the message's reply would carry.
        """
        order_id = new_id("o")
        events = receive_order(
            order,
            order_id=order_id,
            channel=channel,
            policy=self.policy,
            now=self._now(),
            actor=ACTOR,
            validated=validated,
            extra_holds=holds,
        )
        new_events = to_new_events(events)
        result = await self.store.append(
            order_stream(order_id),
            new_events,
            expected_version=0,
            idempotency=IdempotencyKey(f"channel/{channel}", order.external_id),
            outbox=self._effects_of(channel, None, events),
        )
        if isinstance(result, Duplicate):
            self.metrics.duplicates_in(channel).inc()
            return Received(order_id_of_stream(result.stream), duplicate=True)
        self._remember(None, self._committed_events(events, new_events, result))
        self.metrics.received_in(channel).inc()
        log.info(
            "order_received", order_id=order_id, channel=channel, external_id=order.external_id
        )
        return Received(order_id, duplicate=False)

    # -- commands on existing orders ---------------------------------------------------

    async def _command(self, command: OrderCommand) -> None:
        lock = self._locks.setdefault(command.order_id, trio.Lock())
        try:
            async with lock:
                state = await self._decide_and_append(command)
                if state is None:
                    return  # a copy: answered with the new order
                log.info(
                    "order_changed",
                    order_id=command.order_id,
                    action=type(command.action).__name__,
                    user=command.user,
                    status=state.status,
                )
                command.reply.set(state)
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(command.order_id, None)

    async def _decide_and_append(self, command: OrderCommand) -> OrderState | None:
        """The committed state after the command; decided again on a stale cached state."""
        for attempt in range(1, MAX_DECISIONS + 1):
            state = await self._load(command.order_id)
            try:
                if isinstance(command.action, CopyOrder):
                    command.reply.set(await self._copy(state, command.action, command.user))
                    return None
                events = self._decide(state, command.action, command.user)
                return await self._append(state, events)
            except VersionConflict:
                # Changed by another member: reload and decide again. Not a copy, whose new
                # order is committed already: a second attempt would make a second copy.
                self._cache.pop(command.order_id, None)
                if attempt == MAX_DECISIONS or isinstance(command.action, CopyOrder):
                    raise
                log.info("order_reloaded_after_conflict", order_id=command.order_id)
        raise AssertionError("unreachable")  # pragma: no cover

    def _decide(self, state: OrderState, action: OrderAction, user: str) -> list[OrderEvent]:
        policy, now = self.policy, self._now()
        match action:
            case ChangeStatus(status=status, reason=reason):
                return change_status(
                    state, status, policy=policy, reason=reason, now=now, actor=user
                )
            case ReleaseHold(reason=reason):
                return release_hold(state, policy=policy, reason=reason, now=now, actor=user)
            case HoldOrder(reasons=reasons):
                return hold_for(state, reasons, policy=policy, now=now, actor=user)
            case CorrectAddress():
                return correct_address(
                    state,
                    billing_address=action.billing_address,
                    shipping_address=action.shipping_address,
                    policy=policy,
                    reason=action.reason,
                    now=now,
                    actor=user,
                )
            case RecordPayment(amount=amount, payment_id=payment_id, reference=reference):
                return record_payment(
                    state,
                    amount,
                    payment_id=payment_id,
                    policy=policy,
                    now=now,
                    actor=user,
                    reference=reference,
                )
            case RecordShipment():
                return record_shipment(
                    state,
                    action.lines,
                    shipment_id=action.shipment_id,
                    policy=policy,
                    now=now,
                    actor=user,
                    location=action.location,
                    tracking_number=action.tracking_number,
                )
            case IssueInvoice():
                return issue_invoice(state, policy=policy, now=now, actor=user)
            case RecordErpDocument(system=system, kind=kind, key=key, cause=cause):
                known = any(d.system == system and d.key == key for d in state.erp_documents)
                if known:
                    return []
                return [
                    ErpDocumentRecorded(
                        at=now, actor=user, system=system, kind=kind, key=key, cause=cause
                    )
                ]
            case CancelOrder(reason=reason, lines=None):
                return cancel_order(
                    state,
                    refund_id=new_id("r"),
                    policy=policy,
                    reason=reason,
                    now=now,
                    actor=user,
                )
            case CancelOrder(reason=reason, lines=lines) if lines is not None:
                return cancel_lines(
                    state,
                    lines,
                    refund_id=new_id("r"),
                    policy=policy,
                    reason=reason,
                    now=now,
                    actor=user,
                )
            case RequestReturn(lines=lines, reason=reason):
                return request_return(
                    state, lines, rma_id=new_id("rma"), reason=reason, now=now, actor=user
                )
            case ApproveReturn(rma_id=rma_id, reason=reason):
                return approve_return(state, rma_id=rma_id, now=now, actor=user, reason=reason)
            case RejectReturn(rma_id=rma_id, reason=reason):
                return reject_return(state, rma_id=rma_id, reason=reason, now=now, actor=user)
            case ReceiveReturn(rma_id=rma_id, lines=lines):
                return receive_return(state, lines, rma_id=rma_id, now=now, actor=user)
            case RefundReturn(rma_id=rma_id, reason=reason):
                return refund_return(
                    state,
                    rma_id=rma_id,
                    refund_id=new_id("r"),
                    policy=policy,
                    now=now,
                    actor=user,
                    reason=reason,
                )
        raise AssertionError(f"unhandled action {action!r}")  # pragma: no cover

    async def _copy(self, original: OrderState, action: CopyOrder, user: str) -> OrderState:
        """The new order first (its own stream), then the link on the original.

        Two streams cannot be appended atomically; writing the copy first means a crash in
        between leaves a copy that names its original (`copied_from`) rather than a link to
        an order that does not exist.
        """
        new_order_id = new_id("o")
        decision = copy_order(
            original,
            new_order_id=new_order_id,
            new_external_id=f"copy-of-{original.order_id}-{new_order_id}",
            new_number=f"{original.order.number}-{'R' if action.replacement else 'C'}",
            replacement=action.replacement,
            policy=self.policy,
            reason=action.reason,
            now=self._now(),
            actor=user,
            lines=action.lines,
        )
        new_events = to_new_events(decision.copy)
        appended = await self.store.append(
            order_stream(new_order_id),
            new_events,
            expected_version=0,
            idempotency=IdempotencyKey("copy", decision.order.external_id),
        )
        assert isinstance(appended, Appended)  # the key is new: it can not be a duplicate
        copy_state = self._remember(
            None, self._committed_events(decision.copy, new_events, appended)
        )
        await self._append(original, decision.original)
        return copy_state

    # -- state -------------------------------------------------------------------------

    async def _load(self, order_id: str) -> OrderState:
        state = self._cache.get(order_id)
        if state is not None:
            self._cache.move_to_end(order_id)
            return state

        blob = await self.store.read(partial(fetch_state, order_id=order_id))
        if blob is None:
            raise OrderNotFound(f"no order {order_id!r}")
        state = decode_state(blob)
        self._cache_put(state)
        return state

    async def _append(self, state: OrderState, events: list[OrderEvent]) -> OrderState:
        if not events:
            return state
        new_events = to_new_events(events)
        result = await self.store.append(
            order_stream(state.order_id),
            new_events,
            expected_version=state.version,
            outbox=self._effects_of(state.channel, state, events),
        )
        assert isinstance(result, Appended)
        return self._remember(state, self._committed_events(events, new_events, result))

    def _effects_of(
        self, channel: str, before: OrderState | None, events: list[OrderEvent]
    ) -> list[OutboxItem]:
        if self.effects is None or not events:
            return []
        return self.effects(channel, before, events)

    @staticmethod
    def _committed_events(
        events: list[OrderEvent], submitted: list[NewEvent], result: Appended
    ) -> list[OrderEvent]:
        """The events as stored: with the numbers the store gave invoices and credit notes."""
        if not result.stamped:
            return events
        return [
            event if stored is sent else decode_event(stored.payload)
            for event, sent, stored in zip(events, submitted, result.stamped, strict=True)
        ]

    def _remember(self, before: OrderState | None, events: list[OrderEvent]) -> OrderState:
        """Fold committed events into the cache, counting what the metrics count on the way."""
        state = before
        for event in events:
            previous = state
            state = apply(state, event)
            self.metrics.event_committed(previous, state, event)
        assert state is not None
        self._cache_put(state)
        if self.on_committed is not None and events:
            self.on_committed(state, events)
        return state

    def _cache_put(self, state: OrderState) -> None:
        self._cache[state.order_id] = state
        self._cache.move_to_end(state.order_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

"""The inventory actor: owns the stock book and decides every stock change, one at a time.

Why one task decides everything: a reservation is checked against ATP and taken in the same
step, with no other decision in between, so two orders never both take the last unit - there
is no lock, because there is nothing to race with. The decisions are the pure functions of
`somsd.domain.atp`; this module supplies the book, the clock and the event log.

Why the book runs ahead of the log. Awaiting each commit before deciding the next message would
cap the actor at one fsync per decision (a few hundred a second). So a decision is applied to
the book at once, its append to the `inventory` stream is submitted without waiting, and the
next message is decided against the book that already includes it; a task per change waits
for its commit and only then answers the caller (bounded like the order desk's, so
back-pressure still reaches the mailbox). This departs from the atp module's "await the
commit, then apply" on purpose, and stays safe because:
- every append names the stream version it expects. Appends are queued in decision order, so if
  one fails, every later one fails with a version conflict: the log always holds a prefix of
  the decisions, never a later decision without an earlier one it depended on;
- a failed append crashes the actor. The supervisor restarts it and the book is rebuilt from
  the log, so the book never keeps a change that was not committed.
Refusals and reads are answered at once; they change nothing.

Several daemons on one store (`[cluster]`, `shared=True`). Every member's inventory appends to
the one `inventory` stream (the router reserves on the `core/routing` holder, each location's
owner ships and counts, any member releases on an operator's cancel), so a book that only saw
its own decisions would sell stock another member took. In shared mode the actor therefore
goes back to "decide, persist, apply", one message at a time: before each message it applies
the events other members committed since its last version (with their effects: a rise in
ATP still reaches `on_stock_added`), it decides against that book, appends under the version
it read, and applies the event only once committed. A version conflict means another member
committed in between: it reads those events and decides the message again. No pipelining: a
pipelined append behind a conflict would fail too, and the book would run ahead of the log.

What channels see. After each committed change, the channels serving its location learn the
SKU's new availability (sum of positive ATP over their locations). Pushes to a shop are
debounced per (channel, SKU) - a burst becomes one push, sold-out goes at once - by a second
task that sleeps until the next push falls due. A push is a `ChannelStockChanged` event on the
stream `channel-stock-<channel>` with an outbox item for `channel/<channel>` in the same append,
so the outbox dispatcher delivers exactly what the log says was pushed. At start the last pushed
value per SKU is read back from those streams and compared with the rebuilt book, so a change
committed just before a crash is still pushed after it. A channel's availability falling to or
below its `low_stock_threshold` is recorded as a `LowStock` event on the same stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from somsd.actor import Actor, Reply, ReplyError
from somsd.config import ChannelConfig, InventoryConfig, LocationConfig
from somsd.domain.atp import (
    DEFAULT_DEBOUNCE,
    ChannelStockPolicy,
    DebouncePolicy,
    PendingPush,
    RejectionReason,
    Reservation,
    ReservationRejected,
    ReservationReleased,
    SafetyStock,
    StockBook,
    StockCounted,
    StockEvent,
    StockLine,
    StockPosition,
    StockRefused,
    StockReport,
    StockReportDecision,
    StockReserved,
    StockShipped,
    Transition,
    Visibility,
    affected_skus,
    apply_stock_event,
    availability_changes,
    channel_availability,
    due_pushes,
    note_pending_push,
    rebuild_stock_book,
    receive_stock_report,
    reject_stock,
    release_stock,
    reserve_stock,
    ship_stock,
)
from somsd.projections.stock import INVENTORY_STREAM, decode_stock_event, encode_stock_event
from somsd.store import Appended, EventStore, NewEvent, OutboxItem, VersionConflict, utc_now

__all__ = [
    "ACTOR",
    "CHANNEL_STOCK_STREAM_PREFIX",
    "INVENTORY_STREAM",
    "CatchUpStock",
    "ChannelStockChanged",
    "ChannelStockEvent",
    "ChannelStockSettings",
    "GetAvailability",
    "GetChannelAvailability",
    "GetPositions",
    "GetReservation",
    "Inventory",
    "InventoryCommitFailed",
    "InventoryMessage",
    "InventoryMetrics",
    "LowStock",
    "RejectStock",
    "ReleaseStock",
    "ReportStock",
    "ReserveStock",
    "ShipStock",
    "channel_stock_policies",
    "channel_stock_stream",
    "debounce_policy",
    "decode_channel_stock_event",
    "safety_stock",
    "stock_push_target",
]

log = structlog.get_logger("actors.inventory")

ACTOR = "inventory"
CHANNEL_STOCK_STREAM_PREFIX = "channel-stock-"

# Changes whose commit is awaited at once: 512 covers two full group-commit batches (the store's
# batch limit is 500) while the next decisions are made, as for the order desk; more only adds
# memory and latency.
CONCURRENCY = 512
# Pushes per append to a channel's stream: one push round after a full report (100,000 SKUs)
# becomes appends of 500, so no single transaction holds the writer for long; 500 is the
# store's own batch limit, which it measured to commit in a few milliseconds.
PUSH_CHUNK = 500
# Decisions of one message in shared mode when other members keep committing in between: each
# retry first applies what they committed, so a conflict again means the stream is that busy
# and the caller is better told to retry than held.
MAX_DECISIONS = 20
# When the actor is stopped with appends queued, the store still commits or refuses them (it
# drains its mailbox within its 5 s drain deadline). Waiting as long for that answer tells the
# caller what really happened instead of "maybe".
COMMIT_WAIT_ON_STOP = 5.0

T = TypeVar("T")


def channel_stock_stream(channel: str) -> str:
    return CHANNEL_STOCK_STREAM_PREFIX + channel


def stock_push_target(channel: str) -> str:
    """The outbox target of a channel's stock pushes and catalogue fixes.

    Apart from the channel's order effects (`channel/<name>`): a catalogue's first sync is
    thousands of pushes, and a shipment's or payment's effect must not wait behind them.
    """
    return f"channel/{channel}/stock"


# -- configuration ------------------------------------------------------------------------------


class ChannelStockSettings(ChannelStockPolicy, frozen=True):
    """A channel's stock policy plus whether somsd pushes its stock to the shop at all.

    `ChannelStockPolicy` (the pure domain's view) has no `sync_stock`: availability and low-stock
    alerts do not depend on it, only pushing does. A plain `ChannelStockPolicy` is synced.
    """

    sync_stock: bool = True


def _syncs(channel: ChannelStockPolicy) -> bool:
    return not isinstance(channel, ChannelStockSettings) or channel.sync_stock


def channel_stock_policies(channels: Iterable[ChannelConfig]) -> tuple[ChannelStockSettings, ...]:
    """The `channels=` argument from the config's `[[channel]]` tables.

    A `kind = "webhook"` channel is never synced, whatever `sync_stock` says: it only sends
    orders in and has no endpoint to push stock to, so its outbox entries would wait forever.
    """
    return tuple(
        ChannelStockSettings(
            channel.name,
            frozenset(channel.locations),
            hide_sold_out=channel.hide_sold_out,
            low_stock_threshold=channel.low_stock_threshold,
            sync_stock=channel.sync_stock and channel.kind != "webhook",
        )
        for channel in channels
    )


def safety_stock(locations: Iterable[LocationConfig]) -> SafetyStock:
    """The `safety=` argument: each location's `safety_stock` applies to every SKU there."""
    return SafetyStock(
        location_defaults={loc.name: loc.safety_stock for loc in locations if loc.safety_stock}
    )


def debounce_policy(inventory: InventoryConfig) -> DebouncePolicy:
    """The `debounce=` argument from `[inventory]`."""
    return DebouncePolicy(inventory.push_quiet.seconds, inventory.push_max_delay.seconds)


# -- messages -----------------------------------------------------------------------------------


class ReportStock(msgspec.Struct, frozen=True, tag=True):
    """An absolute stock report; answered with what was applied, what was stale, what is
    now oversold (the caller re-routes those)."""

    report: StockReport
    reply: Reply[StockReportDecision]


class ReserveStock(msgspec.Struct, frozen=True, tag=True):
    """Take all lines at one location, or none."""

    reservation_id: str
    location: str
    lines: tuple[StockLine, ...]
    reply: Reply[StockReserved | StockRefused]


class ReleaseStock(msgspec.Struct, frozen=True, tag=True):
    """Hand back some lines of a reservation, or all of it (`lines=None`)."""

    reservation_id: str
    lines: tuple[StockLine, ...] | None
    reply: Reply[ReservationReleased | StockRefused]


class ShipStock(msgspec.Struct, frozen=True, tag=True):
    """Reserved units left the location at `at` (the location's time, timezone-aware)."""

    reservation_id: str
    at: datetime
    lines: tuple[StockLine, ...] | None
    reply: Reply[StockShipped | StockRefused]


class RejectStock(msgspec.Struct, frozen=True, tag=True):
    """A location refused reserved lines; missing or damaged units are written off."""

    reservation_id: str
    reason: RejectionReason
    at: datetime
    lines: tuple[StockLine, ...] | None
    reply: Reply[ReservationRejected | StockRefused]


class GetAvailability(msgspec.Struct, frozen=True, tag=True):
    """{sku: {location: ATP}} for locations with ATP > 0 (the router's input); every SKU asked
    for is a key, with {} when no location has it."""

    skus: tuple[str, ...]
    reply: Reply[dict[str, dict[str, int]]]


class GetPositions(msgspec.Struct, frozen=True, tag=True):
    """One SKU at every location that ever counted or reserved it, sorted by location."""

    sku: str
    reply: Reply[tuple[StockPosition, ...]]


class GetReservation(msgspec.Struct, frozen=True, tag=True):
    """What an open reservation still holds; None once fully released, shipped or rejected
    (or never made). Lets a caller that crashed mid-way find out before it settles again."""

    reservation_id: str
    reply: Reply[Reservation | None]


class GetChannelAvailability(msgspec.Struct, frozen=True, tag=True):
    """{sku: units the channel may sell} for every SKU in the book (reconciliation's truth)."""

    channel: str
    reply: Reply[dict[str, int]]


class CatchUpStock(msgspec.Struct, frozen=True, tag=True):
    """Apply the stock events other members committed (shared mode); answered with how many.
    Alone this is 0: every event of the stream is this actor's own."""

    reply: Reply[int]


InventoryMessage = (
    CatchUpStock
    | GetChannelAvailability
    | ReportStock
    | ReserveStock
    | ReleaseStock
    | ShipStock
    | RejectStock
    | GetAvailability
    | GetPositions
    | GetReservation
)


# -- events on the channel stock streams ------------------------------------------------------


class ChannelStockChanged(msgspec.Struct, frozen=True, tag=True):
    """A channel's sellable quantity of a SKU, as pushed to the shop (also the outbox payload).

    `visibility` is "hide"/"show" when the channel hides sold-out products, else None.
    """

    channel: str
    sku: str
    available: int
    transition: Transition
    visibility: Visibility | None
    at: datetime


class LowStock(msgspec.Struct, frozen=True, tag=True):
    """A channel's availability of a SKU fell to or below the channel's low-stock threshold."""

    channel: str
    sku: str
    available: int
    threshold: int
    at: datetime


ChannelStockEvent = ChannelStockChanged | LowStock

_encoder = msgspec.json.Encoder()
_channel_decoder: msgspec.json.Decoder[ChannelStockEvent] = msgspec.json.Decoder(ChannelStockEvent)


def decode_channel_stock_event(payload: bytes) -> ChannelStockEvent:
    return _channel_decoder.decode(payload)


# -- metrics ------------------------------------------------------------------------------------


class _SyncLag:
    """`somsd_stock_sync_lag_seconds{channel}`, computed at scrape time.

    A set gauge would only change when the push task wakes, i.e. it would read 0 between pushes
    however long a change has waited; computing the age when scraped (on the trio thread, see
    somsd.metrics) shows the real wait.
    """

    NAME = "somsd_stock_sync_lag_seconds"
    HELP = (
        "Age of the oldest stock change not yet handed to a channel's outbox (debounce queue); "
        "0 when none. Outbox delivery backlog is somsd_outbox_pending{target='channel/...'}."
    )

    def __init__(self, lags: Callable[[], Mapping[str, float]]) -> None:
        self._lags = lags

    def describe(self) -> Iterable[Metric]:
        # Names only, so registering does not call collect() (auto_describe would).
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["channel"])

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["channel"])
        for channel, lag in sorted(self._lags().items()):
            family.add_metric([channel], lag)
        yield family


class InventoryMetrics:
    def __init__(
        self, registry: CollectorRegistry | None, lags: Callable[[], Mapping[str, float]]
    ) -> None:
        self.stale_counts = Counter(
            "somsd_stock_reports_stale",
            "Stock report rows ignored because a newer count of the SKU at the location was "
            "already applied, per location.",
            ["location"],
            registry=registry,
        )
        self.low_alerts = Counter(
            "somsd_stock_low_alerts",
            "Low-stock alerts: a channel's availability of a SKU fell to or below its threshold.",
            ["channel"],
            registry=registry,
        )
        self.reservations = Counter(
            "somsd_stock_reservations",
            "Reservation requests, per outcome (reserved, refused).",
            ["outcome"],
            registry=registry,
        )
        self.channel_changes = Counter(
            "somsd_channel_stock_changes",
            "Stock changes queued for a channel's shop, per transition.",
            ["channel", "transition"],
            registry=registry,
        )
        self.sync_lag = _SyncLag(lags)
        if registry is not None:
            registry.register(self.sync_lag)


# -- the actor ----------------------------------------------------------------------------------


class _Redecide(Exception):
    """Shared mode: the append met another member's; decide the message again."""


class InventoryCommitFailed(Exception):
    """An inventory append was not stored. The book may hold a change the log does not, so the
    actor stops; the supervisor restarts it and the book is rebuilt from the log."""


class _Effects(msgspec.Struct, frozen=True):
    """What a decided change does to channels, worked out while it is applied.

    `available`: the new availability per serving channel and SKU whose ATP at the location
    moved; `raised`: SKUs some channel can now sell more of; `low`: (channel, SKU, available,
    threshold) that crossed a low-stock threshold downwards.
    """

    available: dict[str, dict[str, int]]
    raised: frozenset[str]
    low: tuple[tuple[str, str, int, int], ...]


class _Change(msgspec.Struct, frozen=True):
    """A change applied to the book whose append is in flight, and what to answer once it is
    committed."""

    event: StockEvent
    effects: _Effects
    committed: Reply[Appended]
    reply: Reply[Any]
    answer: object


class Inventory(Actor[InventoryMessage]):
    """Owns the `StockBook`; see the module docstring. Start `run` under a supervisor."""

    def __init__(
        self,
        store: EventStore,
        *,
        safety: SafetyStock,
        channels: Sequence[ChannelStockPolicy],
        debounce: DebouncePolicy = DEFAULT_DEBOUNCE,
        registry: CollectorRegistry | None = None,
        now: Callable[[], datetime] = utc_now,
        on_stock_added: Callable[[frozenset[str]], None] | None = None,
        shared: bool = False,
    ) -> None:
        """`shared`: other daemons append to the same stream (`[cluster]`; module docstring)."""
        super().__init__(ACTOR)
        self.store = store
        self.shared = shared
        # Whether this member pushes channel stock (shared mode: one member does, see
        # `take_over_pushes`); the others keep no debounce queue and report no pushed values.
        self.pushes_here: Callable[[], bool] = lambda: True
        # Called (synchronously, on the actor's tasks) after a committed change let a channel
        # sell more of some SKUs: how the router learns to re-route backorders. It must not
        # block; a listener with work to do queues it for its own actor.
        self.on_stock_added = on_stock_added
        self._safety = safety
        self._channels = tuple(channels)
        self._debounce = debounce
        self._now = now
        self.metrics = InventoryMetrics(registry, self._sync_lags)
        # Everything below belongs to one run and is rebuilt by the next.
        self._book = StockBook(safety)
        self._version = 0  # of the inventory stream: what the next append expects
        # Per channel stream, once read back: its version and the last pushed value per SKU.
        self._channel_versions: dict[str, int] = {}
        self._pushed: dict[str, dict[str, int]] = {}
        # Per channel: SKUs changed since their last push (debounce state, trio clock seconds).
        self._pending: dict[str, dict[str, PendingPush]] = {}
        self._alerts: dict[str, list[LowStock]] = {}
        self._wake_at = math.inf  # when the push task should look at `_pending` next
        self._sleep: trio.CancelScope | None = None  # the push task's sleep, to wake it early
        self._resync = False

    @property
    def safety(self) -> SafetyStock:
        """The safety stock in force (config; read by the inventory API for empty locations)."""
        return self._safety

    @property
    def channels(self) -> tuple[ChannelStockPolicy, ...]:
        return self._channels

    def pushed(self, channel: str, sku: str) -> int | None:
        """The channel's availability of `sku` as last queued for its shop (None: unknown).

        A deliverer sends this rather than its entry's own value, so a retried older push
        that lands after a newer one cannot leave the shop with a stale count. A member that
        does not push (shared mode) does not know it.
        """
        if not self.pushes_here():
            return None
        return self._pushed.get(channel, {}).get(sku)

    def take_over_pushes(self) -> None:
        """This member pushes channel stock from now on (shared mode): read back what each
        channel was pushed by whoever pushed before, and compare it with the whole book."""
        self._channel_versions.clear()
        self._pushed.clear()
        self._pending.clear()
        self._resync = True
        self._wake_up(-math.inf)

    def reconfigure(
        self,
        *,
        safety: SafetyStock,
        channels: Sequence[ChannelStockPolicy],
        debounce: DebouncePolicy,
    ) -> None:
        """Apply a reloaded config. Synchronous, so no decision of this actor is half-made when
        it runs; the push task then compares every channel with what it last pushed."""
        channels = tuple(channels)
        self._debounce = debounce
        if safety == self._safety and channels == self._channels:
            # Nothing availability depends on changed: skip the full recompute (up to ~2 s
            # at 100,000 SKUs x 50 locations, bench/routing.py), which blocks the loop.
            self._wake_up(-math.inf)  # the debounce times may have moved
            return
        self._safety = safety
        self._channels = channels
        # Safety stock is config, not an event: re-resolved in place, and a rebuilt book gets
        # the same values from `self._safety`.
        self._book.change_safety_stock(safety)
        synced = {channel.name for channel in channels if _syncs(channel)}
        for name in [name for name in self._pending if name not in synced]:
            del self._pending[name]
        known = {channel.name for channel in channels}
        for name in [name for name in self._alerts if name not in known]:
            del self._alerts[name]
        self._resync = True
        self._wake_up(-math.inf)
        log.info("inventory_reconfigured", channels=sorted(known), synced=sorted(synced))

    # -- run ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._load()
        slots = trio.Semaphore(CONCURRENCY)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._push_loop)
            task_status.started()
            while True:
                # The slot first: a stop while waiting for one then strands no taken message.
                await slots.acquire()
                message = await self.mailbox.receive()
                handed_off = False
                try:
                    handed_off = await self._decide(message, nursery, slots)
                finally:
                    if not handed_off:
                        slots.release()
                        if not message.reply.done:  # cancelled mid-way: stopping or crashing
                            message.reply.fail(ReplyError("the inventory stopped; retry"))

    async def _load(self) -> None:
        """Rebuild the book from the log and read back what each channel was last pushed."""
        stored = await self.store.read_stream(INVENTORY_STREAM)
        self._book = rebuild_stock_book(
            (decode_stock_event(event.payload) for event in stored), self._safety
        )
        self._version = stored[-1].version if stored else 0
        self._channel_versions.clear()
        self._pushed.clear()
        self._pending.clear()
        self._alerts.clear()
        self._wake_at = math.inf
        self._sleep = None
        self._resync = False
        await self._load_channels()
        self._catch_up()
        log.info(
            "inventory_loaded",
            events=len(stored),
            version=self._version,
            channels=len(self._channel_versions),
        )

    async def _load_channels(self) -> None:
        for channel in self._channels:
            name = channel.name
            if name in self._channel_versions:
                continue
            stored = await self.store.read_stream(channel_stock_stream(name))
            pushed: dict[str, int] = {}
            for event in stored:
                decoded = decode_channel_stock_event(event.payload)
                if isinstance(decoded, ChannelStockChanged):
                    pushed[decoded.sku] = decoded.available
            self._pushed[name] = pushed
            self._channel_versions[name] = stored[-1].version if stored else 0

    def _catch_up(self) -> None:
        """Queue a push for every SKU whose availability differs from what was last pushed."""
        now = trio.current_time()
        synced = [c for c in self._channels if _syncs(c) and c.name in self._pushed]
        if not synced:
            return
        # One pass over the book for all channels: this is the full recompute (<2 s at
        # 100,000 SKUs x 50 locations, bench/routing.py), done at start and after a reload.
        for name, current in channel_availability(self._book, synced).items():
            pushed = self._pushed[name]
            gone = {sku: 0 for sku, was in pushed.items() if was and sku not in current}
            self._note_pending(name, {**current, **gone}, now)

    # -- deciding -------------------------------------------------------------------------

    async def _decide(
        self, message: InventoryMessage, nursery: trio.Nursery, slots: trio.Semaphore
    ) -> bool:
        """`_handle` alone; in shared mode against the latest log, again after a conflict."""
        if not self.shared:
            return await self._handle(message, nursery, slots)
        for _ in range(MAX_DECISIONS):
            await self._absorb()
            try:
                return await self._handle(message, nursery, slots)
            except _Redecide:
                continue
        message.reply.fail(
            ReplyError("inventory: other members kept changing the stock meanwhile; retry")
        )
        return False

    async def _absorb(self) -> None:
        """Apply what other members appended to the stream since this book's version."""
        for stored in await self.store.read_stream(INVENTORY_STREAM, after_version=self._version):
            self._propagate(self._apply(decode_stock_event(stored.payload)))
            self._version = stored.version

    async def _handle(
        self, message: InventoryMessage, nursery: trio.Nursery, slots: trio.Semaphore
    ) -> bool:
        """Decide one message; True when a change was handed to a commit-waiting task."""
        book = self._book
        match message:
            case CatchUpStock(reply=reply):
                reply.set(self._version)  # shared: `_decide` applied the others' events
                return False
            case GetAvailability(skus=skus, reply=reply):
                # Reads are not logged: the router asks once per order, and a line per read
                # would double the log without recording any decision.
                reply.set({sku: book.available_by_location(sku) for sku in skus})
                return False
            case GetChannelAvailability(channel=name, reply=reply):
                policies = [c for c in self._channels if c.name == name]
                snapshot = channel_availability(book, policies) if policies else {}
                reply.set(dict(snapshot.get(name, {})))
                return False
            case GetPositions(sku=sku, reply=reply):
                reply.set(book.positions(sku))
                return False
            case GetReservation(reservation_id=rid, reply=reply):
                reply.set(book.reservation(rid))
                return False
            case ReportStock(report=report, reply=reply):
                try:
                    decision = receive_stock_report(book, report)
                except ValueError as exc:  # a naive as_of: the sender's mistake, not ours
                    reply.fail(exc)
                    return False
                if decision.counted is None:
                    self._count_stale(decision)
                    log.info("stock_report_stale", location=report.location)
                    reply.set(decision)
                    return False
                return await self._change(decision.counted, reply, decision, nursery, slots)
            case ReserveStock(reservation_id=rid, location=location, lines=lines, reply=reply):
                reserved = reserve_stock(book, rid, location, lines)
                if isinstance(reserved, StockRefused):
                    self.metrics.reservations.labels("refused").inc()
                return await self._decided(reserved, reply, nursery, slots)
            case ReleaseStock(reservation_id=rid, lines=lines, reply=reply):
                return await self._decided(release_stock(book, rid, lines), reply, nursery, slots)
            case ShipStock(reservation_id=rid, at=at, lines=lines, reply=reply):
                try:
                    shipped = ship_stock(book, rid, at, lines)
                except ValueError as exc:  # a naive `at`
                    reply.fail(exc)
                    return False
                return await self._decided(shipped, reply, nursery, slots)
            case RejectStock(reservation_id=rid, reason=reason, at=at, lines=lines, reply=reply):
                try:
                    rejected = reject_stock(book, rid, reason, at, lines)
                except ValueError as exc:  # a naive `at`
                    reply.fail(exc)
                    return False
                return await self._decided(rejected, reply, nursery, slots)
        raise AssertionError(f"unhandled message {message!r}")  # pragma: no cover

    async def _decided(
        self,
        decided: StockEvent | StockRefused,
        reply: Reply[Any],
        nursery: trio.Nursery,
        slots: trio.Semaphore,
    ) -> bool:
        if isinstance(decided, StockRefused):
            log.info(
                "stock_refused",
                operation=decided.operation,
                reservation_id=decided.reservation_id,
                reason=decided.reason,
            )
            reply.set(decided)
            return False
        return await self._change(decided, reply, decided, nursery, slots)

    async def _change(
        self,
        event: StockEvent,
        reply: Reply[T],
        answer: T,
        nursery: trio.Nursery,
        slots: trio.Semaphore,
    ) -> bool:
        """Apply at once, submit the append, let a task answer the caller after the commit."""
        if self.shared:
            await self._change_in_turn(event, reply, answer)
            return False
        effects = self._apply(event)
        committed = await self.store.submit(
            INVENTORY_STREAM,
            [NewEvent(type(event).__name__, encode_stock_event(event))],
            expected_version=self._version,
        )
        self._version += 1
        nursery.start_soon(self._finish, _Change(event, effects, committed, reply, answer), slots)
        return True

    async def _change_in_turn(self, event: StockEvent, reply: Reply[T], answer: T) -> None:
        """Shared mode: append, and apply only what was committed (raises `_Redecide`)."""
        committed = await self.store.submit(
            INVENTORY_STREAM,
            [NewEvent(type(event).__name__, encode_stock_event(event))],
            expected_version=self._version,
        )
        outcome = await _outcome(committed)
        if isinstance(outcome, VersionConflict):
            raise _Redecide  # another member appended first: decide again on its events
        if isinstance(outcome, Exception):
            # Nothing was applied, so the book is still the log's: no restart needed.
            failure = ReplyError(
                f"inventory: the change was not stored ({type(outcome).__name__}: {outcome}); "
                "retry the request"
            )
            failure.__cause__ = outcome
            reply.fail(failure)
            return
        self._version = outcome.version
        self._committed(event, self._apply(event), answer)
        reply.set(answer)

    def _apply(self, event: StockEvent) -> _Effects:
        """Apply an event to the book and work out what it does to the channels.

        Every stock event concerns one location, so a channel total can only move by the
        change of that location's clamped ATP. Comparing that per SKU first means a full
        report that changes few SKUs recomputes channel totals only for those few.
        """
        book, location = self._book, event.location
        skus = affected_skus(event)
        before = {sku: max(book.atp_for(sku, location), 0) for sku in skus}
        apply_stock_event(book, event)
        moved = {
            sku: delta
            for sku in skus
            if (delta := max(book.atp_for(sku, location), 0) - before[sku])
        }
        serving = [channel for channel in self._channels if location in channel.locations]
        if not moved or not serving:
            return _Effects({}, frozenset(), ())
        available = channel_availability(book, serving, moved)
        raised = frozenset(sku for sku, delta in moved.items() if delta > 0)
        low: list[tuple[str, str, int, int]] = []
        for channel in serving:
            threshold = channel.low_stock_threshold
            if threshold is None:
                continue
            totals = available[channel.name]
            for sku, delta in moved.items():
                after = totals[sku]
                if after - delta > threshold >= after:
                    low.append((channel.name, sku, after, threshold))
        return _Effects(available, raised, tuple(low))

    # -- after the commit ---------------------------------------------------------------------

    async def _finish(self, change: _Change, slots: trio.Semaphore) -> None:
        try:
            try:
                outcome = await _outcome(change.committed)
            except trio.Cancelled:
                # Stopping with the append queued: the store still commits or refuses it, so
                # wait (shielded, bounded) and give the caller the real answer.
                with trio.move_on_after(COMMIT_WAIT_ON_STOP, shield=True):
                    self._conclude(await _outcome(change.committed), change)
                raise
            self._conclude(outcome, change)
        finally:
            slots.release()
            if not change.reply.done:
                change.reply.fail(
                    ReplyError(
                        "the inventory stopped before the change was confirmed; it may or may "
                        "not be stored: ask for the reservation (GetReservation) before retrying"
                    )
                )

    def _conclude(self, outcome: Appended | Exception, change: _Change) -> None:
        event = change.event
        if isinstance(outcome, Exception):
            failure = ReplyError(
                f"inventory: the change was not stored ({type(outcome).__name__}: {outcome}); "
                "the inventory restarts from its log, retry the request"
            )
            failure.__cause__ = outcome
            change.reply.fail(failure)
            raise InventoryCommitFailed(
                f"append of {type(event).__name__} to stream {INVENTORY_STREAM!r} failed; "
                "restarting to rebuild the stock book from the log"
            ) from outcome
        self._committed(event, change.effects, change.answer)
        change.reply.set(change.answer)

    def _committed(self, event: StockEvent, effects: _Effects, answer: object) -> None:
        """Metrics, the log line, listeners and channel pushes of one committed change."""
        match event:
            case StockCounted(location=location, counts=counts):
                assert isinstance(answer, StockReportDecision)
                self._count_stale(answer)
                log.info(
                    "stock_counted",
                    location=location,
                    counted=len(counts),
                    stale=len(answer.stale),
                    oversold=len(answer.oversold),
                )
                for over in answer.oversold:
                    log.warning(
                        "stock_oversold",  # the report's sender re-routes; this is the record
                        sku=over.sku,
                        location=over.location,
                        reserved=over.reserved,
                        on_hand=over.on_hand,
                    )
            case _:
                if isinstance(event, StockReserved):
                    self.metrics.reservations.labels("reserved").inc()
                log.info(
                    str(event.__struct_config__.tag),  # stock_reserved, reservation_released...
                    reservation_id=event.reservation_id,
                    location=event.location,
                    lines=len(event.lines),
                )
        self._propagate(effects)

    def _propagate(self, effects: _Effects) -> None:
        """What a committed change does beyond the book: listeners, alerts, channel pushes."""
        if effects.raised and self.on_stock_added is not None:
            try:
                self.on_stock_added(effects.raised)
            except Exception:
                # The change is committed; a listener's bug must not crash the stock owner
                # (a restart would not help it). Logged with its traceback.
                log.exception("on_stock_added_failed", skus=len(effects.raised))
        if effects.low:
            at = self._now()
            for name, sku, available, threshold in effects.low:
                self._alerts.setdefault(name, []).append(
                    LowStock(name, sku, available, threshold, at)
                )
            self._wake_up(-math.inf)  # alerts are not debounced
        now = trio.current_time()
        for channel in self._channels:
            totals = effects.available.get(channel.name)
            if totals and _syncs(channel):
                self._note_pending(channel.name, totals, now)

    def _count_stale(self, decision: StockReportDecision) -> None:
        if decision.stale:
            self.metrics.stale_counts.labels(decision.location).inc(len(decision.stale))

    # -- pushing to channels --------------------------------------------------------------

    def _note_pending(self, channel: str, totals: Mapping[str, int], now: float) -> None:
        """Queue a push for each SKU whose availability differs from the last pushed value."""
        pushed = self._pushed.get(channel)
        if pushed is None:
            return  # not read back yet (added by a reload): the resync compares everything
        pending = self._pending.setdefault(channel, {})
        quiet, longest = self._debounce.quiet_seconds, self._debounce.max_delay_seconds
        wake_at = math.inf
        for sku, available in totals.items():
            was = pushed.get(sku, 0)
            if available == was and sku not in pending:
                continue
            push = pending[sku] = note_pending_push(
                pending.get(sku), now, urgent=available == 0 < was
            )
            due = (
                -math.inf
                if push.urgent
                else min(push.last_change_at + quiet, push.first_change_at + longest)
            )
            wake_at = min(wake_at, due)
        self._wake_up(wake_at)

    def _wake_up(self, at: float) -> None:
        if at < self._wake_at:
            self._wake_at = at
            if self._sleep is not None:
                self._sleep.deadline = at

    async def _push_loop(self) -> None:
        while True:
            with trio.CancelScope(deadline=self._wake_at) as self._sleep:
                await trio.sleep_forever()
            self._sleep = None
            self._wake_at = math.inf
            if self._resync:
                self._resync = False
                await self._load_channels()
                self._catch_up()
            next_due = await self._push_due()
            if next_due is not None:
                self._wake_up(next_due)

    async def _push_due(self) -> float | None:
        """Append the due pushes and queued alerts per channel; return the next due time."""
        if not self.pushes_here():
            self._pending.clear()  # the member that pushes compares everything itself
            self._alerts.clear()
            return None
        now, at = trio.current_time(), self._now()
        next_due: float | None = None
        submitted: list[tuple[Reply[Appended], str, list[ChannelStockChanged | LowStock]]] = []
        for channel in self._channels:
            name = channel.name
            pushed = self._pushed.get(name)
            if pushed is None:
                continue  # read back by the resync first; its alerts wait until then
            events: list[ChannelStockChanged | LowStock] = list(self._alerts.pop(name, ()))
            pending = self._pending.get(name)
            if pending:
                due = due_pushes(pending, now, self._debounce)
                if due.next_due_at is not None and (next_due is None or due.next_due_at < next_due):
                    next_due = due.next_due_at
                if due.due:
                    for sku in due.due:
                        del pending[sku]
                    # The current value, not the one at the time of the change: it is the
                    # only one that matters, and a burst that ended where it began sends none.
                    after = channel_availability(self._book, [channel], due.due)
                    before = {name: {sku: pushed.get(sku, 0) for sku in due.due}}
                    for change in availability_changes(before, after, [channel]):
                        pushed[change.sku] = change.after
                        events.append(
                            ChannelStockChanged(
                                name,
                                change.sku,
                                change.after,
                                change.transition,
                                change.visibility,
                                at,
                            )
                        )
            for start in range(0, len(events), PUSH_CHUNK):
                chunk = events[start : start + PUSH_CHUNK]
                submitted.append((await self._submit_channel_events(name, chunk), name, chunk))
        for reply, name, chunk in submitted:
            try:
                await reply.wait()
            except Exception as exc:
                # `_pushed` already holds these values; a restart reads back the truth.
                raise InventoryCommitFailed(
                    f"append to stream {channel_stock_stream(name)!r} failed; restarting to "
                    "read back what each channel was pushed"
                ) from exc
            for event in chunk:
                if isinstance(event, LowStock):
                    self.metrics.low_alerts.labels(name).inc()
                    log.warning(
                        "stock_low",
                        channel=name,
                        sku=event.sku,
                        available=event.available,
                        threshold=event.threshold,
                    )
                else:
                    self.metrics.channel_changes.labels(name, event.transition).inc()
            log.info("channel_stock_queued", channel=name, events=len(chunk))
        return next_due

    async def _submit_channel_events(
        self, channel: str, events: Sequence[ChannelStockChanged | LowStock]
    ) -> Reply[Appended]:
        """One append: the events, and an outbox item per push in the same transaction."""
        version = self._channel_versions[channel]
        new_events: list[NewEvent] = []
        outbox: list[OutboxItem] = []
        for offset, event in enumerate(events, start=1):
            payload = _encoder.encode(event)
            new_events.append(NewEvent(type(event).__name__, payload))
            if isinstance(event, ChannelStockChanged):
                # The event's stream version makes the key unique and stable: a retried
                # delivery of this push carries the same key, a later push of the SKU a new one.
                key = f"stock/{channel}/{event.sku}/{version + offset}"
                outbox.append(OutboxItem(stock_push_target(channel), payload, key))
        reply = await self.store.submit(
            channel_stock_stream(channel), new_events, expected_version=version, outbox=outbox
        )
        self._channel_versions[channel] = version + len(events)
        return reply

    def _sync_lags(self) -> dict[str, float]:
        try:
            now = trio.current_time()
        except RuntimeError:
            # Scraped outside trio (a synchronous test helper): the age is unknown, not huge.
            now = None
        lags: dict[str, float] = {}
        for channel in self._channels:
            if not _syncs(channel):
                continue
            pending = self._pending.get(channel.name) or {}
            oldest = min((p.first_change_at for p in pending.values()), default=None)
            lags[channel.name] = 0.0 if oldest is None or now is None else max(now - oldest, 0.0)
        return lags


async def _outcome(pending: Reply[Appended]) -> Appended | Exception:
    """The store's answer to an append as a value, so the caller decides what a failure means."""
    try:
        return await pending.wait()
    except Exception as exc:  # VersionConflict, StoreUnavailable, RequestFailed
        return exc

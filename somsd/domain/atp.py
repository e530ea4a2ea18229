"""Available-to-promise: stock per SKU and location, reservations, and what channels see.

Per SKU and location the book holds *on hand* (from absolute stock reports), *reserved* (by
allocations) and *safety stock* (from config). ATP = on hand - reserved - safety. It is kept
signed inside the book, because a negative value tells an operator something (stock is below the
safety buffer, or reservations exceed what is physically there), and clamped at 0 per location in
everything a channel or the router sees: a negative count at one store must not hide units that
are on the shelf in another.

Decide, persist, apply. Every operation comes in two halves:
- a decision function (`receive_stock_report`, `reserve_stock`, `release_stock`, `ship_stock`,
  `reject_stock`) reads a `StockBook` and returns an event - a frozen, tagged Struct the
  inventory actor appends to the event log - or a `StockRefused` saying why not;
- `apply_stock_event` is the only function that changes a book.
The actor decides, awaits the commit, then applies, so the book never runs ahead of the log. At
start `rebuild_stock_book` folds the stored events into a fresh book; events therefore carry
every quantity explicitly ("release all" is resolved into lines at decision time) and applying
one never reads anything but the event and the book. Nothing here reads a clock: report times
and shipment times arrive as arguments.

The book is one mutable object owned by the inventory actor's task (no locks, no copies): at
100,000 SKUs x 50 locations a copy-on-write book would copy millions of entries per report.

Stock reports and our own movements. A report says "on hand was N as of T" and reflects every
movement its source booked up to T. A shipment or write-off we record at time t > T is therefore
not in it yet, so the book remembers such movements per SKU and location ("unconfirmed moves")
and on each report sets on hand = N + the moves after the report's as_of time. Without this, a
report taken before a shipment but delivered after it would put the shipped units back on sale.
A report older than the newest one applied for that SKU and location is ignored, and the
decision lists it so the actor can count it.

The converse is the caller's to rule out: a report applied while a shipment it already
reflects (dated at or before its as_of) is still unknown here counts those units missing twice -
gone from on hand and still reserved - so ATP reads low and the reservations look oversold until
the shipment arrives. Hand a count over only once the location's movements up to its as_of are
applied (`actors.location` reads the 3PL's feed past each count first); then ATP is exact at
every step, whatever else arrives early or late (tests/domain/test_atp_count_window.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Literal

import msgspec

__all__ = [
    "DEFAULT_DEBOUNCE",
    "MAX_ON_HAND",
    "WRITE_OFF_REASONS",
    "AvailabilityChange",
    "AvailabilitySnapshot",
    "ChannelStockPolicy",
    "DebouncePolicy",
    "DuePushes",
    "LevelSnapshot",
    "Oversold",
    "PendingPush",
    "RejectionReason",
    "Reservation",
    "ReservationRejected",
    "ReservationReleased",
    "SafetyStock",
    "Shortfall",
    "StaleCount",
    "StockBook",
    "StockBookSnapshot",
    "StockCount",
    "StockCounted",
    "StockEvent",
    "StockLine",
    "StockPosition",
    "StockRefused",
    "StockReport",
    "StockReportDecision",
    "StockReserved",
    "StockShipped",
    "affected_skus",
    "apply_stock_event",
    "availability_changes",
    "channel_availability",
    "due_pushes",
    "note_pending_push",
    "rebuild_stock_book",
    "receive_stock_report",
    "reject_stock",
    "release_stock",
    "reserve_stock",
    "ship_stock",
]

# A billion units of one SKU at one location is beyond any store or warehouse; a larger count
# is a sender's bug, and refusing it keeps every sum of counts inside SQLite's 64-bit integers.
MAX_ON_HAND = 10**9


# --------------------------------------------------------------------------------------------
# Values in


class StockLine(msgspec.Struct, frozen=True):
    """A quantity of one SKU: a line of a reservation, shipment, release or rejection."""

    sku: str
    quantity: int


class StockCount(msgspec.Struct, frozen=True, array_like=True):
    """One row of an absolute stock report. `array_like` because a full report of 100,000 SKUs
    is stored as one event, and `["MUG-1", 12]` is a third the size of the object form."""

    sku: str
    on_hand: int


class StockReport(msgspec.Struct, frozen=True):
    """An absolute stock report from an ERP, WMS or POS for one location.

    `on_hand` may be negative: ERPs such as SelectLine book negative stock, and the book keeps
    what the source says (ATP clamps it for channels). A later row for the same SKU wins.
    `complete=True` means the report lists everything at the location, so SKUs the book knows
    there but the report leaves out are counted as 0.
    """

    location: str
    as_of: datetime
    counts: tuple[StockCount, ...]
    complete: bool = False


class SafetyStock(msgspec.Struct, frozen=True):
    """Units held back from sale. Most specific wins: (SKU, location) -> SKU -> location -> 0."""

    location_defaults: dict[str, int] = msgspec.field(default_factory=dict)
    sku_overrides: dict[str, int] = msgspec.field(default_factory=dict)
    sku_location_overrides: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)

    def safety_stock_for(self, sku: str, location: str) -> int:
        """The safety stock for one SKU at one location."""
        per_location = self.sku_location_overrides.get(sku)
        if per_location is not None and location in per_location:
            return per_location[location]
        if sku in self.sku_overrides:
            return self.sku_overrides[sku]
        return self.location_defaults.get(location, 0)


RejectionReason = Literal["stock_missing", "damaged", "declined"]

# A store rejecting a line because the units are not there or not sellable also tells us on hand
# was wrong: write the units off so the next order does not go to the same empty shelf. A
# declined line (no staff, capacity) leaves on hand alone.
WRITE_OFF_REASONS: frozenset[RejectionReason] = frozenset({"stock_missing", "damaged"})


# --------------------------------------------------------------------------------------------
# Events: the only things that change a book. Tagged so one decoder reads the whole stream.


class StockCounted(msgspec.Struct, frozen=True, tag="stock_counted"):
    """A stock report's rows that were applied (stale rows are left out)."""

    location: str
    as_of: datetime
    counts: tuple[StockCount, ...]


class StockReserved(msgspec.Struct, frozen=True, tag="stock_reserved"):
    """All lines of a reservation at one location, taken together."""

    reservation_id: str
    location: str
    lines: tuple[StockLine, ...]


class ReservationReleased(msgspec.Struct, frozen=True, tag="reservation_released"):
    """Reserved units handed back (order cancelled, line re-routed)."""

    reservation_id: str
    location: str
    lines: tuple[StockLine, ...]


class StockShipped(msgspec.Struct, frozen=True, tag="stock_shipped"):
    """Reserved units left the location: reservation and on hand both go down."""

    reservation_id: str
    location: str
    lines: tuple[StockLine, ...]
    at: datetime


class ReservationRejected(msgspec.Struct, frozen=True, tag="reservation_rejected"):
    """A location refused reserved lines; `written_off` when the units are missing or damaged."""

    reservation_id: str
    location: str
    lines: tuple[StockLine, ...]
    reason: RejectionReason
    written_off: bool
    at: datetime


StockEvent = StockCounted | StockReserved | ReservationReleased | StockShipped | ReservationRejected


# --------------------------------------------------------------------------------------------
# Decisions that change nothing


class StaleCount(msgspec.Struct, frozen=True):
    """A report row ignored because a newer count for that SKU and location was applied."""

    sku: str
    reported_as_of: datetime
    newest_as_of: datetime


class Oversold(msgspec.Struct, frozen=True):
    """After a report, reservations exceed what is physically there; the actor re-routes."""

    sku: str
    location: str
    reserved: int
    on_hand: int


class StockReportDecision(msgspec.Struct, frozen=True):
    """What a report does: the event to store (None if every row was stale), the stale rows
    (to count), and the reservations the new counts no longer cover."""

    location: str
    counted: StockCounted | None
    stale: tuple[StaleCount, ...]
    oversold: tuple[Oversold, ...]


class Shortfall(msgspec.Struct, frozen=True):
    """One line a reservation could not take: `available` is the location's ATP (>= 0)."""

    sku: str
    requested: int
    available: int


StockOperation = Literal["reserve", "release", "ship", "reject"]
RefusalReason = Literal[
    "insufficient_stock",  # reserve: ATP at the location is below a line's quantity
    "duplicate_reservation",  # reserve: the id is already open (a redelivered request)
    "unknown_reservation",  # release/ship/reject: no open reservation with this id
    "exceeds_reservation",  # release/ship/reject: more units than the reservation holds
    "invalid_lines",  # no lines, or a quantity that is not positive
]


class StockRefused(msgspec.Struct, frozen=True, tag="stock_refused"):
    """An operation that did not happen, with its reason; the book is unchanged."""

    operation: StockOperation
    reservation_id: str
    reason: RefusalReason
    shortfalls: tuple[Shortfall, ...] = ()


# --------------------------------------------------------------------------------------------
# Read views


class StockPosition(msgspec.Struct, frozen=True):
    """One SKU at one location, as `GET /v1/inventory/{sku}` shows it. `atp` is signed."""

    sku: str
    location: str
    on_hand: int
    reserved: int
    safety: int
    atp: int
    as_of: datetime | None


class Reservation(msgspec.Struct, frozen=True):
    """What an open reservation still holds."""

    reservation_id: str
    location: str
    lines: tuple[StockLine, ...]


class LevelSnapshot(msgspec.Struct, frozen=True):
    """A level's full state, for comparing books (replay == incremental) and for projections."""

    on_hand: int
    reserved: int
    safety: int
    as_of: datetime | None
    unconfirmed_moves: tuple[tuple[datetime, int], ...]


class StockBookSnapshot(msgspec.Struct, frozen=True):
    """A whole book as plain values: {sku: {location: level}} and open reservations."""

    levels: dict[str, dict[str, LevelSnapshot]]
    reservations: dict[str, Reservation]


# --------------------------------------------------------------------------------------------
# The book

# Unconfirmed moves kept per SKU and location before the oldest are merged. A location that never
# reports would otherwise grow one entry per shipment forever. Merging two moves into one at the
# later time is conservative: a report dated between them then has both subtracted, so on hand
# errs low (we sell less) and never high (we never oversell). 256 covers weeks of shipments of a
# fast mover between the daily full reports ERPs send.
_MAX_UNCONFIRMED_MOVES = 256


class _Level:
    """Mutable counters for one SKU at one location. Safety is resolved once, at creation."""

    __slots__ = ("as_of", "moves", "on_hand", "reserved", "safety")

    def __init__(self, safety: int) -> None:
        self.on_hand = 0
        self.reserved = 0
        self.safety = safety
        self.as_of: datetime | None = None
        # (time, signed quantity) of shipments and write-offs no report has confirmed yet.
        self.moves: list[tuple[datetime, int]] | None = None


class _OpenReservation:
    __slots__ = ("lines", "location")

    def __init__(self, location: str, lines: dict[str, int]) -> None:
        self.location = location
        self.lines = lines


class StockBook:
    """Stock per SKU and location plus open reservations, owned by one task.

    Laid out per SKU - {sku: {location: level}} - because both hot paths ask per SKU: routing
    wants "ATP of this SKU at every location", availability wants "sum over this channel's
    locations". Only locations that ever reported or reserved a SKU have a level, so a store
    carrying 2,000 of 100,000 SKUs costs 2,000 entries.
    """

    __slots__ = ("_levels", "_reservations", "_safety")

    def __init__(self, safety: SafetyStock | None = None) -> None:
        self._safety = safety if safety is not None else SafetyStock()
        self._levels: dict[str, dict[str, _Level]] = {}
        self._reservations: dict[str, _OpenReservation] = {}

    @property
    def safety(self) -> SafetyStock:
        return self._safety

    def change_safety_stock(self, safety: SafetyStock) -> None:
        """Re-resolve every level's safety stock after a config reload.

        Safety stock is config, not an event, so a rebuilt book gets the current config's values.
        """
        self._safety = safety
        for sku, ledger in self._levels.items():
            for location, level in ledger.items():
                level.safety = safety.safety_stock_for(sku, location)

    def skus(self) -> Iterable[str]:
        """Every SKU the book has a level for."""
        return self._levels.keys()

    def atp_for(self, sku: str, location: str) -> int:
        """Signed ATP of one SKU at one location: negative means below safety or oversold."""
        level = self._levels.get(sku, {}).get(location)
        if level is None:
            return -self._safety.safety_stock_for(sku, location)
        return level.on_hand - level.reserved - level.safety

    def available_by_location(self, sku: str) -> dict[str, int]:
        """{location: ATP} for locations with ATP > 0 - the router's view of one SKU."""
        ledger = self._levels.get(sku)
        if not ledger:
            return {}
        available: dict[str, int] = {}
        for location, level in ledger.items():
            atp = level.on_hand - level.reserved - level.safety
            if atp > 0:
                available[location] = atp
        return available

    def position(self, sku: str, location: str) -> StockPosition:
        """On hand, reserved, safety and signed ATP of one SKU at one location."""
        level = self._levels.get(sku, {}).get(location)
        if level is None:
            safety = self._safety.safety_stock_for(sku, location)
            return StockPosition(sku, location, 0, 0, safety, -safety, None)
        return StockPosition(
            sku,
            location,
            level.on_hand,
            level.reserved,
            level.safety,
            level.on_hand - level.reserved - level.safety,
            level.as_of,
        )

    def positions(self, sku: str) -> tuple[StockPosition, ...]:
        """Every location's position for one SKU, sorted by location name."""
        return tuple(self.position(sku, location) for location in sorted(self._levels.get(sku, ())))

    def reservation(self, reservation_id: str) -> Reservation | None:
        """An open reservation, or None once it was fully released, shipped or rejected."""
        held = self._reservations.get(reservation_id)
        if held is None:
            return None
        return Reservation(reservation_id, held.location, _lines_of(held.lines))

    def snapshot(self) -> StockBookSnapshot:
        """The whole book as values; two books are equal iff their snapshots are."""
        return StockBookSnapshot(
            levels={
                sku: {
                    location: LevelSnapshot(
                        level.on_hand,
                        level.reserved,
                        level.safety,
                        level.as_of,
                        tuple(level.moves or ()),
                    )
                    for location, level in ledger.items()
                }
                for sku, ledger in self._levels.items()
            },
            reservations={
                rid: Reservation(rid, held.location, _lines_of(held.lines))
                for rid, held in self._reservations.items()
            },
        )

    # Used by the decision functions and apply_stock_event in this module only.

    def _level(self, sku: str, location: str) -> _Level | None:
        ledger = self._levels.get(sku)
        return None if ledger is None else ledger.get(location)

    def _level_for_update(self, sku: str, location: str) -> _Level:
        ledger = self._levels.get(sku)
        if ledger is None:
            ledger = self._levels[sku] = {}
        level = ledger.get(location)
        if level is None:
            level = ledger[location] = _Level(self._safety.safety_stock_for(sku, location))
        return level


def _lines_of(quantities: Mapping[str, int]) -> tuple[StockLine, ...]:
    return tuple(StockLine(sku, quantity) for sku, quantity in quantities.items())


def _require_aware(when: datetime, what: str) -> None:
    # Naive and aware datetimes can not be compared, and a naive one is ambiguous across DST;
    # failing here names the caller's mistake instead of a TypeError deep in a comparison.
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware; pass e.g. datetime.now(UTC)")


def _on_hand_after_count(level: _Level | None, count: int, as_of: datetime) -> int:
    """On hand once a count as of `as_of` is applied: the count plus moves it has not seen."""
    if level is None or not level.moves:
        return count
    return count + sum(quantity for at, quantity in level.moves if at > as_of)


# --------------------------------------------------------------------------------------------
# Decisions


def receive_stock_report(book: StockBook, report: StockReport) -> StockReportDecision:
    """Split a report into rows to apply and stale rows, and flag what it leaves oversold."""
    _require_aware(report.as_of, "StockReport.as_of")
    for index, row in enumerate(report.counts):
        # Magnitude only: a negative count from an ERP is kept (channels then see zero).
        if not -MAX_ON_HAND <= row.on_hand <= MAX_ON_HAND:
            raise ValueError(
                f"counts[{index}].on_hand must be within ±{MAX_ON_HAND}, not {row.on_hand}"
            )
    location, as_of = report.location, report.as_of
    latest = {count.sku: count.on_hand for count in report.counts}  # a later row for a SKU wins
    if report.complete:
        for sku, ledger in book._levels.items():
            if location in ledger and sku not in latest:
                latest[sku] = 0
    stale: list[StaleCount] = []
    oversold: list[Oversold] = []
    for sku, on_hand in latest.items():
        level = book._level(sku, location)
        if level is None:
            continue
        if level.as_of is not None and as_of < level.as_of:
            stale.append(StaleCount(sku, as_of, level.as_of))
        elif level.reserved > 0:
            after = _on_hand_after_count(level, on_hand, as_of)
            if level.reserved > after:
                oversold.append(Oversold(sku, location, level.reserved, after))
    if not stale and len(latest) == len(report.counts):
        counts = report.counts  # the common case: store the report's rows as they came
    else:
        stale_skus = {row.sku for row in stale}
        counts = tuple(
            StockCount(sku, on_hand) for sku, on_hand in latest.items() if sku not in stale_skus
        )
    counted = StockCounted(location, as_of, counts) if counts else None
    return StockReportDecision(location, counted, tuple(stale), tuple(oversold))


def _merge_lines(lines: Iterable[StockLine]) -> dict[str, int] | None:
    """Sum quantities per SKU; None if there are no lines or any quantity is not positive.

    Merging matters for correctness: two lines of the same SKU must be checked against ATP
    together, or each would pass alone and the pair would take the last unit twice.
    """
    merged: dict[str, int] = {}
    for line in lines:
        if line.quantity <= 0:
            return None
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    return merged or None


def reserve_stock(
    book: StockBook, reservation_id: str, location: str, lines: Sequence[StockLine]
) -> StockReserved | StockRefused:
    """All lines at one location, or none: refused if any line exceeds the location's ATP.

    Decisions are applied one at a time by the owning actor before the next is made, so checking
    ATP here and applying the event is what keeps two reservations from taking the last unit.
    """
    if reservation_id in book._reservations:
        return StockRefused("reserve", reservation_id, "duplicate_reservation")
    merged = _merge_lines(lines)
    if merged is None:
        return StockRefused("reserve", reservation_id, "invalid_lines")
    shortfalls = []
    for sku, quantity in merged.items():
        atp = book.atp_for(sku, location)
        if atp < quantity:
            shortfalls.append(Shortfall(sku, quantity, max(atp, 0)))
    if shortfalls:
        return StockRefused("reserve", reservation_id, "insufficient_stock", tuple(shortfalls))
    return StockReserved(reservation_id, location, _lines_of(merged))


def _resolve_reserved_lines(
    book: StockBook,
    operation: StockOperation,
    reservation_id: str,
    lines: Sequence[StockLine] | None,
) -> tuple[str, tuple[StockLine, ...]] | StockRefused:
    """(location, explicit lines) for an operation on part or all (None) of a reservation."""
    held = book._reservations.get(reservation_id)
    if held is None:
        return StockRefused(operation, reservation_id, "unknown_reservation")
    if lines is None:
        return held.location, _lines_of(held.lines)
    merged = _merge_lines(lines)
    if merged is None:
        return StockRefused(operation, reservation_id, "invalid_lines")
    over = tuple(
        Shortfall(sku, quantity, held.lines.get(sku, 0))
        for sku, quantity in merged.items()
        if quantity > held.lines.get(sku, 0)
    )
    if over:
        return StockRefused(operation, reservation_id, "exceeds_reservation", over)
    return held.location, _lines_of(merged)


def release_stock(
    book: StockBook, reservation_id: str, lines: Sequence[StockLine] | None = None
) -> ReservationReleased | StockRefused:
    """Hand back some lines of a reservation, or all of it (`lines=None`)."""
    resolved = _resolve_reserved_lines(book, "release", reservation_id, lines)
    if isinstance(resolved, StockRefused):
        return resolved
    location, explicit = resolved
    return ReservationReleased(reservation_id, location, explicit)


def ship_stock(
    book: StockBook, reservation_id: str, at: datetime, lines: Sequence[StockLine] | None = None
) -> StockShipped | StockRefused:
    """Reserved units shipped at `at` (the location's time, not ours): both counters go down."""
    _require_aware(at, "ship_stock(at=...)")
    resolved = _resolve_reserved_lines(book, "ship", reservation_id, lines)
    if isinstance(resolved, StockRefused):
        return resolved
    location, explicit = resolved
    return StockShipped(reservation_id, location, explicit, at)


def reject_stock(
    book: StockBook,
    reservation_id: str,
    reason: RejectionReason,
    at: datetime,
    lines: Sequence[StockLine] | None = None,
) -> ReservationRejected | StockRefused:
    """A location refuses reserved lines: release them, and write them off if missing/damaged."""
    _require_aware(at, "reject_stock(at=...)")
    resolved = _resolve_reserved_lines(book, "reject", reservation_id, lines)
    if isinstance(resolved, StockRefused):
        return resolved
    location, explicit = resolved
    return ReservationRejected(
        reservation_id, location, explicit, reason, reason in WRITE_OFF_REASONS, at
    )


# --------------------------------------------------------------------------------------------
# Apply


def _record_move(level: _Level, at: datetime, quantity: int) -> None:
    """Take a shipment or write-off off on hand unless the latest count already includes it."""
    if level.as_of is not None and at <= level.as_of:
        return  # the count dated at or after this move already reflects it
    level.on_hand += quantity
    moves = level.moves
    if moves is None:
        level.moves = [(at, quantity)]
        return
    moves.append((at, quantity))
    if len(moves) > _MAX_UNCONFIRMED_MOVES:
        moves.sort(key=lambda move: move[0])
        (_, first), (second_at, second) = moves[0], moves[1]
        moves[0:2] = [(second_at, first + second)]


def _take_from_reservation(
    book: StockBook, reservation_id: str, lines: Iterable[StockLine]
) -> None:
    held = book._reservations[reservation_id]
    for line in lines:
        remaining = held.lines[line.sku] - line.quantity
        if remaining < 0:
            raise ValueError(
                f"event log: reservation {reservation_id!r} settles {line.quantity} x "
                f"{line.sku!r} but holds {held.lines[line.sku]}; the log is inconsistent"
            )
        if remaining:
            held.lines[line.sku] = remaining
        else:
            del held.lines[line.sku]
        book._level_for_update(line.sku, held.location).reserved -= line.quantity
    if not held.lines:
        del book._reservations[reservation_id]


def apply_stock_event(book: StockBook, event: StockEvent) -> None:
    """Apply one stored event. The only function that mutates a book.

    Events come from the decision functions above, which checked them against the same book,
    so an event that no longer fits is a broken log, and applying it raises (KeyError for an
    unknown reservation or SKU, ValueError for a reservation opened twice or over-settled)
    rather than guessing.
    """
    match event:
        case StockCounted(location=location, as_of=as_of, counts=counts):
            for count in counts:
                level = book._level_for_update(count.sku, location)
                if level.as_of is not None and as_of < level.as_of:
                    continue  # stale; the decision left it out, this keeps replay idempotent
                if level.moves:
                    level.moves = [move for move in level.moves if move[0] > as_of] or None
                level.as_of = as_of
                level.on_hand = _on_hand_after_count(level, count.on_hand, as_of)
        case StockReserved(reservation_id=rid, location=location, lines=lines):
            if rid in book._reservations:
                raise ValueError(f"event log: reservation {rid!r} is opened twice")
            book._reservations[rid] = _OpenReservation(
                location, {line.sku: line.quantity for line in lines}
            )
            for line in lines:
                book._level_for_update(line.sku, location).reserved += line.quantity
        case ReservationReleased(reservation_id=rid, lines=lines):
            _take_from_reservation(book, rid, lines)
        case StockShipped(reservation_id=rid, location=location, lines=lines, at=at):
            _take_from_reservation(book, rid, lines)
            for line in lines:
                _record_move(book._level_for_update(line.sku, location), at, -line.quantity)
        case ReservationRejected(
            reservation_id=rid, location=location, lines=lines, written_off=written_off, at=at
        ):
            _take_from_reservation(book, rid, lines)
            if written_off:
                for line in lines:
                    _record_move(book._level_for_update(line.sku, location), at, -line.quantity)


def affected_skus(event: StockEvent) -> frozenset[str]:
    """SKUs whose ATP an event may change: recompute availability for these only."""
    if isinstance(event, StockCounted):
        return frozenset(count.sku for count in event.counts)
    return frozenset(line.sku for line in event.lines)


def rebuild_stock_book(
    events: Iterable[StockEvent], safety: SafetyStock | None = None
) -> StockBook:
    """A book from its event history, as the inventory actor does at start."""
    book = StockBook(safety)
    for event in events:
        apply_stock_event(book, event)
    return book


# --------------------------------------------------------------------------------------------
# Channel availability


class ChannelStockPolicy(msgspec.Struct, frozen=True):
    """The stock-related part of a `[[channel]]`: whose stock it sells and how it shows it."""

    name: str
    locations: frozenset[str]
    hide_sold_out: bool = True
    low_stock_threshold: int | None = None


# {channel: {sku: units the channel may sell}}
AvailabilitySnapshot = dict[str, dict[str, int]]


def channel_availability(
    book: StockBook,
    channels: Sequence[ChannelStockPolicy],
    skus: Iterable[str] | None = None,
) -> AvailabilitySnapshot:
    """Units each channel may sell per SKU: the sum of positive ATP over its locations.

    `skus=None` means every SKU in the book (after a full report); pass `affected_skus(event)`
    after a single event. Clamping is per location, before summing (see module docstring).
    """
    # Each location contributes to the channels it serves; precompute that once per call so the
    # per-level work is one dict lookup and one add per serving channel.
    serving: dict[str, list[int]] = {}
    for index, channel in enumerate(channels):
        for location in channel.locations:
            serving.setdefault(location, []).append(index)
    results: list[dict[str, int]] = [{} for _ in channels]
    levels = book._levels
    wanted = levels.keys() if skus is None else skus
    if len(channels) == 1:
        # Hot path of the benchmark's full recompute: one channel, no per-SKU total list.
        (result,) = results
        for sku in wanted:
            total = 0
            for location, level in levels.get(sku, {}).items():
                if location in serving:
                    atp = level.on_hand - level.reserved - level.safety
                    if atp > 0:
                        total += atp
            result[sku] = total
        return {channels[0].name: result}
    for sku in wanted:
        totals = [0] * len(channels)
        for location, level in levels.get(sku, {}).items():
            indices = serving.get(location)
            if indices is not None:
                atp = level.on_hand - level.reserved - level.safety
                if atp > 0:
                    for index in indices:
                        totals[index] += atp
        for index, total in enumerate(totals):
            results[index][sku] = total
    return {channel.name: result for channel, result in zip(channels, results, strict=True)}


Transition = Literal["sold_out", "back_in_stock", "low_stock", "quantity"]
Visibility = Literal["hide", "show"]


class AvailabilityChange(msgspec.Struct, frozen=True):
    """A channel's sellable quantity of one SKU changed.

    `transition` classifies it; `visibility` says what to do with the listing: hide or show
    when the channel has `hide_sold_out`, None otherwise (the pushed quantity 0 makes the shop
    disable buying but keep the page).
    """

    channel: str
    sku: str
    before: int
    after: int
    transition: Transition
    visibility: Visibility | None


def _classify(before: int, after: int, threshold: int | None) -> Transition:
    if after == 0:
        return "sold_out"
    if before == 0:
        return "back_in_stock"
    if threshold is not None and after <= threshold < before:
        return "low_stock"
    return "quantity"


def availability_changes(
    before: AvailabilitySnapshot,
    after: AvailabilitySnapshot,
    channels: Sequence[ChannelStockPolicy],
) -> list[AvailabilityChange]:
    """Every (channel, SKU) whose quantity differs, with its transition and listing decision.

    A SKU missing from a snapshot counts as 0, so a SKU seen for the first time with stock is
    "back in stock" (show it) and one dropped from the book is "sold out".
    """
    changes: list[AvailabilityChange] = []
    for channel in channels:
        old = before.get(channel.name, {})
        new = after.get(channel.name, {})
        threshold = channel.low_stock_threshold
        hides = channel.hide_sold_out
        for sku, now in new.items():
            was = old.get(sku, 0)
            if now != was:
                transition = _classify(was, now, threshold)
                changes.append(
                    AvailabilityChange(
                        channel.name, sku, was, now, transition, _visibility(transition, hides)
                    )
                )
        for sku, was in old.items():
            if was and sku not in new:
                changes.append(
                    AvailabilityChange(
                        channel.name, sku, was, 0, "sold_out", _visibility("sold_out", hides)
                    )
                )
    return changes


def _visibility(transition: Transition, hide_sold_out: bool) -> Visibility | None:
    if not hide_sold_out:
        return None
    if transition == "sold_out":
        return "hide"
    if transition == "back_in_stock":
        return "show"
    return None


# --------------------------------------------------------------------------------------------
# Debouncing stock pushes


class DebouncePolicy(msgspec.Struct, frozen=True):
    """When a changed SKU's new quantity is pushed to a channel.

    `quiet_seconds`: push once the SKU has not changed for this long, so a burst (a full report,
    an order touching the SKU in several lines, a wave of orders) becomes one push.
    `max_delay_seconds`: push at the latest this long after the first unpushed change, so a SKU
    that never stops changing (a flash sale) is still pushed regularly.
    Urgent changes (sold out) skip the wait: every second a sold-out SKU stays on sale is a
    chance to oversell.
    """

    quiet_seconds: float
    max_delay_seconds: float


# 2 s: a full stock report or a multi-line order changes its SKUs within a second on the
# benchmark machine, so 2 s of quiet gathers the burst. 30 s: matches the contract's default
# channel `poll_interval`, so a shop's stock is never staler than its order intake cadence.
DEFAULT_DEBOUNCE = DebouncePolicy(quiet_seconds=2.0, max_delay_seconds=30.0)


class PendingPush(msgspec.Struct, frozen=True):
    """A SKU with changes not yet pushed. Times are seconds on any monotonic clock."""

    first_change_at: float
    last_change_at: float
    urgent: bool


class DuePushes(msgspec.Struct, frozen=True):
    """SKUs to push now, and when to look again (None when nothing else is pending)."""

    due: tuple[str, ...]
    next_due_at: float | None


def note_pending_push(pending: PendingPush | None, at: float, *, urgent: bool) -> PendingPush:
    """Fold one more change of a SKU into what is pending for it."""
    if pending is None:
        return PendingPush(at, at, urgent)
    return PendingPush(
        pending.first_change_at, max(pending.last_change_at, at), pending.urgent or urgent
    )


def due_pushes(
    pending: Mapping[str, PendingPush], now: float, policy: DebouncePolicy = DEFAULT_DEBOUNCE
) -> DuePushes:
    """Which pending SKUs to push at `now`, and the earliest time another one falls due.

    The caller removes the due SKUs from its pending map, pushes their current quantity (not
    the quantity at the time of the change: the last value is the only one that matters) and
    sleeps until `next_due_at`.
    """
    due: list[str] = []
    next_due_at: float | None = None
    for sku, push in pending.items():
        if push.urgent:
            due.append(sku)
            continue
        due_at = min(
            push.last_change_at + policy.quiet_seconds,
            push.first_change_at + policy.max_delay_seconds,
        )
        if due_at <= now:
            due.append(sku)
        elif next_due_at is None or due_at < next_due_at:
            next_due_at = due_at
    return DuePushes(tuple(due), next_due_at)

"""Stock levels: on hand, reserved and the newest count per SKU and location, from the log.

The inventory actor keeps the live `StockBook` in memory and rebuilds it from the `inventory`
stream at start; this projection keeps the same numbers in tables, in the same transaction as
the events, so they can be read without the actor: by `somsd db verify` (which replays the log
into fresh tables and compares), by the CLI on a stopped daemon, and by reports. Open
reservations are kept too, so a reservation left open by a lost order can be found with SQL.

The arithmetic mirrors `somsd.domain.atp.apply_stock_event`, including the "unconfirmed
moves" (shipments and write-offs a later count may or may not include, see the atp module
docstring) and the way the oldest of them are merged, because the point of the table is to
equal the book; tests replay the same events into both and compare. Safety stock and ATP are
not stored: safety stock is config, not an event, so ATP needs the current config to compute.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

# Shared on purpose: the projection must merge old moves exactly when the book does, or
# `somsd db verify` would report drift that is not there. (atp keeps the cap private; if it is
# ever exported, import the public name.)
from somsd.domain.atp import _MAX_UNCONFIRMED_MOVES as MAX_UNCONFIRMED_MOVES
from somsd.domain.atp import (
    ReservationRejected,
    ReservationReleased,
    StockCounted,
    StockEvent,
    StockLine,
    StockReserved,
    StockShipped,
)
from somsd.store import Connection, StoredEvent

__all__ = [
    "INVENTORY_STREAM",
    "StockLevelRow",
    "StockLevels",
    "decode_stock_event",
    "encode_stock_event",
    "fetch_levels",
    "fetch_reserved_lines",
]

# The one stream of every stock change: one stream, so its version orders all decisions, and
# the inventory actor's optimistic-concurrency check covers the whole book.
INVENTORY_STREAM = "inventory"

# Deterministic: sets (an order's shipment ids) and dict keys come out sorted, so a replay in
# another process (`somsd db verify`, other hash seed) writes byte-identical rows.
_encoder = msgspec.json.Encoder(order="deterministic")
_decoder: msgspec.json.Decoder[StockEvent] = msgspec.json.Decoder(StockEvent)
_moves_decoder = msgspec.json.Decoder(list[tuple[datetime, int]])


def encode_stock_event(event: StockEvent) -> bytes:
    return _encoder.encode(event)


def decode_stock_event(payload: bytes) -> StockEvent:
    return _decoder.decode(payload)


def _utc_text(at: datetime) -> str:
    # Fixed format in UTC, so text order is time order for anyone sorting in SQL.
    return at.astimezone(UTC).isoformat(timespec="microseconds")


class _Row:
    """One level while an event is applied: read, changed, written back."""

    __slots__ = ("as_of", "moves", "on_hand", "reserved")

    def __init__(
        self, on_hand: int, reserved: int, as_of: datetime | None, moves: list[tuple[datetime, int]]
    ) -> None:
        self.on_hand = on_hand
        self.reserved = reserved
        self.as_of = as_of
        self.moves = moves


class StockLevels:
    """Projection of the `inventory` stream into `stock_levels` and `stock_reservations`."""

    name = "stock"
    tables: Sequence[str] = ("stock_levels", "stock_reservations")
    ddl: Sequence[str] = (
        """CREATE TABLE stock_levels (
            sku TEXT NOT NULL,
            location TEXT NOT NULL,
            on_hand INTEGER NOT NULL,      -- may be negative: ERPs book negative stock
            reserved INTEGER NOT NULL,
            as_of TEXT,                    -- newest count applied, UTC; NULL: never counted
            moves TEXT NOT NULL,           -- JSON [[at, signed quantity], ...] not yet counted
            PRIMARY KEY (sku, location)
        ) WITHOUT ROWID""",
        """CREATE TABLE stock_reservations (
            reservation_id TEXT NOT NULL,
            sku TEXT NOT NULL,
            location TEXT NOT NULL,
            quantity INTEGER NOT NULL,
            PRIMARY KEY (reservation_id, sku)
        ) WITHOUT ROWID""",
        "CREATE INDEX stock_reservations_by_sku ON stock_reservations (sku, location)",
    )

    def apply(self, conn: Connection, stored: StoredEvent) -> None:
        if stored.stream != INVENTORY_STREAM:
            return
        match decode_stock_event(stored.payload):
            case StockCounted(location=location, as_of=as_of, counts=counts):
                # Row by row, like the book: a report that names a SKU twice ends with the
                # later row, exactly as applying the rows in order gives.
                for count in counts:
                    row = _load(conn, count.sku, location)
                    if row.as_of is not None and as_of < row.as_of:
                        continue  # stale; the decision left it out, this keeps replays equal
                    row.moves = [move for move in row.moves if move[0] > as_of]
                    row.as_of = as_of
                    row.on_hand = count.on_hand + sum(quantity for _, quantity in row.moves)
                    _save(conn, count.sku, location, row)
            case StockReserved(reservation_id=rid, location=location, lines=lines):
                for line in lines:
                    conn.execute(
                        "INSERT INTO stock_reservations VALUES (?, ?, ?, ?)",
                        (rid, line.sku, location, line.quantity),
                    )
                    row = _load(conn, line.sku, location)
                    row.reserved += line.quantity
                    _save(conn, line.sku, location, row)
            case ReservationReleased(reservation_id=rid, location=location, lines=lines):
                _settle(conn, rid, location, lines, None)
            case StockShipped(reservation_id=rid, location=location, lines=lines, at=at):
                _settle(conn, rid, location, lines, at)
            case ReservationRejected(
                reservation_id=rid, location=location, lines=lines, written_off=off, at=at
            ):
                _settle(conn, rid, location, lines, at if off else None)


def _load(conn: Connection, sku: str, location: str) -> _Row:
    found = conn.execute(
        "SELECT on_hand, reserved, as_of, moves FROM stock_levels WHERE sku = ? AND location = ?",
        (sku, location),
    ).fetchone()
    if found is None:
        return _Row(0, 0, None, [])
    on_hand, reserved, as_of, moves = found
    return _Row(
        on_hand,
        reserved,
        None if as_of is None else datetime.fromisoformat(as_of),
        _moves_decoder.decode(moves),
    )


def _save(conn: Connection, sku: str, location: str, row: _Row) -> None:
    conn.execute(
        "INSERT INTO stock_levels VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (sku, location) "
        "DO UPDATE SET on_hand = ?3, reserved = ?4, as_of = ?5, moves = ?6",
        (
            sku,
            location,
            row.on_hand,
            row.reserved,
            None if row.as_of is None else _utc_text(row.as_of),
            # Text, as the column is declared: PostgreSQL would keep bytes as their `\x..` hex
            # spelling in a TEXT column (SQLite keeps either).
            _encoder.encode([(_utc_text(at), quantity) for at, quantity in row.moves]).decode(),
        ),
    )


def _settle(
    conn: Connection,
    reservation_id: str,
    location: str,
    lines: Sequence[StockLine],
    moved_at: datetime | None,
) -> None:
    """Take lines off a reservation; with `moved_at`, the units also left on hand then."""
    for line in lines:
        held = conn.execute(
            "SELECT quantity FROM stock_reservations WHERE reservation_id = ? AND sku = ?",
            (reservation_id, line.sku),
        ).fetchone()
        if held is None or held[0] < line.quantity:
            # As in the book: an event that does not fit is a broken log; refuse the append.
            raise ValueError(
                f"inventory: reservation {reservation_id!r} settles {line.quantity} x "
                f"{line.sku!r} but holds {0 if held is None else held[0]}"
            )
        if held[0] == line.quantity:
            conn.execute(
                "DELETE FROM stock_reservations WHERE reservation_id = ? AND sku = ?",
                (reservation_id, line.sku),
            )
        else:
            conn.execute(
                "UPDATE stock_reservations SET quantity = quantity - ? "
                "WHERE reservation_id = ? AND sku = ?",
                (line.quantity, reservation_id, line.sku),
            )
        row = _load(conn, line.sku, location)
        row.reserved -= line.quantity
        if moved_at is not None:
            _record_move(row, moved_at, -line.quantity)
        _save(conn, line.sku, location, row)


def _record_move(row: _Row, at: datetime, quantity: int) -> None:
    """A shipment or write-off: off on hand, unless the newest count already includes it."""
    if row.as_of is not None and at <= row.as_of:
        return
    row.on_hand += quantity
    row.moves.append((at, quantity))
    if len(row.moves) > MAX_UNCONFIRMED_MOVES:
        # The book's merge: the two oldest become one at the later time (errs low, never high).
        row.moves.sort(key=lambda move: move[0])
        (_, first), (second_at, second) = row.moves[0], row.moves[1]
        row.moves[0:2] = [(second_at, first + second)]


# -- queries (run by `EventStore.read` on a reader connection) ------------------------------


class StockLevelRow(msgspec.Struct, frozen=True):
    """One SKU at one location as the projection holds it (no safety stock: that is config)."""

    sku: str
    location: str
    on_hand: int
    reserved: int
    as_of: datetime | None


def fetch_levels(conn: Connection, sku: str | None = None) -> list[StockLevelRow]:
    """Every level, or one SKU's, ordered by SKU and location."""
    query = "SELECT sku, location, on_hand, reserved, as_of FROM stock_levels"
    params: tuple[str, ...] = ()
    if sku is not None:
        query += " WHERE sku = ?"
        params = (sku,)
    return [
        StockLevelRow(
            sku,
            location,
            on_hand,
            reserved,
            None if as_of is None else datetime.fromisoformat(as_of),
        )
        for sku, location, on_hand, reserved, as_of in conn.execute(
            query + " ORDER BY sku, location", params
        )
    ]


def fetch_reserved_lines(conn: Connection) -> dict[str, dict[str, int]]:
    """Open reservations as {reservation_id: {sku: quantity}}."""
    reserved: dict[str, dict[str, int]] = {}
    for rid, sku, quantity in conn.execute(
        "SELECT reservation_id, sku, quantity FROM stock_reservations ORDER BY reservation_id, sku"
    ):
        reserved.setdefault(rid, {})[sku] = quantity
    return reserved

"""Stamping projections: facts taken from the log's order inside the appending transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import msgspec
import pytest
import trio

from somsd.store import EventStore, NewEvent, StoredEvent, VersionConflict, verify_database


class Ticket(msgspec.Struct, frozen=True):
    number: int = 0  # 0 until stamped


class TicketNumbers:
    """Numbers every `ticket` event 1, 2, 3, ... from a counter kept in its own table."""

    name = "ticket-numbers"
    ddl: Sequence[str] = ("CREATE TABLE ticket_counter (last INTEGER NOT NULL)",)
    tables: Sequence[str] = ("ticket_counter",)

    def stamp(
        self, conn: sqlite3.Connection, stream: str, events: Sequence[NewEvent]
    ) -> Sequence[NewEvent]:
        row = conn.execute("SELECT last FROM ticket_counter").fetchone()
        last = row[0] if row else 0
        stamped = []
        for event in events:
            if event.type == "ticket":
                last += 1
                event = NewEvent(event.type, msgspec.json.encode(Ticket(last)), event.metadata)  # noqa: PLW2901
            stamped.append(event)
        return stamped

    def apply(self, conn: sqlite3.Connection, event: StoredEvent) -> None:
        if event.type != "ticket":
            return
        number = event.decode(Ticket).number
        if conn.execute("UPDATE ticket_counter SET last = ?", (number,)).rowcount == 0:
            conn.execute("INSERT INTO ticket_counter VALUES (?)", (number,))


TICKET = NewEvent("ticket", msgspec.json.encode(Ticket()))


async def test_numbers_are_gapless_when_a_request_in_the_batch_fails(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    """A request rolled back to its savepoint takes its number back; the next one reuses it."""
    store = EventStore(tmp_path / "db", [TicketNumbers()])
    await nursery.start(store.run)
    await store.append("s-1", [TICKET])
    replies = [
        await store.submit("s-2", [TICKET, TICKET]),
        await store.submit("s-1", [TICKET], expected_version=0),  # conflicts: s-1 is at 1
        await store.submit("s-3", [TICKET]),
    ]
    first = await replies[0].wait()
    with pytest.raises(VersionConflict):
        await replies[1].wait()
    third = await replies[2].wait()
    numbers = [msgspec.json.decode(e.payload, type=Ticket).number for e in first.stamped]
    assert numbers == [2, 3]
    assert msgspec.json.decode(third.stamped[0].payload, type=Ticket).number == 4
    stored = await store.read_all()
    assert [s.decode(Ticket).number for s in stored] == [1, 2, 3, 4]
    assert verify_database(tmp_path / "db", [TicketNumbers()]) == []


async def test_unchanged_events_report_no_stamped_copies(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    store = EventStore(tmp_path / "db", [TicketNumbers()])
    await nursery.start(store.run)
    appended = await store.append("s", [NewEvent("other", b"{}")])
    assert appended.stamped == ()

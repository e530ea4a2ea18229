"""Projection documents stored deflated: read back exactly, and verify accepts older plain rows."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import msgspec
import trio
from hypothesis import given
from hypothesis import strategies as st

from somsd.projections._blob import pack, unpack
from somsd.store import EventStore, StoredEvent, verify_database
from tests.store.helpers import event, query

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=40,
)


@given(json_values)
def test_a_packed_document_reads_back_exactly(value: object) -> None:
    document = msgspec.json.encode(value)
    assert unpack(pack(document)) == document
    assert unpack(document) == document  # a plain row from an older somsd reads the same


def test_a_large_document_is_stored_in_a_third_of_its_size() -> None:
    document = msgspec.json.encode(
        [{"location": f"wh-{n}", "score": n / 7, "rejected": None} for n in range(40)]
    )
    assert len(pack(document)) * 3 < len(document)


def _set_document(path: Path, stream: str, document: bytes) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("UPDATE last_payload SET document = ? WHERE stream = ?", (document, stream))
    finally:
        conn.close()


class LastPayload:
    """Per stream, the last event's payload as a packed document (as the real projections do)."""

    name = "last_payload"
    ddl = ("CREATE TABLE last_payload (stream TEXT PRIMARY KEY, document BLOB NOT NULL)",)
    tables = ("last_payload",)

    def apply(self, conn: sqlite3.Connection, stored: StoredEvent) -> None:
        conn.execute(
            "INSERT INTO last_payload VALUES (?, ?) ON CONFLICT (stream) DO UPDATE "
            "SET document = excluded.document",
            (stored.stream, pack(bytes(stored.payload) * 4)),
        )


async def test_verify_accepts_plain_rows_of_an_older_somsd_and_still_finds_wrong_ones(
    db_path: Path,
) -> None:
    projections = [LastPayload()]
    store = EventStore(db_path, projections)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        await store.append("s1", [event(k=1, text="x" * 200)])
        await store.append("s2", [event(k=2, text="y" * 200)])
        nursery.cancel_scope.cancel()
    assert verify_database(db_path, projections) == []

    [(packed,)] = query(db_path, "SELECT document FROM last_payload WHERE stream = 's1'")
    _set_document(db_path, "s1", unpack(packed))
    assert verify_database(db_path, projections) == []  # the same facts, stored plain

    _set_document(db_path, "s2", b'{"k":3}')
    problems = verify_database(db_path, projections)
    assert problems
    assert "1 rows not produced by replaying the log" in problems[0]

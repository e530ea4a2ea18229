"""The outbox table exactly as the PostgreSQL event store creates it (somsd/store/_postgres.py:
text timestamps in ISO-8601 UTC, the payload as bytea), filled with due rows."""

from __future__ import annotations

from typing import Any

import psycopg

from somsd.store._postgres import PG_MIGRATIONS
from somsd.store._time import to_text, utc_now

OUTBOX_DDL = tuple(statement for statement in PG_MIGRATIONS[0] if "outbox" in statement)


def create_outbox(conn: psycopg.Connection[Any], target: str, count: int) -> None:
    """The store's outbox with `count` rows for `target`, due now, keys `<target>:<n>`."""
    for statement in OUTBOX_DDL:
        conn.execute(statement)
    add_rows(conn, target, range(1, count + 1))


def add_rows(conn: psycopg.Connection[Any], target: str, numbers: range) -> None:
    now = to_text(utc_now())
    conn.execute(
        "INSERT INTO outbox (target, payload, idempotency_key, state, next_attempt_at, "
        "created_at, updated_at) SELECT %s, convert_to('effect ' || n, 'UTF8'), %s || n, "
        "'pending', %s, %s, %s FROM generate_series(%s::int, %s::int) AS n",
        (target, f"{target}:", now, now, now, numbers.start, numbers.stop - 1),
    )


def make_due(conn: psycopg.Connection[Any], ids: list[int]) -> None:
    """What the end of a claim does to its rows, without waiting for it."""
    conn.execute(
        "UPDATE outbox SET next_attempt_at = %s WHERE id = ANY(%s)", (to_text(utc_now()), ids)
    )

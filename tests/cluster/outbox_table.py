"""The outbox table as the PostgreSQL store keeps it: somsd/store/_schema.py's columns, with
PostgreSQL types (timestamps as timestamptz, the payload as bytea)."""

from __future__ import annotations

from typing import Any

import psycopg

OUTBOX_DDL = """CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    target TEXT NOT NULL,
    payload BYTEA NOT NULL,
    idempotency_key TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
)"""


def create_outbox(conn: psycopg.Connection[Any], target: str, count: int) -> None:
    conn.execute(OUTBOX_DDL)
    conn.execute(
        "INSERT INTO outbox (target, payload, idempotency_key, state, next_attempt_at, "
        "created_at, updated_at) SELECT %s, convert_to('effect ' || n, 'UTF8'), %s || n, "
        "'pending', now(), now(), now() FROM generate_series(1, %s) AS n",
        (target, f"{target}:", count),
    )

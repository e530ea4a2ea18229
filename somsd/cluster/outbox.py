"""Outbox claims under lease tokens, fenced outcomes, and the outbox's wake-up channel.

With several daemons on one PostgreSQL database, each outbox target is delivered by the member
holding the lease of the duty that owns it (`actors/outbox_claims.py` maps targets to duties).
These are the synchronous psycopg 3 statements behind that, for a worker thread; they work on
the event store's own `outbox` table (`somsd/store/_postgres.py`: timestamps are ISO-8601 UTC
text with microseconds, which sort as they compare), and the lease table of
`somsd.cluster.postgres`, which must live in the same database.

**Claims.** `claim_outbox_batch` opens one transaction, checks each asking duty's token
(`postgres.check_fence`: the lease row share-locked to COMMIT, so no takeover can commit in
between), and for every target of a duty whose token is current, locks up to its limit of due
rows `FOR UPDATE SKIP LOCKED` (a concurrent claimer skips them rather than waits) and pushes
their `next_attempt_at` to the claim's end, so no scan sees them due while the claim lasts. No
column is added to the store's table: a claim is only that pushed time. A duty whose token is
stale claims nothing (its targets are reported refused).

**Outcomes.** `settle_outbox_batch` writes delivered / retry / dead for many entries in one
transaction, each fenced by its duty's token: a member that lost the lease meanwhile records
nothing, the row stays pending, becomes due when its claim ends and the new owner sends it again
with the same idempotency key. An entry no longer pending (settled by someone) is reported so.

**Wake-ups.** `ensure_outbox_notify` installs a statement trigger that `NOTIFY`s
`OUTBOX_CHANNEL` with the targets of the rows each INSERT added (and a row trigger for a dead
letter requeued), in the inserting transaction, so listeners hear of it at its commit.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from somsd.cluster.postgres import Connection, StaleLeaseError, check_fence
from somsd.store import OutboxEntry, OutboxState
from somsd.store._time import from_text, to_text, utc_now

__all__ = [
    "NOTIFY_PAYLOAD_LIMIT",
    "OUTBOX_CHANNEL",
    "ClaimRequest",
    "SettleOutcome",
    "Settled",
    "Settlement",
    "claim_outbox",
    "claim_outbox_batch",
    "ensure_outbox_notify",
    "settle_outbox",
    "settle_outbox_batch",
]

OUTBOX_CHANNEL: Final = "somsd_outbox"
# NOTIFY payloads must stay under 8000 bytes. Past this length the payload is cut, and a
# listener that cannot read every target from it wakes anyway (see `payload_targets`).
NOTIFY_PAYLOAD_LIMIT: Final = 7000
# Serialises the trigger install of daemons starting at once (CREATE OR REPLACE TRIGGER of two
# sessions on one table can still collide in the catalog).
_NOTIFY_LOCK: Final = 0x50_4D_53_44_4F_42


@dataclass(frozen=True)
class ClaimRequest:
    """Claim up to `limit` due rows of `target` under `duty`'s lease `token`, until `until`."""

    target: str
    duty: str
    token: int
    limit: int
    until: datetime


class Settled(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"  # pending again, due at `next_attempt_at`
    DEAD = "dead"


@dataclass(frozen=True)
class Settlement:
    """The outcome of one delivery attempt of a claimed entry, to write under the lease."""

    entry_id: int
    duty: str
    token: int
    outcome: Settled
    error: str | None = None
    next_attempt_at: datetime | None = None  # for RETRY


class SettleOutcome(enum.Enum):
    RECORDED = "recorded"
    NOT_PENDING = "not_pending"  # someone settled the entry already, or it is gone
    STALE = "stale"  # the duty's token is no longer current: refused


def _fence_all(
    conn: Connection, tokens: Iterable[tuple[str, int]], on_refused: _OnRefused
) -> set[str]:
    """Check every (duty, token) inside the open transaction; returns the duties refused.

    In sorted order, so two members fencing overlapping duties lock their rows alike."""
    refused: set[str] = set()
    for duty, token in sorted(set(tokens)):
        try:
            check_fence(conn, duty, token)
        except StaleLeaseError as exc:
            refused.add(duty)
            if on_refused is not None:
                on_refused(exc)
    return refused


_OnRefused = Callable[[StaleLeaseError], None] | None

_CLAIM = (
    "WITH want AS (SELECT * FROM unnest(%s::text[], %s::int[], %s::text[]) "
    "AS w(target, n, until)), "
    "due AS (SELECT d.id, w.until FROM want AS w CROSS JOIN LATERAL ("
    "SELECT o.id FROM outbox AS o WHERE o.target = w.target AND o.state = 'pending' "
    "AND o.next_attempt_at <= %s ORDER BY o.next_attempt_at, o.id LIMIT w.n "
    "FOR UPDATE SKIP LOCKED) AS d) "
    "UPDATE outbox AS o SET next_attempt_at = due.until, updated_at = %s FROM due "
    "WHERE o.id = due.id RETURNING o.id, o.target, o.payload, o.idempotency_key, o.attempts, "
    "o.next_attempt_at, o.last_error, o.created_at"
)


def claim_outbox_batch(
    conn: Connection,
    requests: Sequence[ClaimRequest],
    *,
    now: datetime | None = None,
    on_refused: _OnRefused = None,
) -> tuple[dict[str, list[OutboxEntry]], set[str]]:
    """Claim due rows for every request in one transaction (see the module docstring).

    Returns the claimed entries per target (oldest first; absent: nothing due) and the duties
    whose token was refused. `now` decides what is due (the daemon's clock, as the store's
    scans use)."""
    at = to_text(utc_now() if now is None else now)
    claimed: dict[str, list[OutboxEntry]] = {}
    with conn.transaction():
        refused = _fence_all(conn, ((r.duty, r.token) for r in requests), on_refused)
        asking = [r for r in requests if r.duty not in refused and r.limit > 0]
        if not asking:
            return claimed, refused
        rows = conn.execute(
            _CLAIM,
            (
                [r.target for r in asking],
                [r.limit for r in asking],
                [to_text(r.until) for r in asking],
                at,
                at,
            ),
        ).fetchall()
    for row in rows:
        entry_id, target, payload, key, attempts, next_at, error, created = row
        claimed.setdefault(target, []).append(
            OutboxEntry(
                int(entry_id),
                target,
                bytes(payload),
                key,
                OutboxState.PENDING,
                int(attempts),
                from_text(next_at),
                error,
                from_text(created),
                from_text(at),
            )
        )
    for entries in claimed.values():
        entries.sort(key=lambda e: e.id)
    return claimed, refused


def claim_outbox(
    conn: Connection,
    duty: str,
    token: int,
    target: str,
    *,
    limit: int,
    claim_for: float,
    now: datetime | None = None,
    on_refused: _OnRefused = None,
) -> list[OutboxEntry]:
    """Claim up to `limit` due entries of one `target` for `claim_for` seconds; raises
    `StaleLeaseError` when `token` is not `duty`'s current lease."""
    at = utc_now() if now is None else now
    request = ClaimRequest(target, duty, token, limit, at + timedelta(seconds=claim_for))
    refusals: list[StaleLeaseError] = []

    def refused(exc: StaleLeaseError) -> None:
        refusals.append(exc)
        if on_refused is not None:
            on_refused(exc)

    claimed, _ = claim_outbox_batch(conn, [request], now=at, on_refused=refused)
    if refusals:
        raise refusals[0]
    return claimed.get(target, [])


_SETTLE = (
    "UPDATE outbox AS o SET "
    "state = CASE s.outcome WHEN 'retry' THEN 'pending' ELSE s.outcome END, "
    "attempts = o.attempts + 1, "
    "last_error = CASE s.outcome WHEN 'delivered' THEN o.last_error ELSE s.error END, "
    "next_attempt_at = COALESCE(s.next_at, o.next_attempt_at), updated_at = %s "
    "FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::text[]) "
    "AS s(id, outcome, error, next_at) "
    "WHERE o.id = s.id AND o.state = 'pending' RETURNING o.id"
)


def settle_outbox_batch(
    conn: Connection,
    settlements: Sequence[Settlement],
    *,
    now: datetime | None = None,
    on_refused: _OnRefused = None,
) -> list[SettleOutcome]:
    """Write every outcome whose duty's token is current, in one transaction; one result each,
    in order. The same columns change as the store's own `mark_delivered` / `schedule_retry` /
    `mark_dead` (every attempt counts; a delivery keeps the last error)."""
    for item in settlements:
        if item.outcome is Settled.RETRY and item.next_attempt_at is None:
            raise ValueError(f"entry {item.entry_id}: a retry needs next_attempt_at")
    at = to_text(utc_now() if now is None else now)
    with conn.transaction():
        refused = _fence_all(conn, ((s.duty, s.token) for s in settlements), on_refused)
        writing = [s for s in settlements if s.duty not in refused]
        recorded: set[int] = set()
        if writing:
            rows = conn.execute(
                _SETTLE,
                (
                    at,
                    [s.entry_id for s in writing],
                    [s.outcome.value for s in writing],
                    [s.error for s in writing],
                    [
                        None if s.next_attempt_at is None else to_text(s.next_attempt_at)
                        for s in writing
                    ],
                ),
            ).fetchall()
            recorded = {int(entry_id) for (entry_id,) in rows}
    return [
        SettleOutcome.STALE
        if s.duty in refused
        else SettleOutcome.RECORDED
        if s.entry_id in recorded
        else SettleOutcome.NOT_PENDING
        for s in settlements
    ]


def settle_outbox(
    conn: Connection,
    duty: str,
    token: int,
    entry_id: int,
    *,
    state: str = "delivered",
    error: str | None = None,
    on_refused: _OnRefused = None,
) -> bool:
    """Record one claimed entry's outcome (`delivered` or `dead`) under the lease; False when
    the entry was not pending any more; raises `StaleLeaseError` for a stale token."""
    if state not in ("delivered", "dead"):
        raise ValueError(f"outcome state {state!r}; expected delivered or dead")
    refusals: list[StaleLeaseError] = []

    def refused(exc: StaleLeaseError) -> None:
        refusals.append(exc)
        if on_refused is not None:
            on_refused(exc)

    settlement = Settlement(entry_id, duty, token, Settled(state), error)
    (outcome,) = settle_outbox_batch(conn, [settlement], on_refused=refused)
    if refusals:
        raise refusals[0]
    return outcome is SettleOutcome.RECORDED


# The channel and the payload limit are OUTBOX_CHANNEL and NOTIFY_PAYLOAD_LIMIT (a test holds
# them equal); literal here so the SQL is one constant.
_NOTIFY_FUNCTIONS = (
    """CREATE OR REPLACE FUNCTION somsd_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('somsd_outbox', left(coalesce(
            (SELECT string_agg(DISTINCT target, ' ') FROM added), ''), 7000));
        RETURN NULL;
    END $$""",
    """CREATE OR REPLACE FUNCTION somsd_outbox_requeue_notify() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('somsd_outbox', left(NEW.target, 7000));
        RETURN NULL;
    END $$""",
)
_NOTIFY_TRIGGERS = (
    "CREATE OR REPLACE TRIGGER outbox_notify AFTER INSERT ON outbox "
    "REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION somsd_outbox_notify()",
    "CREATE OR REPLACE TRIGGER outbox_requeue_notify AFTER UPDATE OF state ON outbox "
    "FOR EACH ROW WHEN (OLD.state = 'dead' AND NEW.state = 'pending') "
    "EXECUTE FUNCTION somsd_outbox_requeue_notify()",
)


def ensure_outbox_notify(conn: Connection) -> bool:
    """Install the wake-up triggers on the store's outbox; False while there is no outbox
    table yet (the store creates it when it first opens the database)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_NOTIFY_LOCK,))
        row = conn.execute("SELECT to_regclass('outbox') IS NOT NULL").fetchone()
        if row is None or not row[0]:
            return False
        installed = conn.execute(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'outbox'::regclass "
            "AND tgname IN ('outbox_notify', 'outbox_requeue_notify')"
        ).fetchone()
        if installed is not None and installed[0] == len(_NOTIFY_TRIGGERS):
            return True
        for statement in (*_NOTIFY_FUNCTIONS, *_NOTIFY_TRIGGERS):
            conn.execute(statement)
    return True


def payload_targets(payload: str) -> set[str] | None:
    """The targets a wake-up names; None when it may not name them all (wake for anything)."""
    if not payload or len(payload) >= NOTIFY_PAYLOAD_LIMIT:
        return None
    return set(payload.split(" "))

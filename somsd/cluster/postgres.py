"""The lease table in PostgreSQL: acquire, renew, release, take over; fenced writes.

**Why a lease table and not advisory locks.** `pg_advisory_lock` is held by a session: it ends
when the server notices the connection is gone, which after a network partition is whenever TCP
keepalive gives up, and the holder cannot tell from its side when that happened. It has no
expiry both sides can compute and no token to fence writes with, and it pins one connection per
daemon for the whole life of the lease (no pooling through a transaction-mode pgbouncer). A row
per duty with `expires_at` on the database clock gives every member one clock to agree on, a
bounded time after which the work is taken over, a holder that knows from its own clock when to
stop (`somsd.cluster.lease.HeldLease`), and a fencing token from a sequence that only grows.

Every function here is synchronous psycopg 3 on a connection in autocommit mode, meant for a
worker thread (`LeaseClient` runs them with `trio.to_thread`); each opens the transactions it
needs. The decisions are the pure functions of `somsd.cluster.lease`, fed with the row and the
database's `clock_timestamp()`, so the table follows exactly the rules the property tests prove.

**Fencing.** `fenced(conn, duty, token)` opens a transaction whose first statement reads the
duty's lease row `FOR SHARE` and refuses (`StaleLeaseError`) unless the token is the current one
and the lease has not expired. The shared row lock is held to COMMIT, and a takeover updates that
row, so a takeover waits for every fenced write under the old token to commit or roll back: no
write under a stale token can commit after a newer token exists. (The same effect as
`UPDATE ... WHERE token = current` with a row count check, but it also covers writes to other
tables in the same transaction.)

**Outbox claims** and their fenced outcomes are `somsd.cluster.outbox`, built on `check_fence`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from somsd.cluster.lease import (
    AcquireOutcome,
    LeaseRecord,
    LeaseRules,
    decide_acquire,
    fence_accepts,
)

__all__ = [
    "SCHEMA",
    "ClusterSnapshot",
    "LeaseRow",
    "MemberRow",
    "Owner",
    "StaleLeaseError",
    "acquire",
    "check_fence",
    "connect",
    "ensure_schema",
    "fenced",
    "heartbeat",
    "owner_of",
    "release",
    "renew_all",
    "snapshot",
]

Connection = psycopg.Connection[Any]

# Tables of their own (prefix `cluster_`), beside whatever the event store keeps in the database.
SCHEMA: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS cluster_lease_token",
    """CREATE TABLE IF NOT EXISTS cluster_leases (
        duty TEXT PRIMARY KEY,
        holder TEXT,                 -- the holding member's incarnation id; NULL: free
        member TEXT,                 -- its member name, for people
        token BIGINT NOT NULL DEFAULT 0,
        acquired_at TIMESTAMPTZ,
        renewed_at TIMESTAMPTZ,
        expires_at TIMESTAMPTZ NOT NULL DEFAULT '-infinity'
    )""",
    """CREATE TABLE IF NOT EXISTS cluster_members (
        member TEXT PRIMARY KEY,
        holder TEXT NOT NULL,        -- the incarnation now running under that name
        started_at TIMESTAMPTZ NOT NULL,
        heartbeat_at TIMESTAMPTZ NOT NULL,
        duties TEXT[] NOT NULL DEFAULT '{}'   -- what it is configured to run (wants leases of)
    )""",
    # Added after the first release: where the member's API answers, so a member that is asked
    # for work another owns can name the owner's address (`owner_of`). NULL: not known yet.
    "ALTER TABLE cluster_members ADD COLUMN IF NOT EXISTS api_url TEXT",
    # Added with the member-sets check (`somsd.cluster.sets`): the [[location]] and [[channel]]
    # names the member runs, their fingerprint, and when it recorded them (at start and at each
    # reload). NULL: a member of an older somsd, not compared.
    "ALTER TABLE cluster_members ADD COLUMN IF NOT EXISTS locations TEXT[]",
    "ALTER TABLE cluster_members ADD COLUMN IF NOT EXISTS channels TEXT[]",
    "ALTER TABLE cluster_members ADD COLUMN IF NOT EXISTS config_fingerprint TEXT",
    "ALTER TABLE cluster_members ADD COLUMN IF NOT EXISTS config_at TIMESTAMPTZ",
)
# Any constant: serialises the CREATE ... IF NOT EXISTS of daemons starting at the same moment
# (two concurrent CREATE TABLE IF NOT EXISTS can still collide in the catalog).
_SCHEMA_LOCK = 0x50_4D_53_44_43_4C
# A statement that waits longer than this on a lock or a slow server fails instead of holding
# the worker thread; far below any sane TTL, so the holder's clock still decides in time.
STATEMENT_TIMEOUT_MS = 5000
_NOW = "extract(epoch FROM clock_timestamp())::float8"


class StaleLeaseError(Exception):
    """A write was made under a token that is no longer the duty's current lease."""

    def __init__(self, duty: str, token: int, current: LeaseRecord | None) -> None:
        holder = "nobody" if current is None or current.holder is None else current.member
        super().__init__(
            f"lease {duty!r}: token {token} is stale (current token "
            f"{0 if current is None else current.token}, held by {holder}); write refused"
        )
        self.duty = duty
        self.token = token
        self.current = current


def connect(dsn: str, *, connect_timeout: float = 5.0) -> Connection:
    """An autocommit connection whose statements cannot hang a worker thread for long."""
    return psycopg.connect(
        dsn,
        autocommit=True,
        connect_timeout=max(1, math.ceil(connect_timeout)),
        options=(
            f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS}"
        ),
    )


def ensure_schema(conn: Connection) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        for statement in SCHEMA:
            conn.execute(statement)


def _record(duty: str, row: tuple[Any, ...] | None) -> LeaseRecord | None:
    if row is None:
        return None
    holder, member, token, expires_at = row[:4]
    return LeaseRecord(duty, holder, int(token), float(expires_at), member)


def _locked_row(conn: Connection, duty: str, lock: str) -> tuple[LeaseRecord | None, float]:
    row = conn.execute(
        f"SELECT holder, member, token, extract(epoch FROM expires_at)::float8, {_NOW} "  # noqa: S608  # constants only
        f"FROM cluster_leases WHERE duty = %s FOR {lock}",
        (duty,),
    ).fetchone()
    if row is None:
        now = conn.execute(f"SELECT {_NOW}").fetchone()
        assert now is not None
        return None, float(now[0])
    return _record(duty, row), float(row[4])


def acquire(
    conn: Connection, duty: str, *, holder: str, member: str, rules: LeaseRules
) -> tuple[AcquireOutcome, LeaseRecord | None, float]:
    """Take `duty`'s lease if it is free or expired (a new token), renew it if already ours.

    Returns the outcome, the row after it (the other holder's when refused) and the table time
    the decision was made at (a refused member waits until the row's `expires_at`)."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO cluster_leases (duty) VALUES (%s) ON CONFLICT (duty) DO NOTHING", (duty,)
        )
        record, now = _locked_row(conn, duty, "UPDATE")
        outcome = decide_acquire(record, holder, now)
        if outcome is AcquireOutcome.REFUSED:
            return outcome, record, now
        new_token = (
            "token" if outcome is AcquireOutcome.ALREADY_HELD else "nextval('cluster_lease_token')"
        )
        acquired_at = (
            "acquired_at" if outcome is AcquireOutcome.ALREADY_HELD else "clock_timestamp()"
        )
        row = conn.execute(
            f"UPDATE cluster_leases SET holder = %s, member = %s, token = {new_token}, "  # noqa: S608  # constants only
            f"acquired_at = {acquired_at}, renewed_at = clock_timestamp(), "
            "expires_at = clock_timestamp() + make_interval(secs => %s) WHERE duty = %s "
            "RETURNING holder, member, token, extract(epoch FROM expires_at)::float8",
            (holder, member, rules.ttl, duty),
        ).fetchone()
        return outcome, _record(duty, row), now


def renew_all(
    conn: Connection, tokens: dict[str, int], *, holder: str, rules: LeaseRules
) -> set[str]:
    """Renew every lease in `tokens` (duty -> token) still held; returns the duties renewed.

    One statement for all of a member's leases, whatever their number; a lease that expired or
    changed hands is not renewed (`lease.renew`)."""
    if not tokens:
        return set()
    duties = list(tokens)
    rows = conn.execute(
        "UPDATE cluster_leases AS l "
        "SET expires_at = clock_timestamp() + make_interval(secs => %s), "
        "renewed_at = clock_timestamp() "
        "FROM unnest(%s::text[], %s::bigint[]) AS h(duty, token) "
        "WHERE l.duty = h.duty AND l.token = h.token AND l.holder = %s "
        "AND l.expires_at > clock_timestamp() RETURNING l.duty",
        (rules.ttl, duties, [tokens[d] for d in duties], holder),
    ).fetchall()
    return {duty for (duty,) in rows}


def release(conn: Connection, duty: str, *, holder: str, token: int) -> bool:
    """Give the lease up at once (a clean stop), so another member need not wait for the TTL."""
    done = conn.execute(
        "UPDATE cluster_leases SET holder = NULL, member = NULL, expires_at = clock_timestamp() "
        "WHERE duty = %s AND holder = %s AND token = %s",
        (duty, holder, token),
    )
    return done.rowcount == 1


def heartbeat(
    conn: Connection,
    *,
    member: str,
    holder: str,
    duties: Sequence[str],
    api_url: str | None = None,
) -> None:
    conn.execute(
        "INSERT INTO cluster_members (member, holder, started_at, heartbeat_at, duties, api_url) "
        "VALUES (%s, %s, clock_timestamp(), clock_timestamp(), %s, %s) "
        "ON CONFLICT (member) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, "
        "duties = excluded.duties, holder = excluded.holder, api_url = excluded.api_url, "
        "started_at = CASE "
        "WHEN cluster_members.holder = excluded.holder THEN cluster_members.started_at "
        "ELSE excluded.started_at END",
        (member, holder, sorted(duties), api_url),
    )


@dataclass(frozen=True)
class Owner:
    """Who holds a duty's lease now, where its API answers, and for how long it holds at least."""

    member: str
    holder: str  # the incarnation
    api_url: str | None
    seconds_left: float  # until the lease expires unless renewed (table clock)


def owner_of(conn: Connection, duty: str) -> Owner | None:
    """The member holding `duty`'s valid lease, or None (free, expired, never granted)."""
    row = conn.execute(
        f"SELECT l.member, l.holder, m.api_url, extract(epoch FROM l.expires_at)::float8 - {_NOW} "  # noqa: S608  # constants only
        "FROM cluster_leases AS l LEFT JOIN cluster_members AS m ON m.member = l.member "
        "WHERE l.duty = %s AND l.holder IS NOT NULL AND l.expires_at > clock_timestamp()",
        (duty,),
    ).fetchone()
    if row is None:
        return None
    member, holder, api_url, left = row
    return Owner(member or "", holder, api_url, max(0.0, float(left)))


def check_fence(conn: Connection, duty: str, token: int) -> None:
    """Inside the caller's transaction: refuse unless `token` is `duty`'s current, valid lease.

    The lease row stays share-locked until the transaction ends (see the module docstring)."""
    record, now = _locked_row(conn, duty, "SHARE")
    if not fence_accepts(record, token, now):
        raise StaleLeaseError(duty, token, record)


@contextmanager
def fenced(
    conn: Connection,
    duty: str,
    token: int,
    *,
    on_refused: Callable[[StaleLeaseError], None] | None = None,
) -> Iterator[Connection]:
    """A transaction that commits only under `duty`'s current lease `token`; write inside it.

    Raises `StaleLeaseError` (after `on_refused`, a metrics hook) before the body runs when the
    token is stale; the body's writes then never happen."""
    with conn.transaction():
        try:
            check_fence(conn, duty, token)
        except StaleLeaseError as exc:
            if on_refused is not None:
                on_refused(exc)
            raise
        yield conn


@dataclass(frozen=True)
class LeaseRow:
    duty: str
    member: str | None
    token: int
    expires_at: datetime | None
    held: bool


@dataclass(frozen=True)
class MemberRow:
    member: str
    started_at: datetime
    heartbeat_at: datetime
    alive: bool  # heard from within the lease TTL
    duties: tuple[str, ...]
    api_url: str | None = None


@dataclass(frozen=True)
class ClusterSnapshot:
    at: datetime
    members: tuple[MemberRow, ...]
    leases: tuple[LeaseRow, ...]


def snapshot(conn: Connection, *, rules: LeaseRules) -> ClusterSnapshot:
    """Members with their last heartbeat, and every lease with who holds it (admin view)."""
    with conn.transaction():
        now_row = conn.execute("SELECT clock_timestamp()").fetchone()
        assert now_row is not None
        members = conn.execute(
            "SELECT member, started_at, heartbeat_at, "
            "heartbeat_at > clock_timestamp() - make_interval(secs => %s), duties, api_url "
            "FROM cluster_members ORDER BY member",
            (rules.ttl,),
        ).fetchall()
        leases = conn.execute(
            "SELECT duty, member, token, CASE WHEN expires_at = '-infinity' THEN NULL "
            "ELSE expires_at END, holder IS NOT NULL AND expires_at > clock_timestamp() "
            "FROM cluster_leases ORDER BY duty"
        ).fetchall()
    return ClusterSnapshot(
        now_row[0],
        tuple(MemberRow(m, s, h, bool(a), tuple(d), u) for m, s, h, a, d, u in members),
        tuple(
            LeaseRow(duty, member if held else None, int(token), expires, bool(held))
            for duty, member, token, expires, held in leases
        ),
    )

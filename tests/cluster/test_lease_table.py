"""The lease table on a real PostgreSQL: acquire, renew, release, takeover, fencing, claims."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import psycopg
import pytest

from somsd.cluster import outbox, postgres
from somsd.cluster.lease import AcquireOutcome, LeaseRules
from somsd.cluster.postgres import StaleLeaseError
from tests.cluster.outbox_table import create_outbox, make_due

RULES = LeaseRules(ttl=30.0, renew_every=10.0)
DUTY = "location/wh-1"


def connect(dsn: str) -> psycopg.Connection[Any]:
    conn = postgres.connect(dsn)
    postgres.ensure_schema(conn)
    return conn


def expire(conn: psycopg.Connection[Any], duty: str) -> None:
    """What the TTL does to a lease nobody renews, without waiting for it."""
    conn.execute(
        "UPDATE cluster_leases SET expires_at = clock_timestamp() - interval '1 ms' "
        "WHERE duty = %s",
        (duty,),
    )


def acquire(conn: psycopg.Connection[Any], holder: str) -> tuple[AcquireOutcome, int]:
    outcome, record, _ = postgres.acquire(
        conn, DUTY, holder=holder, member=holder.split("/", maxsplit=1)[0], rules=RULES
    )
    assert record is not None
    return outcome, record.token


def test_acquire_renew_release_and_takeover_after_expiry(pg_dsn: str) -> None:
    with connect(pg_dsn) as conn:
        outcome, first = acquire(conn, "a/1")
        assert outcome is AcquireOutcome.GRANTED
        assert acquire(conn, "b/1")[0] is AcquireOutcome.REFUSED
        assert acquire(conn, "a/1") == (AcquireOutcome.ALREADY_HELD, first)
        assert postgres.renew_all(conn, {DUTY: first}, holder="a/1", rules=RULES) == {DUTY}
        assert postgres.renew_all(conn, {DUTY: first}, holder="b/1", rules=RULES) == set()

        assert postgres.release(conn, DUTY, holder="a/1", token=first)
        outcome, second = acquire(conn, "b/1")
        assert outcome is AcquireOutcome.GRANTED
        assert second > first

        expire(conn, DUTY)
        assert postgres.renew_all(conn, {DUTY: second}, holder="b/1", rules=RULES) == set()
        outcome, third = acquire(conn, "c/1")
        assert outcome is AcquireOutcome.TAKEN_OVER
        assert third > second
        # The old holder can neither give back nor renew what is no longer its own.
        assert not postgres.release(conn, DUTY, holder="b/1", token=second)
        assert postgres.renew_all(conn, {DUTY: second}, holder="b/1", rules=RULES) == set()

        # A member restarted under the same name is a new incarnation: it waits too.
        assert acquire(conn, "c/2")[0] is AcquireOutcome.REFUSED


def test_the_stale_owners_fenced_write_is_refused_and_changes_nothing(pg_dsn: str) -> None:
    refused: list[StaleLeaseError] = []
    with connect(pg_dsn) as conn:
        conn.execute("CREATE TABLE effects (note TEXT)")
        _, old = acquire(conn, "a/1")
        with postgres.fenced(conn, DUTY, old):
            conn.execute("INSERT INTO effects VALUES ('a, while it held the lease')")
        expire(conn, DUTY)
        _, new = acquire(conn, "b/1")
        with (
            pytest.raises(StaleLeaseError, match=f"token {old} is stale"),
            postgres.fenced(conn, DUTY, old, on_refused=refused.append),
        ):
            conn.execute("INSERT INTO effects VALUES ('a, after the takeover')")
        with postgres.fenced(conn, DUTY, new):
            conn.execute("INSERT INTO effects VALUES ('b')")
        notes = [n for (n,) in conn.execute("SELECT note FROM effects").fetchall()]
    assert notes == ["a, while it held the lease", "b"]
    assert [(e.duty, e.token) for e in refused] == [(DUTY, old)]


def test_an_expired_lease_nobody_took_over_refuses_its_own_token(pg_dsn: str) -> None:
    with connect(pg_dsn) as conn:
        _, token = acquire(conn, "a/1")
        expire(conn, DUTY)
        with pytest.raises(StaleLeaseError), postgres.fenced(conn, DUTY, token):
            pass


def test_of_many_members_asking_at_once_exactly_one_is_granted(pg_dsn: str) -> None:
    outcomes: list[AcquireOutcome] = []
    barrier = threading.Barrier(8)

    def ask(n: int) -> None:
        with connect(pg_dsn) as conn:
            barrier.wait(timeout=10)
            outcomes.append(acquire(conn, f"m{n}/1")[0])

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert Counter(outcomes) == {AcquireOutcome.GRANTED: 1, AcquireOutcome.REFUSED: 7}


def test_outbox_rows_claimed_by_two_claimers_are_delivered_once(pg_dsn: str) -> None:
    """Two claimers under the target's lease, racing on their own connections: every row is
    claimed by exactly one of them (SKIP LOCKED, then pushed past the claim window) and marked
    delivered exactly once."""
    rows = 400
    with connect(pg_dsn) as conn:
        create_outbox(conn, DUTY, rows)
        _, token = acquire(conn, "a/1")
    delivered: dict[str, list[int]] = {"one": [], "two": []}
    settled: list[bool] = []
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        with connect(pg_dsn) as conn:
            barrier.wait(timeout=10)
            for _ in range(rows):  # bounded: each round claims at least one row or stops
                claimed = outbox.claim_outbox(conn, DUTY, token, DUTY, limit=7, claim_for=60)
                if not claimed:
                    return
                for entry in claimed:
                    delivered[name].append(entry.id)
                    settled.append(outbox.settle_outbox(conn, DUTY, token, entry.id))

    threads = [threading.Thread(target=claimer, args=(n,)) for n in delivered]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    both = delivered["one"] + delivered["two"]
    assert sorted(both) == list(range(1, rows + 1))  # each row once, none left out
    assert delivered["one"]
    assert delivered["two"]
    assert all(settled)
    with connect(pg_dsn) as conn:
        states = conn.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
    assert states == [("delivered", rows)]


def test_across_a_takeover_the_stale_claimer_claims_and_settles_nothing(pg_dsn: str) -> None:
    with connect(pg_dsn) as conn:
        create_outbox(conn, DUTY, 5)
        _, old = acquire(conn, "a/1")
        claimed = outbox.claim_outbox(conn, DUTY, old, DUTY, limit=2, claim_for=60)
        assert [e.id for e in claimed] == [1, 2]
        expire(conn, DUTY)
        _, new = acquire(conn, "b/1")
        # a was paused mid-delivery: its outcome and any further claim are refused.
        with pytest.raises(StaleLeaseError):
            outbox.settle_outbox(conn, DUTY, old, claimed[0].id)
        with pytest.raises(StaleLeaseError):
            outbox.claim_outbox(conn, DUTY, old, DUTY, limit=10, claim_for=60)
        # b takes what nobody holds a claim on; a's claimed rows wait out their claim window
        # and are then sent again with the same idempotency key.
        taken = outbox.claim_outbox(conn, DUTY, new, DUTY, limit=10, claim_for=60)
        assert [e.id for e in taken] == [3, 4, 5]
        make_due(conn, [1, 2])
        again = outbox.claim_outbox(conn, DUTY, new, DUTY, limit=10, claim_for=60)
        assert [(e.id, e.idempotency_key) for e in again] == [
            (1, f"{DUTY}:1"),
            (2, f"{DUTY}:2"),
        ]
        for entry in (*taken, *again):
            assert outbox.settle_outbox(conn, DUTY, new, entry.id)
        assert not outbox.settle_outbox(conn, DUTY, new, 1)  # settled already

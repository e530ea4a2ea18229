"""The lease core: who may run a duty, until when, and which writes still count. No I/O.

Several daemons share one PostgreSQL database; each singleton duty (a channel poller, a
location, the mailer, the backorder queue) runs on exactly one of them at a time, owned through
a *lease*: a row naming the holder, a *fencing token* and an expiry. This module holds the rules;
`somsd.cluster.postgres` keeps the rows and applies these functions inside its transactions.

Two clocks, deliberately:

- the **table clock** (the database's `clock_timestamp()`): the one clock every member agrees on.
  A lease expires `ttl` seconds after the table granted or renewed it, and only then may another
  member take it over;
- the **holder's clock** (its own monotonic clock): the holder believes in its lease until
  `sent_at + ttl * (1 - drift)`, where `sent_at` is when it *sent* the request that the table
  granted. The table granted it later than that, so the belief ends before the table's expiry
  even when the answer came back slowly, and `drift` covers two clocks ticking at slightly
  different rates. A holder that cannot renew (database gone, process paused) stops acting when
  its belief ends, on its own, before anyone can take over. That is why two holders never both
  think they hold a lease at the same instant.

A fencing token is taken from one ever-growing counter at every grant (a renewal keeps it), so a
later holder's token is always larger. A write that names a token other than the current one, or
a lease that has expired, is refused (`fence_accepts`): a stale holder that wakes from a pause
after the takeover cannot write, whatever it believes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_DRIFT",
    "AcquireOutcome",
    "HeldLease",
    "LeaseRecord",
    "LeaseRules",
    "LeaseTable",
    "decide_acquire",
    "fence_accepts",
    "grant",
    "release",
    "renew",
]

# Two monotonic clocks on healthy machines drift by parts per million; 2 % of the TTL is four
# orders of magnitude more, and costs 0.6 s of a 30 s lease.
DEFAULT_DRIFT = 0.02


@dataclass(frozen=True)
class LeaseRules:
    """How long a lease lasts and how often its holder renews it (both in seconds)."""

    ttl: float
    renew_every: float
    drift: float = DEFAULT_DRIFT

    def __post_init__(self) -> None:
        if self.ttl <= 0:
            raise ValueError(f"lease ttl is {self.ttl}s; it must be above 0")
        if not 0 < self.renew_every < self.ttl * (1 - self.drift):
            raise ValueError(
                f"renew_every is {self.renew_every}s; it must be above 0 and below the "
                f"lease ttl ({self.ttl}s) less the drift allowance, or the lease lapses between "
                "renewals"
            )
        if not 0 <= self.drift < 1:
            raise ValueError(f"drift is {self.drift}; it must be in [0, 1)")

    @property
    def belief(self) -> float:
        """How long after sending a granted request the holder still believes in its lease."""
        return self.ttl * (1 - self.drift)


@dataclass(frozen=True)
class LeaseRecord:
    """One duty's row in the lease table; times on the table clock, in seconds."""

    duty: str
    holder: str | None  # the member's incarnation id; None when free or released
    token: int  # the last token granted for this duty (0: never granted)
    expires_at: float
    member: str | None = None  # the holder's member name, for people (`somsd status`)

    def held_at(self, now: float) -> bool:
        return self.holder is not None and now < self.expires_at


class AcquireOutcome(enum.Enum):
    GRANTED = "granted"  # free: never held, released, or expired without a takeover before
    TAKEN_OVER = "taken_over"  # another member held it and its lease expired
    ALREADY_HELD = "already_held"  # the asking member holds it: a renewal, same token
    REFUSED = "refused"  # another member holds it and its lease is still valid


def decide_acquire(record: LeaseRecord | None, holder: str, now: float) -> AcquireOutcome:
    """May `holder` take the lease at table time `now`?"""
    if record is None or record.holder is None:
        return AcquireOutcome.GRANTED
    if record.holder == holder and record.held_at(now):
        return AcquireOutcome.ALREADY_HELD
    if record.held_at(now):
        return AcquireOutcome.REFUSED
    return AcquireOutcome.TAKEN_OVER if record.holder != holder else AcquireOutcome.GRANTED


def grant(
    duty: str, holder: str, token: int, now: float, rules: LeaseRules, *, member: str | None = None
) -> LeaseRecord:
    """The row after a grant with a fresh `token` (larger than every token before it)."""
    return LeaseRecord(duty, holder, token, now + rules.ttl, member)


def renew(
    record: LeaseRecord, holder: str, token: int, now: float, rules: LeaseRules
) -> LeaseRecord | None:
    """The row after `holder` renewed with `token`, or None when the renewal is refused.

    Refused once the lease expired, even if nobody took it over yet: the holder's belief ended
    first, its duty stopped, and it must acquire again and get a new token."""
    if record.holder != holder or record.token != token or not record.held_at(now):
        return None
    return replace(record, expires_at=now + rules.ttl)


def release(record: LeaseRecord, holder: str, token: int, now: float) -> LeaseRecord | None:
    """The row after `holder` gave the lease up, or None when it no longer held it."""
    if record.holder != holder or record.token != token:
        return None
    return replace(record, holder=None, member=None, expires_at=now)


def fence_accepts(record: LeaseRecord | None, token: int, now: float) -> bool:
    """Whether a write made under `token` may commit at table time `now`."""
    return record is not None and record.token == token and record.held_at(now)


@dataclass(frozen=True)
class HeldLease:
    """The holder's own view of a lease it was granted; times on the holder's clock."""

    duty: str
    token: int
    valid_until: float  # the holder acts only before this instant
    renew_at: float  # when it sends the next renewal

    @classmethod
    def granted(cls, duty: str, token: int, sent_at: float, rules: LeaseRules) -> HeldLease:
        """The view after a grant or renewal of a request sent at `sent_at`."""
        return cls(duty, token, sent_at + rules.belief, sent_at + rules.renew_every)

    def may_act(self, now: float) -> bool:
        return now < self.valid_until

    def renewal_due(self, now: float) -> bool:
        return now >= self.renew_at


class LeaseTable:
    """The lease table as a value in memory: the reference the PostgreSQL table follows.

    Used by the property tests and by anything that wants the rules without a database; every
    operation takes the table time `now`.
    """

    def __init__(self, rules: LeaseRules) -> None:
        self.rules = rules
        self.records: dict[str, LeaseRecord] = {}
        self.last_token = 0  # the sequence: only grows

    def acquire(
        self, duty: str, holder: str, now: float
    ) -> tuple[AcquireOutcome, LeaseRecord | None]:
        record = self.records.get(duty)
        outcome = decide_acquire(record, holder, now)
        if outcome is AcquireOutcome.REFUSED:
            return outcome, None
        if outcome is AcquireOutcome.ALREADY_HELD:
            assert record is not None
            renewed = renew(record, holder, record.token, now, self.rules)
            assert renewed is not None
            self.records[duty] = renewed
            return outcome, renewed
        self.last_token += 1
        self.records[duty] = grant(duty, holder, self.last_token, now, self.rules)
        return outcome, self.records[duty]

    def renew(self, duty: str, holder: str, token: int, now: float) -> LeaseRecord | None:
        record = self.records.get(duty)
        renewed = None if record is None else renew(record, holder, token, now, self.rules)
        if renewed is not None:
            self.records[duty] = renewed
        return renewed

    def release(self, duty: str, holder: str, token: int, now: float) -> bool:
        record = self.records.get(duty)
        released = None if record is None else release(record, holder, token, now)
        if released is not None:
            self.records[duty] = released
        return released is not None

    def fence_accepts(self, duty: str, token: int, now: float) -> bool:
        return fence_accepts(self.records.get(duty), token, now)

"""The lease rules, on a mock clock: never two believing holders, stale tokens always refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from somsd.cluster.lease import (
    AcquireOutcome,
    HeldLease,
    LeaseRecord,
    LeaseRules,
    LeaseTable,
    decide_acquire,
    fence_accepts,
)

RULES = LeaseRules(ttl=10.0, renew_every=3.0)
MEMBERS = ("a", "b", "c")
DUTIES = ("location/wh-1", "channel/shop")


@dataclass(frozen=True)
class Step:
    member: str
    duty: str
    op: str  # acquire | renew | release | write
    gap: float  # table time passing before the request is sent
    to_table: float  # request latency
    back: float  # answer latency


steps = st.lists(
    st.builds(
        Step,
        member=st.sampled_from(MEMBERS),
        duty=st.sampled_from(DUTIES),
        op=st.sampled_from(("acquire", "acquire", "renew", "renew", "release", "write")),
        gap=st.floats(0, 12, allow_nan=False),
        to_table=st.floats(0, 8, allow_nan=False),
        back=st.floats(0, 8, allow_nan=False),
    ),
    max_size=60,
)


def overlaps(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return max(a[0], b[0]) < min(a[1], b[1])


@settings(max_examples=400, deadline=None)
@given(steps)
def test_two_members_never_both_believe_they_hold_a_lease(plan: list[Step]) -> None:
    """Each member acts on its own view (granted at send time, believed from when the answer
    arrives); whatever the latencies and pauses, the intervals in which two members believe
    they hold the same duty never overlap."""
    table = LeaseTable(RULES)
    views: dict[tuple[str, str], HeldLease] = {}
    believed: dict[str, list[tuple[str, float, float]]] = {d: [] for d in DUTIES}
    now = 0.0

    def stop_believing(key: tuple[str, str], at: float) -> None:
        # The member drops its view when told so; it never believed past valid_until anyway.
        view = views.pop(key, None)
        intervals = believed[key[1]]
        if view is not None and intervals and intervals[-1][0] == key[0]:
            member, start, end = intervals[-1]
            intervals[-1] = (member, start, min(end, max(start, at)))

    for step in plan:
        key = (step.member, step.duty)
        sent_at = now + step.gap
        at_table = sent_at + step.to_table
        answered = at_table + step.back
        now = at_table  # the table handles requests in the order they arrive
        view = views.get(key)
        if view is not None and not view.may_act(sent_at):
            stop_believing(key, view.valid_until)
            view = None
        if step.op == "acquire":
            outcome, record = table.acquire(step.duty, step.member, at_table)
            granted = outcome is not AcquireOutcome.REFUSED
        elif step.op == "renew":
            if view is None:
                continue
            record = table.renew(step.duty, step.member, view.token, at_table)
            granted = record is not None
            if not granted:
                stop_believing(key, answered)
        elif step.op == "release":
            if view is not None:
                stop_believing(key, sent_at)  # it stops acting before it lets go
                table.release(step.duty, step.member, view.token, at_table)
            continue
        else:
            continue
        if granted:
            assert record is not None
            new_view = HeldLease.granted(step.duty, record.token, sent_at, RULES)
            assert new_view.valid_until <= record.expires_at  # belief ends before the table's
            views[key] = new_view
            intervals = believed[step.duty]
            if intervals and intervals[-1][0] == step.member and intervals[-1][2] >= answered:
                member, start, _ = intervals[-1]
                intervals[-1] = (member, start, new_view.valid_until)
            elif answered < new_view.valid_until:
                intervals.append((step.member, answered, new_view.valid_until))

    for intervals in believed.values():
        for i, (member_a, start_a, end_a) in enumerate(intervals):
            for member_b, start_b, end_b in intervals[i + 1 :]:
                if member_a != member_b:
                    assert not overlaps((start_a, end_a), (start_b, end_b)), intervals


@settings(max_examples=400, deadline=None)
@given(steps)
def test_tokens_only_grow_and_a_stale_token_is_always_refused(plan: list[Step]) -> None:
    table = LeaseTable(RULES)
    tokens: dict[tuple[str, str], int] = {}
    granted_tokens: list[int] = []
    newest: dict[str, int] = {}
    now = 0.0
    for step in plan:
        now += step.gap + step.to_table
        key = (step.member, step.duty)
        if step.op == "acquire":
            outcome, record = table.acquire(step.duty, step.member, now)
            if record is not None:
                if outcome is not AcquireOutcome.ALREADY_HELD:
                    assert not granted_tokens or record.token > max(granted_tokens)
                    granted_tokens.append(record.token)
                    newest[step.duty] = record.token
                tokens[key] = record.token
        elif step.op == "renew" and key in tokens:
            table.renew(step.duty, step.member, tokens[key], now)
        elif step.op == "release" and key in tokens:
            table.release(step.duty, step.member, tokens.pop(key), now)
        elif step.op == "write":
            # Every token ever handed out for this duty but the newest is refused, always.
            for token in {t for (_, d), t in tokens.items() if d == step.duty}:
                if token != newest.get(step.duty):
                    assert not table.fence_accepts(step.duty, token, now)
            if key in tokens and table.fence_accepts(step.duty, tokens[key], now):
                record = table.records[step.duty]
                assert record.holder == step.member
                assert record.token == newest[step.duty]


@given(st.floats(0, 100, allow_nan=False), st.integers(1, 10**6))
def test_an_expired_lease_refuses_even_its_own_token(now: float, token: int) -> None:
    record = LeaseRecord("d", "a", token, expires_at=now)
    assert not fence_accepts(record, token, now)
    assert fence_accepts(record, token, now - 0.001) or now - 0.001 >= now
    assert not fence_accepts(None, token, now)


def test_acquire_decisions() -> None:
    held = LeaseRecord("d", "a", 3, expires_at=10.0)
    assert decide_acquire(None, "a", 0) is AcquireOutcome.GRANTED
    assert decide_acquire(held, "a", 5) is AcquireOutcome.ALREADY_HELD
    assert decide_acquire(held, "b", 5) is AcquireOutcome.REFUSED
    assert decide_acquire(held, "b", 10) is AcquireOutcome.TAKEN_OVER
    assert decide_acquire(held, "a", 10) is AcquireOutcome.GRANTED  # lapsed: a new token
    released = LeaseRecord("d", None, 3, expires_at=5.0)
    assert decide_acquire(released, "b", 6) is AcquireOutcome.GRANTED


def test_rules_refuse_a_renewal_interval_the_lease_cannot_outlive() -> None:
    with pytest.raises(ValueError, match="renew_every"):
        LeaseRules(ttl=10, renew_every=10)
    with pytest.raises(ValueError, match="ttl"):
        LeaseRules(ttl=0, renew_every=1)

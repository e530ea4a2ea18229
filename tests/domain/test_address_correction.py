"""Correcting a held order's address: validated like intake, recorded, the hold re-checked."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from somsd.domain.errors import Conflict, InvalidCommand, InvalidOrder
from somsd.domain.events import AddressCorrected, HoldReleased
from somsd.domain.holds import HoldRules, evaluate_holds
from somsd.domain.lifecycle import correct_address, receive_order
from somsd.domain.order import Address
from somsd.domain.policy import OrderPolicy
from somsd.domain.status import ON_HOLD, PENDING
from somsd.domain.testing import InMemoryOrderLog, sample_order

NOW = datetime(2026, 11, 21, 11, tzinfo=UTC)
POLICY = OrderPolicy()
GOOD = Address(name="Erika Muster", street="Hauptstr. 9", zip="10115", city="Berlin", country="DE")


def held_order(log: InMemoryOrderLog, **variations: object) -> str:
    order = sample_order(shipping_address=msgspec.structs.replace(GOOD, street=" "), **variations)  # type: ignore[arg-type]
    log.commit(
        "o-1",
        receive_order(order, order_id="o-1", channel="b2b", policy=POLICY, now=NOW, actor="t"),
    )
    assert log.state("o-1").status == ON_HOLD
    return "o-1"


def correct(log: InMemoryOrderLog, **addresses: Address | None) -> None:
    state = log.state("o-1")
    events = correct_address(
        state,
        billing_address=addresses.get("billing_address"),
        shipping_address=addresses.get("shipping_address"),
        policy=POLICY,
        reason="called the customer",
        now=NOW,
        actor="user:anna",
    )
    log.commit("o-1", events)


def test_a_corrected_address_releases_an_address_hold_and_says_who_and_why() -> None:
    log = InMemoryOrderLog()
    held_order(log)
    correct(log, shipping_address=GOOD)
    state = log.state("o-1")
    assert state.status == PENDING
    assert state.order.shipping_address == GOOD
    [corrected] = [e for e in log.events("o-1") if isinstance(e, AddressCorrected)]
    [released] = [e for e in log.events("o-1") if isinstance(e, HoldReleased)]
    assert (corrected.actor, corrected.reason) == ("user:anna", "called the customer")
    assert released.reason == "address corrected: called the customer"


def test_an_order_held_for_another_reason_stays_held() -> None:
    log = InMemoryOrderLog()
    blocked = OrderPolicy(holds=HoldRules(blocked_emails=frozenset({"max@example.com"})))
    order = sample_order(shipping_address=msgspec.structs.replace(GOOD, street=""))
    log.commit(
        "o-1",
        receive_order(order, order_id="o-1", channel="b2b", policy=blocked, now=NOW, actor="t"),
    )
    correct(log, shipping_address=GOOD)
    assert log.state("o-1").status == ON_HOLD


def test_bad_corrections_are_refused_with_their_path() -> None:
    log = InMemoryOrderLog()
    held_order(log)
    with pytest.raises(InvalidOrder) as raised:
        correct(log, shipping_address=msgspec.structs.replace(GOOD, country="Germany"))
    assert raised.value.problems[0].path.startswith("$.shipping_address.country")
    with pytest.raises(InvalidCommand):
        correct(log)
    correct(log, shipping_address=GOOD)
    with pytest.raises(Conflict):
        correct(log, shipping_address=GOOD)  # nothing left to change


_text = st.text(alphabet=st.sampled_from("ab 1"), max_size=4)


@given(street=_text, zip_code=st.sampled_from(["10115", "1011", "", " "]), city=_text)
def test_the_hold_is_released_exactly_when_the_new_address_passes(
    street: str, zip_code: str, city: str
) -> None:
    log = InMemoryOrderLog()
    held_order(log)
    address = msgspec.structs.replace(GOOD, street=street, zip=zip_code, city=city)
    correct(log, shipping_address=address)
    state = log.state("o-1")
    still_incomplete = bool(evaluate_holds(state.order, POLICY.holds))
    assert (state.status == ON_HOLD) == still_incomplete
    assert state.order.shipping_address == address

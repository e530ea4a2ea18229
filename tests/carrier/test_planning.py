"""Pure carrier planning: the label request per location, the outbox items, config rules."""

from __future__ import annotations

from datetime import date

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.carrier import (
    BuyLabel,
    ValidateAddress,
    carrier_fulfilment_effects,
    carrier_order_effects,
    shipment_data,
)
from adapters.carrier import Party
from somsd.config import CarrierConfig, ConfigError, LocationConfig, SenderAddress, parse_config
from somsd.domain.events import AddressCorrected, OrderReceived
from somsd.domain.order import Address
from somsd.domain.state import apply
from somsd.domain.testing import sample_order
from somsd.projections.fulfilments import (
    FulfilmentProgressed,
    FulfilmentRequested,
    apply_fulfilment,
)

DAY = date(2026, 12, 7)
SENDER = SenderAddress(name="Versand", street="Hafenstr. 1", zip="44147", city="Dortmund")
LOCATION = LocationConfig(
    name="wh-1",
    carriers=("dhl",),
    sender=SENDER,
    billing_numbers={"V01PAK": "33333333330102", "V53WPAK": "33333333335301"},
    item_weights_grams={"MUG-1": 350},
)
DHL = CarrierConfig(name="dhl", kind="dhl-parcel-de")


def party(country: str) -> Party:
    return Party(name="Max", street="Hauptstr. 1", zip="1010", city="Wien", country=country)


@given(st.lists(st.integers(1, 20), min_size=1, max_size=5))
def test_domestic_and_international_products_and_weight(quantities: list[int]) -> None:
    lines = [("MUG-1", q) for q in quantities]
    home = shipment_data(
        LOCATION, reference="f-1", consignee=party("DE"), lines=lines, ship_date=DAY
    )
    abroad = shipment_data(
        LOCATION, reference="f-1", consignee=party("AT"), lines=lines, ship_date=DAY
    )
    assert (home.product, home.billing_number) == ("V01PAK", "33333333330102")
    assert (abroad.product, abroad.billing_number) == ("V53WPAK", "33333333335301")
    assert home.weight_grams == min(350 * sum(quantities), 31_500)


def test_a_missing_billing_number_names_product_and_fix() -> None:
    location = msgspec.structs.replace(LOCATION, billing_numbers={"V01PAK": "33333333330102"})
    with pytest.raises(ValueError, match="no billing number for product V53WPAK"):
        shipment_data(location, reference="f-1", consignee=party("AT"), lines=[], ship_date=DAY)


def test_intake_and_corrections_plan_one_check_each() -> None:
    plan = carrier_order_effects(lambda: (DHL,), lambda: (LOCATION,))
    order = sample_order(external_id="1")
    received = OrderReceived(
        at=order.placed_at, actor="x", order_id="o1", channel="b2b", order=order
    )
    [check] = plan("b2b", None, [received])
    assert check.target == "carrier/dhl"
    assert check.idempotency_key == "carrier/dhl:validate:o1:1"
    work = msgspec.json.decode(check.payload, type=ValidateAddress)
    assert work.address == order.shipping_address
    pickup = sample_order(external_id="2", shipping_method="pickup", pickup_location="wh-1")
    held = OrderReceived(at=order.placed_at, actor="x", order_id="o2", channel="b2b", order=pickup)
    assert plan("b2b", None, [held]) == []
    assert carrier_order_effects(lambda: (), lambda: (LOCATION,))("b2b", None, [received]) == []
    new = Address(name="Max", street="Weg 2", zip="10115", city="Berlin", country="DE")
    corrected = AddressCorrected(at=order.placed_at, actor="x", shipping_address=new, reason="r")
    state = apply(None, received)
    [again] = plan("b2b", state, [corrected])
    assert again.idempotency_key == f"carrier/dhl:validate:o1:{state.version + 1}"


async def test_packing_at_a_manual_carrier_location_plans_one_label() -> None:
    plan = carrier_fulfilment_effects(lambda: (LOCATION,))
    requested = FulfilmentRequested(
        at=sample_order().placed_at,
        actor="x",
        fulfilment_id="f1",
        order_id="o1",
        order_number="1",
        location="wh-1",
        kind="ship",
        lines=(),
        reserved_lines=(),
    )
    packed = FulfilmentProgressed(at=requested.at, actor="x", state="packed")
    state = apply_fulfilment(apply_fulfilment(None, requested), packed)
    [item] = await plan(state, [packed])
    assert item.idempotency_key == "carrier/dhl:label:f1"
    assert msgspec.json.decode(item.payload, type=BuyLabel).fulfilment_id == "f1"
    picked = FulfilmentProgressed(at=requested.at, actor="x", state="picked")
    assert await plan(state, [picked]) == []
    rest = msgspec.structs.replace(LOCATION, adapter="rest", url="http://3pl")
    assert await carrier_fulfilment_effects(lambda: (rest,))(state, [packed]) == []


def test_config_rules_for_shipping() -> None:
    with pytest.raises(ConfigError) as refused:
        parse_config(
            """
[[location]]
name = "wh-1"
carriers = ["ups"]
label_printer = "lpt1"

[[carrier]]
name = "dhl"
kind = "dhl-parcel-de"
""",
            environ={},
        )
    problems = refused.value.problems
    assert 'location[0].carriers[0]: unknown carrier "ups"' in problems
    assert "location[0].sender: required when the location has carriers" in problems
    assert any(p.startswith('location[0].label_printer: "lpt1" is not a printer') for p in problems)
    assert 'location[0].label_printer: a raw printer needs label_format = "zpl"' in problems
    assert "carrier[0].api_key_file: required for kind dhl-parcel-de" in problems

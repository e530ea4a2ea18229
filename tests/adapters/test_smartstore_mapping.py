"""Smartstore order -> canonical order: pure, so tested like domain code (with hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.smartstore import (
    SsAddress,
    SsCountry,
    SsOrder,
    SsOrderItem,
    SsProductRef,
    parse_tax_rates,
    to_canonical,
)
from adapters.smartstore.wire import OrdersPageBody
from somsd.domain.order import order_gross, validate_order

PLACED = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
GERMANY = SsCountry(
    id=81, name="Deutschland", two_letter_iso_code="DE", three_letter_iso_code="DEU"
)
ADDRESS = SsAddress(
    id=1,
    first_name="Max",
    last_name="Muster",
    email="max@example.com",
    city="Berlin",
    address1="Hauptstr. 1",
    zip_postal_code="10115",
    country_id=81,
    country=GERMANY,
)


def item(
    sku: str | None = "MUG-1",
    quantity: int = 2,
    unit: str = "12.50",
    rate: str = "19",
    name: str | None = "Tasse",
) -> SsOrderItem:
    gross = Decimal(unit) * quantity
    return SsOrderItem(
        id=1,
        order_id=145,
        product_id=12,
        sku=sku,
        quantity=quantity,
        unit_price_incl_tax=Decimal(unit),
        price_incl_tax=gross,
        price_excl_tax=(gross * 100 / (100 + Decimal(rate))).quantize(Decimal("0.01")),
        tax_rate=Decimal(rate),
        product=SsProductRef(name=name) if name else None,
    )


def shop_order(
    items: tuple[SsOrderItem, ...] = (item(),),
    *,
    shipping: str = "4.90",
    fee: str = "0",
    total: str | None = None,
    method: str = "Payments.Prepayment",
    shipping_method: str = "Standardversand",
    payment_status: int = 10,
    billing: SsAddress | None = ADDRESS,
    shipping_address: SsAddress | None = ADDRESS,
    tax_rates: str | None = None,
    order_tax: str | None = None,
) -> SsOrder:
    lines = sum((i.price_incl_tax for i in items), Decimal(0))
    computed = lines + Decimal(shipping) + Decimal(fee)
    tax: dict[Decimal, Decimal] = {}
    for i in items:
        tax[i.tax_rate] = tax.get(i.tax_rate, Decimal(0)) + i.price_incl_tax - i.price_excl_tax
    return SsOrder(
        id=145,
        order_number="1042",
        order_guid="6f1c2d9e-0000-4000-a000-000000000145",
        customer_id=77,
        payment_method_system_name=method,
        order_shipping_incl_tax=Decimal(shipping),
        payment_method_additional_fee_incl_tax=Decimal(fee),
        order_total=Decimal(total) if total is not None else computed,
        tax_rates=tax_rates
        if tax_rates is not None
        else ";".join(f"{r}:{a}" for r, a in tax.items()),
        order_tax=Decimal(order_tax) if order_tax is not None else sum(tax.values(), Decimal(0)),
        shipping_method=shipping_method,
        payment_status_id=payment_status,
        created_on_utc=PLACED,
        updated_on_utc=PLACED,
        order_items=items,
        billing_address=billing,
        shipping_address=shipping_address,
    )


def test_reference_payload_decodes_with_exact_decimals() -> None:
    body = b"""{"@odata.context":"https://shop/odata/v1/$metadata#Orders","value":[{
      "OrderNumber":"1042","OrderGuid":"6f1c","StoreId":1,"CustomerId":77,"ShippingAddressId":302,
      "PaymentMethodSystemName":"Payments.Prepayment","CustomerCurrencyCode":"EUR",
      "CurrencyRate":1.0,"OrderShippingInclTax":4.9,"OrderTax":10.28,"OrderTotal":64.4,
      "PaidDateUtc":null,"CreatedOnUtc":"2025-03-01T09:15:02.113Z",
      "UpdatedOnUtc":"2025-03-01T09:15:03.5Z","OrderStatusId":10,"PaymentStatusId":10,
      "ShippingStatusId":20,"Id":145,"SomePluginField":{"x":1},
      "OrderItems":[{"OrderId":145,"ProductId":12,"Sku":"ABC-1","Quantity":2,
        "UnitPriceInclTax":29.75,"PriceInclTax":59.5,"TaxRate":19.0,"Id":881}],
      "ShippingAddress":{"FirstName":"Max","LastName":"Muster","CountryId":81,"City":"Berlin",
        "Address1":"Str. 1","ZipPostalCode":"10115","Id":302}}],
     "@odata.nextLink":"https://shop/odata/v1/Orders?$skip=1"}"""
    page = msgspec.json.decode(body, type=OrdersPageBody)
    order = page.value[0]
    assert order.order_total == Decimal("64.4")
    assert order.order_items[0].unit_price_incl_tax == Decimal("29.75")
    assert order.updated_on_utc.utcoffset() is not None
    assert page.next_link is not None


def test_a_consistent_order_maps_without_holds() -> None:
    mapped = to_canonical(shop_order(), channel="shop")
    assert mapped.order is not None
    assert mapped.holds == ()
    order = mapped.order
    assert (order.external_id, order.number) == ("6f1c2d9e-0000-4000-a000-000000000145", "1042")
    assert order.lines[0].name == "Tasse"
    assert order.lines[0].unit_price == Decimal("12.50")
    assert (order.shipping.method, order.shipping.price) == ("standard", Decimal("4.90"))
    assert (order.payment.method, order.payment.status) == ("banktransfer", "pending")
    assert order.payment.amount == Decimal("29.90")
    assert order.billing_address.country == "DE"
    assert order.customer.id == "77"
    assert validate_order(order) == []


def test_payment_fee_goes_into_shipping_and_is_kept_as_a_charge() -> None:
    mapped = to_canonical(shop_order(fee="2.00", method="Payments.CashOnDelivery"), channel="shop")
    assert mapped.order is not None
    assert mapped.order.shipping.price == Decimal("6.90")
    assert mapped.order.payment.method == "cod"
    assert [c.kind for c in mapped.charges] == ["shipping", "payment_fee"]
    assert mapped.charges[1].gross == Decimal("2.00")


def test_standard_payment_and_shipping_maps() -> None:
    cases = {
        "Payments.PayPalStandard": "paypal",
        "Payments.Invoice": "invoice",
        "Smartstore.StripeElements": "creditcard",
        "Payments.DirectDebit": "banktransfer",
        "Payments.PayPalSomethingNew": "paypal",
    }
    for system_name, expected in cases.items():
        mapped = to_canonical(shop_order(method=system_name), channel="shop")
        assert mapped.order is not None
        assert mapped.order.payment.method == expected, system_name
    configured = to_canonical(
        shop_order(method="Payments.Klarna"),
        channel="shop",
        payment_methods={"Payments.Klarna": "invoice"},
    )
    assert configured.order is not None
    assert configured.holds == ()
    express = to_canonical(shop_order(shipping_method="DHL Express"), channel="shop")
    assert express.order is not None
    assert express.order.shipping.method == "express"


def test_pickup_with_its_store_and_without_one() -> None:
    order = shop_order(shipping="0", shipping_method="Abholung im Laden", shipping_address=None)
    mapped = to_canonical(
        order, channel="shop", pickup_locations={"Abholung im Laden": "store-koeln"}
    )
    assert mapped.order is not None
    assert (mapped.order.shipping.method, mapped.order.shipping.pickup_location) == (
        "pickup",
        "store-koeln",
    )
    assert mapped.order.shipping_address == mapped.order.billing_address
    unknown = to_canonical(order, channel="shop")
    assert unknown.order is not None
    assert unknown.order.shipping.method == "standard"
    assert [h.code for h in unknown.holds] == ["pickup_store_unknown"]


def test_bad_shop_data_holds_or_is_unrepresentable_never_raises() -> None:
    no_country = msgspec.structs.replace(ADDRESS, country=None, country_id=999)
    held = to_canonical(shop_order(billing=no_country, shipping_address=no_country), channel="s")
    assert held.order is not None
    assert {h.code for h in held.holds} == {"unknown_country"}
    assert held.order.billing_address.country == "DE"

    off = to_canonical(shop_order(total="99.00"), channel="s")
    assert off.order is not None
    assert [h.code for h in off.holds] == ["totals_mismatch"]
    assert off.order.payment.amount == Decimal("29.90")
    assert "99.00" in off.hold_reasons[0]

    zero = to_canonical(shop_order(items=(item(), item(sku="X", quantity=0))), channel="s")
    assert zero.order is not None
    assert [h.code for h in zero.holds] == ["zero_quantity"]
    assert len(zero.order.lines) == 1

    only_zero = to_canonical(shop_order(items=(item(quantity=0),), total="4.90"), channel="s")
    assert only_zero.order is None
    assert only_zero.unrepresentable == "no item has a quantity"

    empty = to_canonical(shop_order(items=(), total="4.90"), channel="s")
    assert empty.order is None
    assert empty.unrepresentable == "the order has no items"

    unknown = to_canonical(shop_order(method="Payments.Bitcoin"), channel="s")
    assert unknown.order is not None
    assert [h.code for h in unknown.holds] == ["unknown_payment_method"]

    no_sku = to_canonical(shop_order(items=(item(sku=None),)), channel="s")
    assert no_sku.order is not None
    assert no_sku.order.lines[0].sku == "ss-product-12"
    assert [h.code for h in no_sku.holds] == ["missing_sku"]

    no_billing = to_canonical(shop_order(billing=None), channel="s")
    assert no_billing.unrepresentable is not None

    bad_tax = to_canonical(shop_order(tax_rates="nonsense"), channel="s")
    assert [h.code for h in bad_tax.holds] == ["tax_mismatch"]

    huge = to_canonical(shop_order(items=(item(quantity=10**9),)), channel="s")
    assert huge.order is None
    assert huge.unrepresentable is not None

    bad_mail = msgspec.structs.replace(ADDRESS, email="not-an-address")
    mail = to_canonical(shop_order(billing=bad_mail), channel="s")
    assert mail.order is not None
    assert [h.code for h in mail.holds] == ["email_invalid"]


def test_tax_rates_parse() -> None:
    assert parse_tax_rates("19:3.99;7:0.5") == {
        Decimal(19): Decimal("3.99"),
        Decimal(7): Decimal("0.5"),
    }
    assert parse_tax_rates("19.0000:3.9900;") == {Decimal(19): Decimal("3.9900")}
    assert parse_tax_rates("") == {}
    assert parse_tax_rates("7,5:1") == {Decimal("7.5"): Decimal(1)}
    assert parse_tax_rates("abc") is None


# -- property: consistent shop orders map to the shop's total, tax per rate sums --------------

cents = st.integers(min_value=1, max_value=50_000).map(lambda c: Decimal(c) / 100)
rates = st.sampled_from(["19", "7", "0"])
items_strategy = st.lists(
    st.tuples(
        st.text("ABCDEFGH-0123456789", min_size=1, max_size=12),
        st.integers(min_value=1, max_value=20),
        cents,
        rates,
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(
    lines=items_strategy,
    shipping=st.integers(min_value=0, max_value=2000).map(lambda c: Decimal(c) / 100),
    fee=st.sampled_from([Decimal(0), Decimal("2.00"), Decimal("3.50")]),
    method=st.sampled_from(["Payments.Prepayment", "Payments.PayPalStandard", "Payments.Invoice"]),
    paid=st.booleans(),
)
def test_mapped_totals_equal_the_shop_total(
    lines: list[tuple[str, int, Decimal, str]],
    shipping: Decimal,
    fee: Decimal,
    method: str,
    paid: bool,
) -> None:
    items = tuple(
        msgspec.structs.replace(item(sku, qty, str(unit), rate), id=index + 1)
        for index, (sku, qty, unit, rate) in enumerate(lines)
    )
    order = shop_order(
        items,
        shipping=str(shipping),
        fee=str(fee),
        method=method,
        payment_status=30 if paid else 10,
    )
    mapped = to_canonical(order, channel="shop")
    assert mapped.order is not None, mapped.unrepresentable
    assert mapped.holds == ()
    assert mapped.order.payment.amount == order.order_total
    assert order_gross(mapped.order) == order.order_total
    assert mapped.order.payment.status == ("paid" if paid else "pending")
    assert sum(mapped.tax_by_rate.values(), Decimal(0)) == order.order_tax
    for rate, amount in mapped.tax_by_rate.items():
        expected = sum(
            (i.price_incl_tax - i.price_excl_tax for i in items if i.tax_rate == rate), Decimal(0)
        )
        assert amount == expected
    assert validate_order(mapped.order) == []


@settings(max_examples=150, deadline=None)
@given(
    quantity=st.integers(min_value=-5, max_value=2_000_000),
    unit=st.decimals(min_value=-10, max_value=10**13, places=4, allow_nan=False),
    total=st.decimals(min_value=-10, max_value=10**13, places=3, allow_nan=False),
    iso=st.one_of(st.none(), st.text(max_size=4)),
    shipping_method=st.text(max_size=30),
)
def test_arbitrary_shop_data_never_raises(
    quantity: int, unit: Decimal, total: Decimal, iso: str | None, shipping_method: str
) -> None:
    country = msgspec.structs.replace(GERMANY, two_letter_iso_code=iso)
    address = msgspec.structs.replace(ADDRESS, country=country)
    line = msgspec.structs.replace(
        item(), quantity=quantity, unit_price_incl_tax=unit, price_incl_tax=unit * quantity
    )
    order = msgspec.structs.replace(
        shop_order(
            (line,), billing=address, shipping_address=address, shipping_method=shipping_method
        ),
        order_total=total,
    )
    mapped = to_canonical(order, channel="shop")
    assert (mapped.order is None) != (mapped.unrepresentable is None)
    if mapped.order is not None:
        assert validate_order(mapped.order) == []


def test_shopper_orders_are_accepted_by_the_order_lifecycle() -> None:
    """What the mapping returns is what the order desk takes in (`receive_order`)."""
    from adapters.smartstore import SmartstoreSimulator
    from somsd.domain.lifecycle import receive_order
    from somsd.domain.policy import OrderPolicy

    sim = SmartstoreSimulator(seed=4)
    sim.seed_catalogue(200, combination_share=0.2, seed=4)
    policy = OrderPolicy(pickup_locations=frozenset({"store-koeln"}))
    for _ in range(100):
        placed = sim.place_order()
        wire = msgspec.structs.replace(
            placed,
            order_items=tuple(
                msgspec.structs.replace(
                    i, product=SsProductRef(name=sim.products[i.product_id].name)
                )
                for i in sim.order_items[placed.id]
            ),
            billing_address=msgspec.structs.replace(
                sim.addresses[placed.billing_address_id],
                country=sim.countries[sim.addresses[placed.billing_address_id].country_id or 0],
            ),
        )
        mapped = to_canonical(
            wire,
            channel="shop",
            default_pickup_location="store-koeln",
            known_pickup_locations=policy.pickup_locations,
        )
        assert mapped.order is not None, mapped.unrepresentable
        assert mapped.holds == (), mapped.hold_reasons
        events = receive_order(
            mapped.order, order_id="o-1", channel="shop", policy=policy, now=PLACED, actor="test"
        )
        assert events


def test_variant_attributes_name_the_line() -> None:
    variant = msgspec.structs.replace(
        item(sku="TEE-M", name="T-Shirt"), attribute_description="Größe: M<br />Farbe: <b>rot</b>"
    )
    mapped = to_canonical(shop_order((variant,)), channel="shop")
    assert mapped.order is not None
    assert mapped.order.lines[0].name == "T-Shirt (Größe: M, Farbe: rot)"

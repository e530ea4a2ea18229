"""Smartstore order -> canonical order; pure, never raises on shop data.

`to_canonical` answers a `MappedOrder`: either a canonical `Order` that passes
`validate_order` (so the order desk takes it) plus `holds` — things somsd can take in but a
human must look at — or `unrepresentable`, a sentence saying why no order can be built.

Choices (the issue is silent on them):
- Amounts: the canonical order is gross. Lines use `UnitPriceInclTax` (or `PriceInclTax /
  Quantity` when the shop discounted the line and that divides to the cent); shipping price =
  `OrderShippingInclTax + PaymentMethodAdditionalFeeInclTax` because the canonical order has no
  fee slot, and the customer pays both besides the goods; both are kept separately in `charges`
  with net, gross and tax rate. `payment.amount` is `OrderTotal`; when lines + charges differ
  from it by more than a cent (order discounts, credit balance, gift cards, rounding — none of
  which the canonical order can express) the order is held with `totals_mismatch` and the
  amount is set to what the lines and charges add up to, so invoices stay consistent.
- Currency: Smartstore amounts are in the *primary store currency*, which the order does not
  name (`CustomerCurrencyCode` is the customer's display currency): the caller passes it.
- Tax: `TaxRates` ("19:3.99;7:0.5") parsed into `tax_by_rate`; a sum that differs from
  `OrderTax` by more than a cent holds the order (`tax_mismatch`).
- Countries: ISO alpha-2 from the expanded `Country`; missing or not ISO -> the configured
  `default_country` and a hold (`unknown_country`); no shipping address (pickup, digital) ->
  the billing address.
- Line names: the expanded `Product.Name`, plus the variant from `AttributeDescription` as plain
  text ("T-Shirt (Größe: M, Farbe: rot)"); the SKU when the product was not expanded.
- Lines without SKU (items older than 5.0.5) -> `ss-product-<ProductId>` and a hold; quantity
  0 or below -> the line is dropped and the order held (`zero_quantity`); no line left ->
  unrepresentable.
- Payment methods: `payment_methods` (config) first, then `DEFAULT_PAYMENT_METHODS`, then
  name patterns (PayPal -> paypal, Stripe/Card -> creditcard); unknown -> `invoice` (counted
  as not yet paid, the most careful reading) and a hold (`unknown_payment_method`).
- Payment status: Pending 10 -> pending, Authorized 20 -> authorized, Paid 30 -> paid,
  PartiallyRefunded 35 -> paid, Refunded 40 -> refunded, Voided 50 -> pending (nothing paid).
- Shipping methods: `shipping_methods` (config, by the shop's ShippingMethod name,
  case-insensitive) first, then: names with "express" -> express; with "abhol", "pickup",
  "collect" or "filiale" -> pickup, else standard. A pickup needs its store: `pickup_locations`
  maps the shop's ShippingMethod name to a somsd store, else `default_pickup_location`; with
  neither the order goes in as standard with a hold (`pickup_store_unknown`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from enum import IntEnum
from typing import Final, Literal, cast

import msgspec

from adapters.smartstore.wire import SsAddress, SsOrder, SsOrderItem
from somsd.domain.countries import is_country_code
from somsd.domain.money import is_known_currency, minor_unit, round_money, sum_money
from somsd.domain.order import (
    MAX_QUANTITY,
    Address,
    Customer,
    Order,
    OrderLine,
    Payment,
    PaymentMethod,
    PaymentStatus,
    Shipping,
    ShippingMethod,
    validate_order,
)

__all__ = [
    "DEFAULT_PAYMENT_METHODS",
    "DEFAULT_SHIPPING_METHODS",
    "Charge",
    "HoldNote",
    "MappedOrder",
    "OrderStatus",
    "PaymentStatusId",
    "ShippingStatus",
    "canonical_payment_status",
    "parse_tax_rates",
    "to_canonical",
]


class OrderStatus(IntEnum):
    PENDING = 10
    PROCESSING = 20
    COMPLETE = 30
    CANCELLED = 40


class PaymentStatusId(IntEnum):
    PENDING = 10
    AUTHORIZED = 20
    PAID = 30
    PARTIALLY_REFUNDED = 35
    REFUNDED = 40
    VOIDED = 50


class ShippingStatus(IntEnum):
    SHIPPING_NOT_REQUIRED = 10
    NOT_YET_SHIPPED = 20
    PARTIALLY_SHIPPED = 25
    SHIPPED = 30
    DELIVERED = 40


class ManageInventoryMethod(IntEnum):
    DONT_MANAGE_STOCK = 0
    MANAGE_STOCK = 1
    MANAGE_STOCK_BY_ATTRIBUTES = 2


class LowStockActivity(IntEnum):
    NOTHING = 0
    DISABLE_BUY_BUTTON = 1
    UNPUBLISH = 2


# Smartstore's standard providers (offline payments module, PayPal, Stripe, Amazon Pay).
DEFAULT_PAYMENT_METHODS: Final[Mapping[str, PaymentMethod]] = {
    "Payments.Prepayment": "banktransfer",  # Vorkasse: the customer transfers before shipping
    "Payments.Invoice": "invoice",
    "Payments.CashOnDelivery": "cod",
    "Payments.PayInStore": "cod",  # paid at the counter when collected: money on handover
    "Payments.DirectDebit": "banktransfer",  # SEPA debit: money arrives by bank, later
    "Payments.PurchaseOrderNumber": "invoice",  # B2B purchase order, billed afterwards
    "Payments.Manual": "creditcard",  # card data taken manually
    "Payments.PayPalStandard": "paypal",
    "Payments.PayPalExpress": "paypal",
    "Payments.PayPalPlus": "paypal",
    "Payments.PayPalPayLater": "paypal",
    "Payments.PayPalSepa": "paypal",
    "Payments.PayPalCreditCard": "creditcard",
    "Payments.PayPalInvoice": "invoice",  # PayPal "Pay upon invoice": billed, paid later
    "Smartstore.StripeElements": "creditcard",
    "Payments.AmazonPay": "creditcard",  # wallet backed by a card, captured up front
}
DEFAULT_SHIPPING_METHODS: Final[Mapping[str, ShippingMethod]] = {
    "Standardversand": "standard",
    "Expressversand": "express",
    "Abholung im Laden": "pickup",
    "Selbstabholung": "pickup",
}
_PICKUP_WORDS: Final = ("abhol", "pickup", "pick-up", "collect", "filiale", "in store")

_PAYMENT_STATUS: Final[Mapping[int, PaymentStatus]] = {
    PaymentStatusId.PENDING: "pending",
    PaymentStatusId.AUTHORIZED: "authorized",
    PaymentStatusId.PAID: "paid",
    PaymentStatusId.PARTIALLY_REFUNDED: "paid",
    PaymentStatusId.REFUNDED: "refunded",
    PaymentStatusId.VOIDED: "pending",
}
_BREAK = re.compile(r"<br\s*/?>|</p>|</li>", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_TAX_PAIR = re.compile(r"^\s*(?P<rate>-?\d+(?:[.,]\d+)?)\s*:\s*(?P<amount>-?\d+(?:[.,]\d+)?)\s*$")


class HoldNote(msgspec.Struct, frozen=True):
    """Why a mapped order needs a look: a stable `code` (metrics) and a sentence (operator)."""

    code: str
    message: str


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    """A non-goods amount of the shop order (shipping, payment fee), as the shop states it."""

    kind: Literal["shipping", "payment_fee"]
    gross: Decimal
    net: Decimal
    tax_rate: Decimal


class MappedOrder(msgspec.Struct, frozen=True, kw_only=True):
    """What a shop order becomes: an `order` (maybe with `holds`), or `unrepresentable`."""

    external_id: str  # OrderGuid (the stable key), else the Id
    number: str
    shop_id: int
    order: Order | None = None
    holds: tuple[HoldNote, ...] = ()
    unrepresentable: str | None = None
    order_status: int = OrderStatus.PENDING
    payment_status: int = PaymentStatusId.PENDING
    shipping_status: int = ShippingStatus.NOT_YET_SHIPPED
    shop_total: Decimal = Decimal(0)
    tax_by_rate: dict[Decimal, Decimal] = msgspec.field(default_factory=dict)
    charges: tuple[Charge, ...] = ()

    @property
    def hold_reasons(self) -> list[str]:
        return [hold.message for hold in self.holds]

    @property
    def cancelled(self) -> bool:
        return self.order_status == OrderStatus.CANCELLED

    @property
    def paid(self) -> bool:
        return self.payment_status in (PaymentStatusId.PAID, PaymentStatusId.PARTIALLY_REFUNDED)


def canonical_payment_status(payment_status_id: int) -> PaymentStatus:
    return _PAYMENT_STATUS.get(payment_status_id, "pending")


def parse_tax_rates(text: str | None) -> dict[Decimal, Decimal] | None:
    """`"19:3.99;7:0.5"` -> {19: 3.99, 7: 0.5}; None when the text is not in that shape."""
    result: dict[Decimal, Decimal] = {}
    if not text or not text.strip():
        return result
    for part in text.split(";"):
        if not part.strip():
            continue
        match = _TAX_PAIR.match(part)
        if match is None:
            return None
        try:
            rate = Decimal(match.group("rate").replace(",", "."))
            amount = Decimal(match.group("amount").replace(",", "."))
        except InvalidOperation:
            return None
        # "19.0000" and "19" are one rate; keys are written as short as they are exact.
        key = rate.quantize(Decimal(1)) if rate == rate.to_integral_value() else rate.normalize()
        result[key] = result.get(key, Decimal(0)) + amount
    return result


def to_canonical(
    order: SsOrder,
    *,
    channel: str,
    currency: str = "EUR",
    payment_methods: Mapping[str, str] | None = None,
    shipping_methods: Mapping[str, str] | None = None,
    pickup_locations: Mapping[str, str] | None = None,
    default_pickup_location: str | None = None,
    known_pickup_locations: Collection[str] | None = None,
    default_country: str = "DE",
) -> MappedOrder:
    """Map one expanded shop order; see the module docstring for every rule."""
    # OrderGuid is the stable key; Id only if a shop ever sends none (never seen).
    external_id = (order.order_guid or "").strip() or str(order.id)
    number = (order.order_number or "").strip() or str(order.id)
    base = MappedOrder(
        external_id=external_id,
        number=number,
        shop_id=order.id,
        order_status=order.order_status_id,
        payment_status=order.payment_status_id,
        shipping_status=order.shipping_status_id,
        shop_total=order.order_total,
    )
    try:
        return _map(
            order,
            base,
            channel=channel,
            currency=currency,
            payment_methods=payment_methods or {},
            shipping_methods=shipping_methods or {},
            pickup_locations=pickup_locations or {},
            default_pickup_location=default_pickup_location,
            known_pickup_locations=known_pickup_locations,
            default_country=default_country,
        )
    except (ArithmeticError, ValueError, TypeError) as exc:  # data we did not foresee
        return msgspec.structs.replace(
            base, unrepresentable=f"cannot read the shop order: {type(exc).__name__}: {exc}"
        )


def _map(
    order: SsOrder,
    base: MappedOrder,
    *,
    channel: str,
    currency: str,
    payment_methods: Mapping[str, str],
    shipping_methods: Mapping[str, str],
    pickup_locations: Mapping[str, str],
    default_pickup_location: str | None,
    known_pickup_locations: Collection[str] | None,
    default_country: str,
) -> MappedOrder:
    del channel  # part of the signature for log context in callers; the mapping is per shop
    if not is_known_currency(currency):
        return msgspec.structs.replace(
            base, unrepresentable=f'the configured currency "{currency}" is not ISO 4217'
        )
    holds: list[HoldNote] = []
    lines = _lines(order.order_items, currency, holds)
    if not lines:
        reason = "the order has no items" if not order.order_items else "no item has a quantity"
        return msgspec.structs.replace(base, unrepresentable=reason, holds=tuple(holds))
    if order.billing_address is None:
        return msgspec.structs.replace(
            base,
            unrepresentable="the order has no billing address (was it expanded?)",
            holds=tuple(holds),
        )
    billing = _address(order.billing_address, "billing", default_country, holds)
    shipping_address = (
        _address(order.shipping_address, "shipping", default_country, holds)
        if order.shipping_address is not None
        else billing
    )
    shipping = _shipping(
        order,
        currency=currency,
        shipping_methods=shipping_methods,
        pickup_locations=pickup_locations,
        default_pickup_location=default_pickup_location,
        known_pickup_locations=known_pickup_locations,
        holds=holds,
    )
    method = _payment_method(order.payment_method_system_name, payment_methods, holds)
    status = canonical_payment_status(order.payment_status_id)
    if order.payment_status_id == PaymentStatusId.VOIDED:
        holds.append(HoldNote("payment_voided", "the shop voided the payment authorization"))
    charges = (
        Charge(
            kind="shipping",
            gross=order.order_shipping_incl_tax,
            net=order.order_shipping_excl_tax,
            tax_rate=order.order_shipping_tax_rate,
        ),
        Charge(
            kind="payment_fee",
            gross=order.payment_method_additional_fee_incl_tax,
            net=order.payment_method_additional_fee_excl_tax,
            tax_rate=order.payment_method_additional_fee_tax_rate,
        ),
    )
    computed = sum_money(
        [round_money(line.unit_price * line.quantity, currency) for line in lines]
        + [shipping.price],
        currency,
    )
    shop_total = round_money(order.order_total, currency)
    tolerance = minor_unit(currency)
    amount = shop_total
    if abs(shop_total - computed) > tolerance:
        holds.append(
            HoldNote(
                "totals_mismatch",
                f"the shop's OrderTotal {shop_total} {currency} is not lines plus shipping and "
                f"fee ({computed} {currency}; order discount {order.order_discount}, credit "
                f"balance {order.credit_balance}, rounding {order.order_total_rounding}); "
                f"somsd took {computed}",
            )
        )
        amount = computed
    if amount < 0:
        return msgspec.structs.replace(
            base, unrepresentable=f"the order total {amount} is negative", holds=tuple(holds)
        )
    tax = parse_tax_rates(order.tax_rates)
    if tax is None:
        holds.append(HoldNote("tax_mismatch", f'TaxRates "{order.tax_rates}" is unreadable'))
        tax = {}
    elif tax and abs(sum(tax.values(), Decimal(0)) - order.order_tax) > tolerance:
        holds.append(
            HoldNote(
                "tax_mismatch",
                f"TaxRates {order.tax_rates} add up to {sum(tax.values(), Decimal(0))}, "
                f"OrderTax is {order.order_tax}",
            )
        )
    email = (order.billing_address.email or "").strip()
    if not re.match(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", email):
        holds.append(
            HoldNote("email_invalid", f'the billing e-mail "{email}" is not an e-mail address')
        )
        email = f"customer-{order.customer_id or order.id}@invalid.example"
    customer = Customer(
        id=str(order.customer_id) if order.customer_id else None,
        email=email,
        name=billing.name or billing.company or f"Kunde {order.customer_id}",
    )
    canonical = Order(
        external_id=base.external_id,
        number=base.number,
        placed_at=order.created_on_utc,
        currency=currency,
        customer=customer,
        billing_address=billing,
        shipping_address=shipping_address,
        lines=tuple(lines),
        shipping=shipping,
        payment=Payment(method=method, status=status, amount=amount),
    )
    problems = validate_order(canonical, known_pickup_locations=known_pickup_locations)
    if problems:
        detail = "; ".join(f"{problem.path}: {problem.message}" for problem in problems)
        return msgspec.structs.replace(
            base, unrepresentable=detail, holds=tuple(holds), tax_by_rate=tax, charges=charges
        )
    return msgspec.structs.replace(
        base, order=canonical, holds=tuple(holds), tax_by_rate=tax, charges=charges
    )


def _lines(items: tuple[SsOrderItem, ...], currency: str, holds: list[HoldNote]) -> list[OrderLine]:
    lines: list[OrderLine] = []
    for index, item in enumerate(items):
        sku = (item.sku or "").strip() or ((item.product.sku or "").strip() if item.product else "")
        if not sku:
            sku = f"ss-product-{item.product_id}"
            holds.append(HoldNote("missing_sku", f"item {index + 1} has no SKU; taken in as {sku}"))
        if item.quantity <= 0:
            holds.append(
                HoldNote(
                    "zero_quantity",
                    f"item {index + 1} ({sku}) has quantity {item.quantity}; left out",
                )
            )
            continue
        if item.quantity > MAX_QUANTITY:
            raise ValueError(f"item {index + 1} ({sku}) has an absurd quantity {item.quantity}")
        unit = round_money(item.unit_price_incl_tax, currency)
        line_total = round_money(item.price_incl_tax, currency)
        if round_money(unit * item.quantity, currency) != line_total:
            per_unit = line_total / item.quantity
            if round_money(per_unit, currency) == per_unit:
                unit = per_unit  # a line discount that spreads evenly over the units
        name = ((item.product.name or "") if item.product else "").strip() or sku
        variant = _plain_text(item.attribute_description)
        if variant:
            name = f"{name} ({variant})"
        rate = item.tax_rate
        if not rate.is_finite() or not 0 <= rate <= 100:
            holds.append(
                HoldNote("tax_mismatch", f"item {index + 1} ({sku}) has tax rate {rate}; took 0")
            )
            rate = Decimal(0)
        lines.append(
            OrderLine(
                sku=sku, name=name[:200], quantity=item.quantity, unit_price=unit, tax_rate=rate
            )
        )
    return lines


def _address(
    address: SsAddress, which: str, default_country: str, holds: list[HoldNote]
) -> Address:
    country_code = ""
    if address.country is not None and address.country.two_letter_iso_code:
        country_code = address.country.two_letter_iso_code.strip().upper()
    if not is_country_code(country_code):
        given = country_code or (
            f"CountryId {address.country_id}" if address.country_id else "none"
        )
        holds.append(
            HoldNote(
                "unknown_country",
                f"the {which} address has no ISO country ({given}); assumed {default_country}",
            )
        )
        country_code = default_country
    name = " ".join(part.strip() for part in (address.first_name, address.last_name) if part)
    street = (address.address1 or "").strip()
    if address.address2 and address.address2.strip():
        street = f"{street}, {address.address2.strip()}" if street else address.address2.strip()
    company = (address.company or "").strip() or None
    return Address(
        name=name.strip(),
        company=company,
        street=street,
        zip=(address.zip_postal_code or "").strip(),
        city=(address.city or "").strip(),
        country=country_code,
    )


def _shipping(
    order: SsOrder,
    *,
    currency: str,
    shipping_methods: Mapping[str, str],
    pickup_locations: Mapping[str, str],
    default_pickup_location: str | None,
    known_pickup_locations: Collection[str] | None,
    holds: list[HoldNote],
) -> Shipping:
    name = (order.shipping_method or "").strip()
    price = round_money(
        order.order_shipping_incl_tax + order.payment_method_additional_fee_incl_tax, currency
    )
    method = _shipping_method(name, shipping_methods, holds)
    if method != "pickup":
        return Shipping(method=method, price=price)
    store = _lookup(pickup_locations, name) or default_pickup_location
    if store is not None and (known_pickup_locations is None or store in known_pickup_locations):
        return Shipping(method="pickup", price=price, pickup_location=store)
    holds.append(
        HoldNote(
            "pickup_store_unknown",
            f'"{name}" is a pickup but no somsd store is configured for it '
            f"(pickup_locations); taken in as standard shipping",
        )
    )
    return Shipping(method="standard", price=price)


def _shipping_method(
    name: str, shipping_methods: Mapping[str, str], holds: list[HoldNote]
) -> ShippingMethod:
    configured = _lookup(shipping_methods, name) or _lookup(DEFAULT_SHIPPING_METHODS, name)
    if configured is not None:
        if configured in ("standard", "express", "pickup"):
            return cast(ShippingMethod, configured)
        holds.append(
            HoldNote("unknown_shipping_method", f'"{name}" maps to unknown method "{configured}"')
        )
        return "standard"
    lowered = name.lower()
    if "express" in lowered:
        return "express"
    if any(word in lowered for word in _PICKUP_WORDS):
        return "pickup"
    return "standard"


def _payment_method(
    system_name: str | None, payment_methods: Mapping[str, str], holds: list[HoldNote]
) -> PaymentMethod:
    name = (system_name or "").strip()
    mapped = _lookup(payment_methods, name) or _lookup(DEFAULT_PAYMENT_METHODS, name)
    if mapped is None:
        lowered = name.lower()
        if "paypal" in lowered:
            mapped = "paypal"
        elif "stripe" in lowered or "creditcard" in lowered or "card" in lowered:
            mapped = "creditcard"
    if mapped in ("creditcard", "paypal", "invoice", "banktransfer", "check", "cod"):
        return cast(PaymentMethod, mapped)
    holds.append(
        HoldNote(
            "unknown_payment_method",
            f'payment method "{name or "none"}" is not mapped (payment_methods); '
            "taken in as invoice (not yet paid)",
        )
    )
    return "invoice"


def _plain_text(html: str | None) -> str:
    """AttributeDescription ("Größe: M<br />Farbe: rot") as one line: "Größe: M, Farbe: rot"."""
    if not html:
        return ""
    text = _TAG.sub("", _BREAK.sub("\n", html))
    lines = (" ".join(line.split()) for line in text.splitlines())
    return ", ".join(line for line in lines if line)[:120]


def _lookup(mapping: Mapping[str, str], name: str) -> str | None:
    if not name:
        return None
    if name in mapping:
        return mapping[name]
    lowered = name.lower()
    for key, value in mapping.items():
        if key.lower() == lowered:
            return value
    return None

"""Hold rules: which accepted orders a human must look at before they are fulfilled.

A hold is not a rejection. Rejected orders (see `order.validate_order`) are broken data the shop
must fix and resend; a held order is valid, stored and acknowledged, but risky or incomplete in
a way an operator can resolve: call the customer about the street, check the large invoice
order, decide about a blocked account. `evaluate_holds` only answers *why* an order should be
held; the decision functions turn a non-empty answer into an `OrderHeld` event (status on-hold),
and an operator's release returns the order to the status it was held from.

Rules, each a `HoldReason` with a stable `code`:
- "address_incomplete": name, street, zip or city blank in the billing address, or in the
  shipping address unless the order is picked up in a store; or a postcode that cannot be right
  for its country (patterns for the countries the default config ships to).
- "unpaid_over_limit": not yet paid, paid with a method that ships before the money arrives
  (`unpaid_methods`, default invoice and cash on delivery), and the order total above the
  configured limit for the order's currency (`unpaid_limits`; no limit -> no hold).
- "customer_blocked": the customer's e-mail (case-insensitive) or customer id is on a block list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Final

import msgspec

from somsd.domain.order import Address, Order, PaymentMethod, order_gross

__all__ = ["HoldReason", "HoldRules", "evaluate_holds"]

# Invoice and COD orders ship before the money arrives, so a large unpaid one is credit given
# to a stranger. Bank transfer and cheque are prepayment in German shops: the order waits in
# "pending" until the money is there, so there is nothing to hold.
_DEFAULT_UNPAID_METHODS: Final[frozenset[PaymentMethod]] = frozenset({"invoice", "cod"})

# Postcode shapes for the countries the reference config ships to (DE, AT, NL) and their
# neighbour CH; other countries are only checked for a non-blank zip.
_POSTCODES: Final[Mapping[str, tuple[re.Pattern[str], str]]] = {
    "DE": (re.compile(r"^\d{5}$"), "5 digits"),
    "AT": (re.compile(r"^\d{4}$"), "4 digits"),
    "CH": (re.compile(r"^\d{4}$"), "4 digits"),
    "NL": (re.compile(r"^\d{4} ?[A-Z]{2}$"), '4 digits and 2 letters, like "1011 AB"'),
}


class HoldReason(msgspec.Struct, frozen=True, gc=False):
    """Why an order is held: a stable `code`, a sentence for the operator, the field at fault."""

    code: str
    message: str
    path: str = ""  # JSON path into the canonical order, when one field is at fault


class HoldRules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The `[holds]` config section; the defaults hold nothing but incomplete addresses."""

    unpaid_methods: frozenset[PaymentMethod] = _DEFAULT_UNPAID_METHODS
    unpaid_limits: dict[str, Decimal] = msgspec.field(default_factory=dict)  # currency -> limit
    blocked_emails: frozenset[str] = frozenset()
    blocked_customer_ids: frozenset[str] = frozenset()


def evaluate_holds(order: Order, rules: HoldRules) -> list[HoldReason]:
    """Every reason to hold `order` (empty: let it through). Expects a validated order."""
    reasons = _address_reasons("billing_address", order.billing_address)
    if order.shipping.method != "pickup":
        reasons += _address_reasons("shipping_address", order.shipping_address)

    limit = rules.unpaid_limits.get(order.currency)
    total = order_gross(order)
    if (
        limit is not None
        and order.payment.status != "paid"
        and order.payment.method in rules.unpaid_methods
        and total > limit
    ):
        reasons.append(
            HoldReason(
                "unpaid_over_limit",
                f"{total} {order.currency} unpaid by {order.payment.method} exceeds the limit "
                f"of {limit} {order.currency}",
                "$.payment.amount",
            )
        )

    email = order.customer.email.strip().casefold()
    if email in {blocked.strip().casefold() for blocked in rules.blocked_emails}:
        reasons.append(
            HoldReason(
                "customer_blocked", f"e-mail {email} is on the block list", "$.customer.email"
            )
        )
    if order.customer.id is not None and order.customer.id in rules.blocked_customer_ids:
        reasons.append(
            HoldReason(
                "customer_blocked",
                f"customer {order.customer.id} is on the block list",
                "$.customer.id",
            )
        )
    return reasons


def _address_reasons(field: str, address: Address) -> list[HoldReason]:
    reasons = [
        HoldReason(
            "address_incomplete", f"{field.replace('_', ' ')} has no {part}", f"$.{field}.{part}"
        )
        for part in ("name", "street", "zip", "city")
        if not getattr(address, part).strip()
    ]
    postcode = _POSTCODES.get(address.country)
    zip_code = address.zip.strip()
    if postcode is not None and zip_code and not postcode[0].match(zip_code):
        shape = postcode[1]
        reasons.append(
            HoldReason(
                "address_incomplete",
                f'postcode "{zip_code}" is not a {address.country} postcode ({shape})',
                f"$.{field}.zip",
            )
        )
    return reasons

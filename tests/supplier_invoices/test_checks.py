"""The checks and the decision: each failure caught by a case built for it, and properties of
the arithmetic for any invoice."""

from __future__ import annotations

from decimal import Decimal

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from somsd.domain.money import round_money
from somsd.supplier_invoices.checks import (
    MatchData,
    check_arithmetic,
    decide,
    iban_is_valid,
    run_checks,
    vat_id_problem,
)
from somsd.supplier_invoices.model import SupplierInvoice, Tolerances
from tests.supplier_invoices.corpus import BUERO, BUERO_ITEMS, NORDLICHT, make_invoice, orders_for

TOLERANCES = Tolerances(quantity=Decimal(0), price_percent=Decimal(2), price_cents=Decimal(5))


def outcome(invoice: SupplierInvoice, *, seen: tuple[str, ...] = (), **kwargs: object) -> object:
    orders, receipts = orders_for(invoice, BUERO)
    match = kwargs.get("match") or MatchData.build(orders, receipts)
    assert isinstance(match, MatchData)
    results = run_checks(
        invoice,
        supplier=BUERO.record,
        seen_numbers=seen,
        match=match,
        tolerances=TOLERANCES,
    )
    return decide(results)


def good() -> SupplierInvoice:
    return make_invoice(BUERO, "R-1", "PO-1", list(BUERO_ITEMS))


def failed_rules(decision: object) -> set[str]:
    return {result.rule for result in decision.failed}  # type: ignore[attr-defined]


def test_a_matching_invoice_is_approved() -> None:
    decision = outcome(good())
    assert decision.outcome == "approved", decision  # type: ignore[attr-defined]


def test_wrong_sum_is_rejected_with_a_reason_for_the_supplier() -> None:
    invoice = make_invoice(
        BUERO, "R-1", "PO-1", list(BUERO_ITEMS), grand_total_delta=Decimal("1.00")
    )
    decision = outcome(invoice)
    assert decision.outcome == "rejected"  # type: ignore[attr-defined]
    assert "BR-CO-15" in failed_rules(decision)
    assert "total with VAT (BT-112) is 114.94" in decision.reason  # type: ignore[attr-defined]


def test_changed_iban_is_held_never_approved() -> None:
    other = "DE02120300000000202051"
    assert iban_is_valid(other)
    decision = outcome(make_invoice(BUERO, "R-1", "PO-1", list(BUERO_ITEMS), iban=other))
    assert decision.outcome == "held"  # type: ignore[attr-defined]
    assert failed_rules(decision) == {"IBAN-KNOWN"}


def test_iban_with_a_typo_is_rejected() -> None:
    decision = outcome(
        make_invoice(BUERO, "R-1", "PO-1", list(BUERO_ITEMS), iban="DE89370400440532013001")
    )
    assert decision.outcome == "rejected"  # type: ignore[attr-defined]
    assert "IBAN-CHECKSUM" in failed_rules(decision)


def test_duplicate_number_is_rejected() -> None:
    decision = outcome(good(), seen=("R-1",))
    assert decision.outcome == "rejected"  # type: ignore[attr-defined]
    assert failed_rules(decision) == {"DUPLICATE-NUMBER"}


def test_quantity_over_the_goods_receipt_is_held() -> None:
    invoice = good()
    orders, receipts = orders_for(invoice, BUERO, received={"BB-100": 8})
    decision = outcome(invoice, match=MatchData.build(orders, receipts))
    assert decision.outcome == "held"  # type: ignore[attr-defined]
    assert failed_rules(decision) == {"QTY-RECEIVED"}
    assert "10 invoiced, 8 received" in decision.failed[0].detail  # type: ignore[attr-defined]


def test_quantity_within_the_tolerance_passes() -> None:
    invoice = good()
    orders, receipts = orders_for(invoice, BUERO, received={"BB-100": 9})
    results = run_checks(
        invoice,
        supplier=BUERO.record,
        seen_numbers=(),
        match=MatchData.build(orders, receipts),
        tolerances=msgspec.structs.replace(TOLERANCES, quantity=Decimal(1)),
    )
    assert decide(results).outcome == "approved"


def test_price_outside_the_tolerance_is_held_inside_passes() -> None:
    invoice = good()
    orders, receipts = orders_for(invoice, BUERO)
    # PO price of BB-100 4.00: 4.20 is 5 % over (allowed 2 % = 0.08, or 5 cents).
    cheaper = [
        msgspec.structs.replace(line, net_price=Decimal("4.00"))
        if line.article == "BB-100"
        else line
        for line in orders
    ]
    decision = outcome(invoice, match=MatchData.build(cheaper, receipts))
    assert decision.outcome == "held"  # type: ignore[attr-defined]
    assert failed_rules(decision) == {"PRICE"}
    close = [
        msgspec.structs.replace(line, net_price=Decimal("4.16"))
        if line.article == "BB-100"
        else line
        for line in orders
    ]
    assert outcome(invoice, match=MatchData.build(close, receipts)).outcome == "approved"  # type: ignore[attr-defined]


def test_unknown_purchase_order_is_rejected() -> None:
    invoice = make_invoice(BUERO, "R-1", "PO-404", list(BUERO_ITEMS))
    orders, receipts = orders_for(good(), BUERO)
    decision = outcome(invoice, match=MatchData.build(orders, receipts))
    assert decision.outcome == "rejected"  # type: ignore[attr-defined]
    assert failed_rules(decision) == {"PO-UNKNOWN"}
    assert "we have no purchase order PO-404" in decision.reason  # type: ignore[attr-defined]


def test_missing_mandatory_fields_and_bad_vat_id_are_rejected() -> None:
    invoice = msgspec.structs.replace(good(), number="", seller_vat_id="DE136695977")
    decision = outcome(invoice)
    assert decision.outcome == "rejected"  # type: ignore[attr-defined]
    assert {"BT-1", "VAT-ID"} <= failed_rules(decision)


def test_vat_id_formats() -> None:
    assert vat_id_problem("DE136695976") is None
    assert vat_id_problem("ATU12345678") is None
    assert vat_id_problem("NL123456789B01") is None
    assert vat_id_problem("DE12345") is not None
    assert vat_id_problem("136695976") is not None


def test_every_failed_check_of_a_held_invoice_is_listed() -> None:
    invoice = make_invoice(BUERO, "R-1", "PO-1", list(BUERO_ITEMS), iban="DE02120300000000202051")
    orders, receipts = orders_for(invoice, BUERO, received={"BB-100": 1, "BB-220": 2})
    decision = outcome(invoice, match=MatchData.build(orders, receipts))
    assert decision.outcome == "held"  # type: ignore[attr-defined]
    assert [r.rule for r in decision.failed] == ["IBAN-KNOWN", "QTY-RECEIVED", "QTY-RECEIVED"]  # type: ignore[attr-defined]


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("9999.99"), places=2)
items = st.lists(
    st.tuples(st.integers(1, 500), amounts, st.sampled_from(["0", "7", "19"])),
    min_size=1,
    max_size=8,
)


@given(items)
def test_a_consistently_computed_invoice_passes_the_arithmetic(
    lines: list[tuple[int, Decimal, str]],
) -> None:
    invoice = make_invoice(
        NORDLICHT,
        "R-9",
        "PO-9",
        [
            (f"A-{i}", "x", quantity, str(price), rate)
            for i, (quantity, price, rate) in enumerate(lines)
        ],
    )
    assert all(result.passed for result in check_arithmetic(invoice))


@given(
    items,
    st.sampled_from(["grand_total", "tax_total", "line_total", "tax_basis_total", "line"]),
    st.integers(1, 500),
)
def test_any_amount_changed_by_a_cent_or_more_is_caught(
    lines: list[tuple[int, Decimal, str]], field: str, cents: int
) -> None:
    invoice = make_invoice(
        NORDLICHT,
        "R-9",
        "PO-9",
        [
            (f"A-{i}", "x", quantity, str(price), rate)
            for i, (quantity, price, rate) in enumerate(lines)
        ],
    )
    delta = Decimal(cents) / 100
    if field == "line":
        first = invoice.lines[0]
        changed = msgspec.structs.replace(first, net_amount=first.net_amount + delta)
        invoice = msgspec.structs.replace(invoice, lines=(changed, *invoice.lines[1:]))
    else:
        invoice = msgspec.structs.replace(invoice, **{field: getattr(invoice, field) + delta})
    failed = [result for result in check_arithmetic(invoice) if not result.passed]
    assert failed
    assert decide(failed).outcome == "rejected"


@given(amounts, st.sampled_from(["7", "19"]))
def test_vat_one_cent_off_is_tolerated_two_cents_not(basis: Decimal, rate: str) -> None:
    invoice = make_invoice(NORDLICHT, "R-9", "PO-9", [("A", "x", 1, str(basis), rate)])
    tax = invoice.taxes[0]
    expected = round_money(basis * Decimal(rate) / 100, "EUR")
    for delta, ok in ((Decimal("0.01"), True), (Decimal("0.02"), False)):
        changed = msgspec.structs.replace(tax, tax=expected + delta)
        total_tax = expected + delta
        gross = basis + total_tax
        variant = msgspec.structs.replace(
            invoice, taxes=(changed,), tax_total=total_tax, grand_total=gross, due_amount=gross
        )
        results = [r for r in check_arithmetic(variant) if r.rule == "BR-S-09"]
        assert results[0].passed is ok


@given(st.text(alphabet="0123456789", min_size=18, max_size=18))
def test_iban_checksum_catches_every_single_digit_change(bban: str) -> None:
    digits = "".join(str(int(c, 36)) for c in bban + "DE00")
    iban = f"DE{98 - int(digits) % 97:02d}{bban}"
    assert iban_is_valid(iban)
    for position in range(4, len(iban)):
        changed = iban[:position] + str((int(iban[position]) + 1) % 10) + iban[position + 1 :]
        assert not iban_is_valid(changed)

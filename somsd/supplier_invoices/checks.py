"""The checks every supplier invoice goes through, and the decision they lead to.

Each check returns `CheckResult`s: passed or not, the rule it stands for (the EN 16931 BR-CO
rule where one exists), and what a failure means. Two kinds of failure:

- `reject`: the invoice itself is wrong and only the supplier can fix it (a sum that does not
  add up, a missing mandatory field, an invalid VAT ID or IBAN, a number already invoiced, a
  purchase order we never placed). The reason text is written for the supplier.
- `hold`: the invoice may well be right but a person must look first (the IBAN is not the one
  we know, more invoiced than received, a price outside the tolerance). A changed IBAN is the
  classic invoice fraud, so it always holds and nothing approves it automatically.

`decide` turns all results into one outcome: rejected if any reject failed (every such reason
listed), else held if any hold failed (every failed check listed), else approved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Final, Literal

import msgspec

from somsd.domain.money import minor_unit, round_money
from somsd.supplier_invoices.model import (
    GoodsReceiptLine,
    PurchaseOrderLine,
    SupplierInvoice,
    SupplierRecord,
    Tolerances,
)

__all__ = [
    "CheckResult",
    "Decision",
    "MatchData",
    "check_arithmetic",
    "check_duplicate",
    "check_iban",
    "check_mandatory",
    "check_match",
    "check_vat_id",
    "decide",
    "iban_is_valid",
    "normalise_iban",
    "run_checks",
    "vat_id_problem",
]

Failure = Literal["hold", "reject"]
Outcome = Literal["approved", "held", "rejected"]

_CENT_TOLERANCE: Final = Decimal("0.01")  # per-rate VAT may differ by rounding, one cent


class CheckResult(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    check: str  # arithmetic, mandatory, vat_id, iban, iban_known, duplicate, match
    passed: bool
    rule: str = ""  # BR-CO-10, BR-S-09, ... or a name of ours
    failure: Failure = "hold"  # what a failure means
    detail: str = ""  # for the operator
    reason: str = ""  # for the supplier (rejects)
    line_id: str = ""


class Decision(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    outcome: Outcome
    failed: tuple[CheckResult, ...] = ()
    reason: str = ""  # supplier-facing, for a rejection


def _ok(check: str, rule: str, line_id: str = "") -> CheckResult:
    return CheckResult(check=check, passed=True, rule=rule, line_id=line_id)


def _fail(
    check: str, rule: str, failure: Failure, detail: str, reason: str = "", *, line_id: str = ""
) -> CheckResult:
    return CheckResult(
        check=check,
        passed=False,
        rule=rule,
        failure=failure,
        detail=detail,
        reason=reason or detail,
        line_id=line_id,
    )


def _equal(rule: str, label: str, stated: Decimal | None, computed: Decimal) -> CheckResult:
    if stated is None:
        return _fail("arithmetic", rule, "reject", f"{label} missing", f"{label} is missing")
    if stated != computed:
        return _fail(
            "arithmetic",
            rule,
            "reject",
            f"{label}: stated {stated}, computed {computed}",
            f"{label} is {stated}, but the invoice's figures add up to {computed}",
        )
    return _ok("arithmetic", rule)


def check_arithmetic(invoice: SupplierInvoice) -> list[CheckResult]:
    """Line amounts, VAT per rate and the totals, to the cent (BR-CO-10...16 equivalents)."""
    currency = invoice.currency or "EUR"
    results: list[CheckResult] = []
    for line in invoice.lines:
        base = line.base_quantity if line.base_quantity > 0 else Decimal(1)
        computed = round_money(line.quantity * line.net_price / base, currency)
        if computed != line.net_amount:
            results.append(
                _fail(
                    "arithmetic",
                    "LINE-AMOUNT",
                    "reject",
                    f"line {line.line_id}: {line.quantity} x {line.net_price} = {computed}, "
                    f"stated {line.net_amount}",
                    f"line {line.line_id}: quantity times price is {computed}, "
                    f"not {line.net_amount}",
                    line_id=line.line_id,
                )
            )
        else:
            results.append(_ok("arithmetic", "LINE-AMOUNT", line.line_id))
    line_total = sum((line.net_amount for line in invoice.lines), Decimal(0))
    results.append(
        _equal("BR-CO-10", "sum of line net amounts (BT-106)", invoice.line_total, line_total)
    )
    basis = line_total - invoice.allowances + invoice.charges
    results.append(_equal("BR-CO-13", "total without VAT (BT-109)", invoice.tax_basis_total, basis))
    rates = sorted({line.tax_rate for line in invoice.lines})
    stated = {tax.rate: tax for tax in invoice.taxes}
    for rate in rates:
        rate_basis = sum((ln.net_amount for ln in invoice.lines if ln.tax_rate == rate), Decimal(0))
        breakdown = stated.get(rate)
        if breakdown is None:
            results.append(
                _fail(
                    "arithmetic",
                    "BR-CO-18",
                    "reject",
                    f"no VAT breakdown for {rate} %",
                    f"the VAT of rate {rate} % is not stated",
                )
            )
            continue
        results.append(
            _equal("BR-S-08", f"VAT basis at {rate} % (BT-116)", breakdown.basis, rate_basis)
        )
        expected = round_money(breakdown.basis * rate / 100, currency)
        if abs(breakdown.tax - expected) > _CENT_TOLERANCE:
            results.append(
                _fail(
                    "arithmetic",
                    "BR-S-09",
                    "reject",
                    f"VAT at {rate} %: stated {breakdown.tax}, computed {expected}",
                    f"the VAT at {rate} % is {breakdown.tax}, but {rate} % of "
                    f"{breakdown.basis} is {expected}",
                )
            )
        else:
            results.append(_ok("arithmetic", "BR-S-09"))
    for rate in sorted(set(stated) - set(rates)):
        results.append(
            _fail(
                "arithmetic",
                "BR-CO-18",
                "reject",
                f"VAT breakdown for {rate} % without any line at that rate",
                f"VAT at {rate} % is stated but no line has that rate",
            )
        )
    tax_total = sum((tax.tax for tax in invoice.taxes), Decimal(0))
    results.append(_equal("BR-CO-14", "total VAT (BT-110)", invoice.tax_total, tax_total))
    if invoice.tax_basis_total is not None and invoice.tax_total is not None:
        gross = invoice.tax_basis_total + invoice.tax_total
        results.append(_equal("BR-CO-15", "total with VAT (BT-112)", invoice.grand_total, gross))
    if invoice.grand_total is not None:
        due = invoice.grand_total - invoice.prepaid
        results.append(
            _equal(
                "BR-CO-16",
                "amount due (BT-115)",
                due if invoice.due_amount is None else invoice.due_amount,
                due,
            )
        )
    return results


_MANDATORY: Final = (
    ("number", "BT-1", "the invoice number"),
    ("issue_date", "BT-2", "the invoice date"),
    ("currency", "BT-5", "the currency"),
    ("seller_name", "BT-27", "the seller's name"),
    ("grand_total", "BT-112", "the total with VAT"),
)


def check_mandatory(invoice: SupplierInvoice) -> list[CheckResult]:
    """The fields §14 UStG and EN 16931 require on every invoice."""
    results: list[CheckResult] = []
    for field, rule, label in _MANDATORY:
        if getattr(invoice, field) in (None, ""):
            results.append(
                _fail(
                    "mandatory", rule, "reject", f"{rule} missing", f"{label} ({rule}) is missing"
                )
            )
        else:
            results.append(_ok("mandatory", rule))
    if not (invoice.seller_vat_id or invoice.seller_tax_number):
        results.append(
            _fail(
                "mandatory",
                "BR-CO-26",
                "reject",
                "neither VAT ID (BT-31) nor tax number (BT-32)",
                "the invoice states neither your VAT ID nor your tax number",
            )
        )
    else:
        results.append(_ok("mandatory", "BR-CO-26"))
    if not invoice.lines:
        results.append(
            _fail("mandatory", "BR-16", "reject", "no invoice lines", "the invoice has no lines")
        )
    else:
        results.append(_ok("mandatory", "BR-16"))
    return results


# Member-state VAT ID shapes (the VIES formats); DE additionally has a check digit.
_VAT_FORMATS: Final[Mapping[str, str]] = {
    "AT": r"U\d{8}",
    "BE": r"[01]\d{9}",
    "CH": r"E\d{9}(MWST|TVA|IVA)?",
    "CZ": r"\d{8,10}",
    "DE": r"\d{9}",
    "DK": r"\d{8}",
    "ES": r"[0-9A-Z]\d{7}[0-9A-Z]",
    "FR": r"[0-9A-Z]{2}\d{9}",
    "IT": r"\d{11}",
    "LU": r"\d{8}",
    "NL": r"\d{9}B\d{2}",
    "PL": r"\d{10}",
    "SE": r"\d{12}",
}


def _de_check_digit_ok(digits: str) -> bool:
    """ISO 7064 MOD 11,10, the check digit of a German USt-IdNr."""
    product = 10
    for char in digits[:8]:
        total = (int(char) + product) % 10 or 10
        product = (2 * total) % 11
    check = (11 - product) % 10
    return check == int(digits[8])


def vat_id_problem(vat_id: str) -> str | None:
    """Why `vat_id` is not a well-formed VAT ID; None when it is."""
    compact = vat_id.replace(" ", "").upper()
    country, rest = compact[:2], compact[2:]
    pattern = _VAT_FORMATS.get(country)
    if pattern is None:
        if re.fullmatch(r"[A-Z]{2}[0-9A-Z]{2,13}", compact):
            return None
        return f"{vat_id!r} does not start with a country code"
    if not re.fullmatch(pattern, rest):
        return f"{vat_id!r} is not a {country} VAT ID ({country} + {pattern})"
    if country == "DE" and not _de_check_digit_ok(rest):
        return f"{vat_id!r}: the check digit is wrong"
    return None


def check_vat_id(invoice: SupplierInvoice) -> list[CheckResult]:
    if not invoice.seller_vat_id:
        return []  # BR-CO-26 already asks for it or the tax number
    problem = vat_id_problem(invoice.seller_vat_id)
    if problem is not None:
        return [
            _fail("vat_id", "VAT-ID", "reject", problem, f"the VAT ID {problem.split(' ', 1)[1]}")
        ]
    return [_ok("vat_id", "VAT-ID")]


def normalise_iban(iban: str) -> str:
    return iban.replace(" ", "").upper()


def iban_is_valid(iban: str) -> bool:
    """ISO 13616: country, two check digits, the rest; mod 97 of the rearranged number is 1."""
    compact = normalise_iban(iban)
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    digits = "".join(str(int(char, 36)) for char in rearranged)
    return int(digits) % 97 == 1


def check_iban(invoice: SupplierInvoice, supplier: SupplierRecord | None) -> list[CheckResult]:
    """The checksum (a typo: reject) and whether it is the supplier's known IBAN (else hold)."""
    if not invoice.iban:
        return []  # paid by other means; the due amount is still checked
    if not iban_is_valid(invoice.iban):
        return [
            _fail(
                "iban",
                "IBAN-CHECKSUM",
                "reject",
                f"IBAN {invoice.iban} fails its checksum",
                f"the IBAN {invoice.iban} is not valid (its check digits do not match)",
            )
        ]
    known = {normalise_iban(iban) for iban in supplier.ibans} if supplier else set()
    if normalise_iban(invoice.iban) not in known:
        detail = (
            f"IBAN {invoice.iban} is not a known account of supplier "
            f"{supplier.number if supplier else '?'}: confirm with the supplier by phone "
            "(a number you have, not one on this invoice) before paying"
        )
        return [_ok("iban", "IBAN-CHECKSUM"), _fail("iban_known", "IBAN-KNOWN", "hold", detail)]
    return [_ok("iban", "IBAN-CHECKSUM"), _ok("iban_known", "IBAN-KNOWN")]


def check_duplicate(invoice: SupplierInvoice, seen_numbers: Iterable[str]) -> list[CheckResult]:
    """`seen_numbers`: this supplier's invoice numbers already approved or held."""
    if invoice.number and invoice.number in set(seen_numbers):
        return [
            _fail(
                "duplicate",
                "DUPLICATE-NUMBER",
                "reject",
                f"invoice number {invoice.number} was received from this supplier before",
                f"invoice number {invoice.number} has already been invoiced to us",
            )
        ]
    return [_ok("duplicate", "DUPLICATE-NUMBER")]


class MatchData(msgspec.Struct, frozen=True, kw_only=True):
    """Purchase orders and goods receipts by (PO, article), plus what was invoiced before."""

    orders: Mapping[tuple[str, str], PurchaseOrderLine]
    receipts: Mapping[tuple[str, str], GoodsReceiptLine]
    invoiced: Mapping[tuple[str, str], Decimal] = msgspec.field(default_factory=dict)

    @classmethod
    def build(
        cls,
        orders: Sequence[PurchaseOrderLine],
        receipts: Sequence[GoodsReceiptLine],
        invoiced: Mapping[tuple[str, str], Decimal] | None = None,
    ) -> MatchData:
        received: dict[tuple[str, str], GoodsReceiptLine] = {}
        for receipt in receipts:
            key = (receipt.order, receipt.article)
            before = received.get(key)
            quantity = receipt.quantity + (before.quantity if before else Decimal(0))
            received[key] = GoodsReceiptLine(
                order=receipt.order, article=receipt.article, quantity=quantity
            )
        return cls(
            orders={(line.order, line.article): line for line in orders},
            receipts=received,
            invoiced=dict(invoiced or {}),
        )


def check_match(
    invoice: SupplierInvoice, data: MatchData, tolerances: Tolerances
) -> list[CheckResult]:
    """The 3-way match per line on (BT-13/BT-132 purchase order, BT-155 article)."""
    currency = invoice.currency or "EUR"
    results: list[CheckResult] = []
    this_invoice: dict[tuple[str, str], Decimal] = {}
    for line in invoice.lines:
        order = invoice.order_of(line)
        key = (order, line.article)
        ordered = data.orders.get(key)
        if not order:
            results.append(
                _fail(
                    "match",
                    "PO-MISSING",
                    "reject",
                    f"line {line.line_id}: no purchase order reference (BT-13)",
                    f"line {line.line_id} does not name our purchase order number",
                    line_id=line.line_id,
                )
            )
            continue
        if ordered is None:
            known_order = any(po == order for po, _ in data.orders)
            what = f"article {line.article} is not on our purchase order {order}"
            results.append(
                _fail(
                    "match",
                    "PO-UNKNOWN",
                    "reject",
                    f"line {line.line_id}: "
                    + (what if known_order else f"unknown purchase order {order}"),
                    f"line {line.line_id}: "
                    + (what if known_order else f"we have no purchase order {order}"),
                    line_id=line.line_id,
                )
            )
            continue
        this_invoice[key] = this_invoice.get(key, Decimal(0)) + line.quantity
        billed = data.invoiced.get(key, Decimal(0)) + this_invoice[key]
        received = data.receipts.get(key)
        received_quantity = received.quantity if received else Decimal(0)
        if billed > ordered.quantity + tolerances.quantity:
            results.append(
                _fail(
                    "match",
                    "QTY-ORDERED",
                    "hold",
                    f"line {line.line_id}: {billed} invoiced of {ordered.quantity} ordered "
                    f"({order}/{line.article})",
                    line_id=line.line_id,
                )
            )
        elif billed > received_quantity + tolerances.quantity:
            results.append(
                _fail(
                    "match",
                    "QTY-RECEIVED",
                    "hold",
                    f"line {line.line_id}: {billed} invoiced, {received_quantity} received "
                    f"({order}/{line.article})",
                    line_id=line.line_id,
                )
            )
        else:
            results.append(_ok("match", "QTY", line.line_id))
        base = line.base_quantity if line.base_quantity > 0 else Decimal(1)
        unit_price = line.net_price / base
        allowed = max(
            abs(ordered.net_price) * tolerances.price_percent / 100,
            tolerances.price_cents * minor_unit(currency),
        )
        difference = unit_price - ordered.net_price
        if abs(difference) > allowed:
            results.append(
                _fail(
                    "match",
                    "PRICE",
                    "hold",
                    f"line {line.line_id}: price {unit_price.normalize()} vs "
                    f"{ordered.net_price} ordered ({order}/{line.article}), "
                    f"allowed +/- {allowed.normalize()}",
                    line_id=line.line_id,
                )
            )
        else:
            results.append(_ok("match", "PRICE", line.line_id))
    return results


def run_checks(
    invoice: SupplierInvoice,
    *,
    supplier: SupplierRecord | None,
    seen_numbers: Iterable[str],
    match: MatchData,
    tolerances: Tolerances,
) -> list[CheckResult]:
    return [
        *check_mandatory(invoice),
        *check_arithmetic(invoice),
        *check_vat_id(invoice),
        *check_iban(invoice, supplier),
        *check_duplicate(invoice, seen_numbers),
        *check_match(invoice, match, tolerances),
    ]


def decide(results: Sequence[CheckResult]) -> Decision:
    failed = tuple(result for result in results if not result.passed)
    rejects = [result for result in failed if result.failure == "reject"]
    if rejects:
        reasons = list(dict.fromkeys(result.reason for result in rejects))
        text = "We cannot process this invoice: " + "; ".join(reasons) + "."
        return Decision(outcome="rejected", failed=failed, reason=text)
    if failed:
        return Decision(outcome="held", failed=failed)
    return Decision(outcome="approved")

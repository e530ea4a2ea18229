"""Money: `Decimal` amounts in a currency's minor unit, rounded half-up, split exactly.

Why `Decimal` and never `float`: 0.1 + 0.2 != 0.3 in binary floating point, and an invoice that
is off by a cent states the wrong tax — which the issuer then owes as stated (§14c UStG).
Amounts travel as decimal strings on the wire ("12.50"); msgspec decodes `Decimal` from them
exactly.

Why no `Money(amount, currency)` class: every document somsd handles (canonical order, invoice,
credit note) carries exactly one currency at document level, like EN 16931's BT-5 "invoice
currency code". Amounts are therefore plain `Decimal`s and the functions here take the currency
code to know its minor unit. A second representation of the same number would only have to be
converted back and forth at every boundary.

Rounding is half-up ("kaufmännisches Runden"), the rule German tax offices and EN 16931 assume;
Python's default context rounds half-even, so every rounding here names its mode.
"""

from __future__ import annotations

import decimal
from collections.abc import Iterable, Sequence
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

__all__ = [
    "CURRENCY_EXPONENTS",
    "ZERO",
    "allocate",
    "is_known_currency",
    "minor_unit",
    "minor_unit_exponent",
    "round_money",
    "split_evenly",
    "sum_money",
    "tax_from_gross",
]

ZERO = Decimal(0)

# Active ISO 4217 currency codes a shop can price in, with their minor-unit exponent (ISO 4217
# list one, 2025 edition). Left out on purpose: fund and accounting units (BOV, CHE, CHW, CLF,
# COU, MXV, USN, UYI, UYW, XDR, XSU, XUA), metals (XAU, XAG, XPD, XPT), bond units (XBA-XBD),
# the testing and "no currency" codes (XTS, XXX) and withdrawn codes (HRK, SLL, VEF, ZWL, CUC).
# ANG stays next to its successor XCG while old orders in guilders may still arrive.
_EXPONENT_0 = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND"
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD "
    "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
    "SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR "
    "ZMW ZWG"
)
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_EXPONENT_0.split(), 0),
    **dict.fromkeys(_EXPONENT_2.split(), 2),
    **dict.fromkeys(_EXPONENT_3.split(), 3),
}

# Money arithmetic in its own context: 28 significant digits (the stdlib default) hold any
# order total with room to spare, and a process-wide `decimal.getcontext()` change made by some
# library must not change how somsd rounds.
_CONTEXT = decimal.Context(prec=28, rounding=ROUND_HALF_UP)


def is_known_currency(currency: str) -> bool:
    return currency in CURRENCY_EXPONENTS


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit: 2 for EUR, 0 for JPY, 3 for KWD."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except KeyError:
        raise ValueError(
            f'unknown currency "{currency}"; use an ISO 4217 code such as "EUR"'
        ) from None


# Built once: an order's documents round ~20 amounts, each asking for its minor unit.
_MINOR_UNITS: dict[str, Decimal] = {
    currency: Decimal(1).scaleb(-exponent) for currency, exponent in CURRENCY_EXPONENTS.items()
}


def minor_unit(currency: str) -> Decimal:
    """The smallest amount of the currency: Decimal("0.01") for EUR, Decimal("1") for JPY."""
    unit = _MINOR_UNITS.get(currency)
    if unit is None:
        minor_unit_exponent(currency)  # raises ValueError naming the currency
        raise AssertionError(currency)  # pragma: no cover  # every known code has a unit
    return unit


def round_money(amount: Decimal, currency: str) -> Decimal:
    """Round half-up to the currency's minor unit: 2.345 EUR -> 2.35, 2.5 JPY -> 3."""
    return amount.quantize(minor_unit(currency), context=_CONTEXT)


def sum_money(amounts: Iterable[Decimal], currency: str) -> Decimal:
    """Exact sum, rounded once at the end (rounding each term would drift by up to n/2 cents)."""
    return round_money(sum(amounts, ZERO), currency)


def tax_from_gross(gross: Decimal, rate_percent: Decimal, currency: str) -> Decimal:
    """The tax contained in a gross amount: gross - gross / (1 + rate / 100), rounded half-up.

    German shops quote gross prices, so tax is extracted, not added: 119.00 EUR at 19 % holds
    19.00 EUR tax. Computed as gross * rate / (100 + rate) so that only one division rounds.
    """
    if not ZERO <= rate_percent <= 100:
        raise ValueError(f"tax rate {rate_percent} is not a percentage between 0 and 100")
    exact = _CONTEXT.divide(_CONTEXT.multiply(gross, rate_percent), 100 + rate_percent)
    return round_money(exact, currency)


def allocate(total: Decimal, weights: Sequence[Decimal], currency: str) -> list[Decimal]:
    """Split `total` in proportion to `weights` so that the parts add up to `total` exactly.

    Largest-remainder method in minor units: every part first gets its proportional share
    rounded down, then the cents left over go one each to the parts with the largest remainder;
    ties go to the earlier part. The result depends only on the arguments, so replaying events
    reproduces the same split, and every part is within one minor unit of its exact share.
    A negative total (a credit) is split like its absolute value and the signs are restored.
    """
    unit = minor_unit(currency)
    if round_money(total, currency) != total:
        raise ValueError(f"{total} is not a whole number of {currency} minor units")
    if any(weight < 0 for weight in weights):
        raise ValueError("allocation weights must not be negative")
    weight_sum = sum(weights, ZERO)
    if weight_sum == 0:
        raise ValueError("allocation weights must not all be zero")
    sign = -1 if total < 0 else 1
    units = int(abs(total) / unit)
    if len(weights) == 1:
        # One part takes every unit (an order's lines mostly share one tax rate): the result
        # below, in the same representation, without its divisions and sort.
        return [sign * units * unit]
    shares = [_CONTEXT.divide(_CONTEXT.multiply(weight, units), weight_sum) for weight in weights]
    whole = [int(share.to_integral_value(rounding=ROUND_DOWN)) for share in shares]
    leftover = units - sum(whole)
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - whole[i]), i))
    for i in by_remainder[:leftover]:
        whole[i] += 1
    return [sign * count * unit for count in whole]


def split_evenly(total: Decimal, parts: int, currency: str) -> list[Decimal]:
    """Split `total` into `parts` amounts differing by at most one minor unit, larger ones first."""
    if parts < 1:
        raise ValueError("cannot split an amount into fewer than one part")
    return allocate(total, [Decimal(1)] * parts, currency)

"""DATEV-format CSV ("Buchungsstapel", EXTF format version 700, category 21) for accounting.

The file is what DATEV's import reads: a header line with the batch's metadata, the column
names, then one booking per line; `;`-separated, fields quoted, decimal comma, Belegdatum as
DDMM, encoded Windows-1252 with CRLF line ends. Columns are positional in DATEV, so the first
37 are written (up to KOST1, the cost centre); the rest may be left off.

What DATEV calls the parts: "Umsatz" is the gross amount, always positive, with S/H (debit /
credit) for the side of "Konto"; "Gegenkonto" the contra account; "BU-Schlüssel" the tax code.
A supplier invoice debits the expense account (Konto) against the creditor (Gegenkonto).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Final

import msgspec

from somsd.supplier_invoices.accounting import Posting

__all__ = ["DatevBatch", "DatevBooking", "booking_from_posting", "datev_csv"]

_COLUMNS: Final = (
    "Umsatz (ohne Soll/Haben-Kz)",
    "Soll/Haben-Kennzeichen",
    "WKZ Umsatz",
    "Kurs",
    "Basis-Umsatz",
    "WKZ Basis-Umsatz",
    "Konto",
    "Gegenkonto (ohne BU-Schlüssel)",
    "BU-Schlüssel",
    "Belegdatum",
    "Belegfeld 1",
    "Belegfeld 2",
    "Skonto",
    "Buchungstext",
    "Postensperre",
    "Diverse Adressnummer",
    "Geschäftspartnerbank",
    "Sachverhalt",
    "Zinssperre",
    "Beleglink",
    *(f"Beleginfo - {part} {n}" for n in range(1, 9) for part in ("Art", "Inhalt")),
    "KOST1 - Kostenstelle",
)


class DatevBooking(msgspec.Struct, frozen=True, kw_only=True):
    amount: Decimal  # gross, positive
    side: str  # "S" debit / "H" credit, for `account`
    currency: str
    account: str
    contra_account: str
    tax_code: str
    document_date: date
    document_number: str  # Belegfeld 1: the supplier's invoice number
    text: str
    cost_centre: str = ""
    link: str = ""  # Beleglink: where the document is (the e-invoice's stream)


class DatevBatch(msgspec.Struct, frozen=True, kw_only=True):
    consultant: str  # Beraternummer
    client: str  # Mandantennummer
    fiscal_year_start: date
    account_length: int = 4
    name: str = "somsd Eingangsrechnungen"
    created_at: datetime  # written into the header; the caller fixes it for reproducibility
    bookings: tuple[DatevBooking, ...]


def booking_from_posting(
    posting: Posting, *, currency: str, document_date: date, link: str = ""
) -> DatevBooking:
    return DatevBooking(
        amount=posting.gross,
        side="S",
        currency=currency,
        account=posting.gl_account,
        contra_account=posting.supplier_number,
        tax_code=posting.tax_code,
        document_date=document_date,
        document_number=posting.invoice_number,
        text=posting.text,
        cost_centre=posting.cost_centre,
        link=link,
    )


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _amount(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.01')):f}".replace(".", ",")


def _row(booking: DatevBooking) -> str:
    fields = [
        _amount(booking.amount),
        _quote(booking.side),
        _quote(booking.currency),
        "",
        "",
        "",
        booking.account,
        booking.contra_account,
        _quote(booking.tax_code),
        f"{booking.document_date:%d%m}",
        _quote(booking.document_number[:36]),
        "",
        "",
        _quote(booking.text[:60]),
        "",
        "",
        "",
        "",
        "",
        _quote(booking.link[:210]) if booking.link else "",
        *([""] * 16),
        _quote(booking.cost_centre[:36]) if booking.cost_centre else "",
    ]
    return ";".join(fields)


def datev_csv(batch: DatevBatch) -> bytes:
    dates = [booking.document_date for booking in batch.bookings] or [batch.created_at.date()]
    header = [
        _quote("EXTF"),
        "700",
        "21",
        _quote("Buchungsstapel"),
        "13",
        f"{batch.created_at:%Y%m%d%H%M%S}{batch.created_at.microsecond // 1000:03d}",
        "",
        _quote("SO"),
        _quote("somsd"),
        _quote(""),
        batch.consultant,
        batch.client,
        f"{batch.fiscal_year_start:%Y%m%d}",
        str(batch.account_length),
        f"{min(dates):%Y%m%d}",
        f"{max(dates):%Y%m%d}",
        _quote(batch.name[:30]),
        _quote(""),
        "1",  # Buchungstyp 1: Finanzbuchführung
        "0",  # Rechnungslegungszweck: unabhängig
        "0",  # Festschreibung: no, the accountant commits the batch
        _quote(batch.bookings[0].currency if batch.bookings else "EUR"),
    ]
    lines = [";".join(header), ";".join(_quote(name) for name in _COLUMNS)]
    lines.extend(_row(booking) for booking in batch.bookings)
    return ("\r\n".join(lines) + "\r\n").encode("cp1252", errors="replace")


def parse_amount(text: str) -> Decimal:
    """A DATEV amount back to Decimal ("1234,56")."""
    return Decimal(text.replace(".", "").replace(",", "."))


def rows(data: bytes) -> list[list[str]]:
    """The booking rows of a DATEV CSV, unquoted (for tests and the audit)."""
    text = data.decode("cp1252")
    parsed: list[list[str]] = []
    for line in text.split("\r\n")[2:]:
        if line:
            parsed.append([field.strip('"').replace('""', '"') for field in line.split(";")])
    return parsed


def bookings_total(batch: Sequence[DatevBooking]) -> Decimal:
    return sum((booking.amount for booking in batch), Decimal(0))

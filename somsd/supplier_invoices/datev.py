"""DATEV-format CSV ("Buchungsstapel", EXTF format version 700, category 21) for accounting.

The file is what DATEV's import reads: a header line with the batch's metadata, the column
names, then one booking per line; `;`-separated, fields quoted, decimal comma, Belegdatum as
DDMM, encoded Windows-1252 with CRLF line ends. Columns are positional in DATEV, so the first
37 are written (up to KOST1, the cost centre); the rest may be left off.

What DATEV calls the parts: "Umsatz" is the gross amount, always positive, with S/H (debit /
credit) for the side of "Konto"; "Gegenkonto" the contra account; "BU-Schlüssel" the tax code.
A supplier invoice debits the expense account (Konto) against the creditor (Gegenkonto).

One Buchungsstapel per booking day (`booking_day`, `day_end`, `batch_parts`): an approval
belongs to the day whose window holds it in the shop's local time ([invoicing] timezone); with
a cutoff "HH:MM" other than midnight the window of day D runs from D-1 at the cutoff to D at
the cutoff. A booking is dated (Belegdatum) on the local calendar day it was approved, so the
header's "Datum vom/bis" is that day (two calendar days when the cutoff window spans midnight)
and every booking lies inside it, as DATEV's import requires; the supplier's own invoice date
travels in Beleginfo 1 ("Rechnungsdatum"). A day's batch whose window holds the start of a
fiscal year is split in two files, one per Wirtschaftsjahr: a Buchungsstapel never spans two.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from somsd.supplier_invoices.accounting import Posting

__all__ = [
    "BatchPart",
    "DatevBatch",
    "DatevBooking",
    "batch_parts",
    "booking_day",
    "booking_from_posting",
    "datev_csv",
    "day_end",
    "fiscal_year_start",
    "header",
    "parse_cutoff",
    "rows",
]

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
    invoice_date: date | None = None  # the supplier's (BT-2), in Beleginfo 1


class DatevBatch(msgspec.Struct, frozen=True, kw_only=True):
    consultant: str  # Beraternummer
    client: str  # Mandantennummer
    fiscal_year_start: date
    account_length: int = 4
    name: str = "somsd Eingangsrechnungen"
    created_at: datetime  # written into the header; the caller fixes it for reproducibility
    bookings: tuple[DatevBooking, ...]


def booking_from_posting(
    posting: Posting,
    *,
    currency: str,
    document_date: date,
    link: str = "",
    invoice_date: date | None = None,
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
        invoice_date=invoice_date,
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
        *(
            (_quote("Rechnungsdatum"), _quote(f"{booking.invoice_date:%d.%m.%Y}"))
            if booking.invoice_date
            else ("", "")
        ),
        *([""] * 14),
        _quote(booking.cost_centre[:36]) if booking.cost_centre else "",
    ]
    return ";".join(fields)


def datev_csv(batch: DatevBatch) -> bytes:
    dates = [booking.document_date for booking in batch.bookings] or [batch.created_at.date()]
    head = [
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
    lines = [";".join(head), ";".join(_quote(name) for name in _COLUMNS)]
    lines.extend(_row(booking) for booking in batch.bookings)
    return ("\r\n".join(lines) + "\r\n").encode("cp1252", errors="replace")


def parse_amount(text: str) -> Decimal:
    """A DATEV amount back to Decimal ("1234,56")."""
    return Decimal(text.replace(".", "").replace(",", "."))


def _records(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("cp1252"), newline=""), delimiter=";"))


def header(data: bytes) -> list[str]:
    """The EXTF header line of a DATEV CSV, unquoted."""
    return _records(data)[0]


def rows(data: bytes) -> list[list[str]]:
    """The booking rows of a DATEV CSV, unquoted (for tests and the audit)."""
    return [record for record in _records(data)[2:] if record]


# -- booking days and batches -------------------------------------------------------------


def parse_cutoff(text: str) -> time:
    """A config cutoff "HH:MM" or "HH:MM:SS" (checked by the config) as a time of day."""
    return time.fromisoformat(text)


def booking_day(at: datetime, cutoff: time, zone: ZoneInfo) -> date:
    """The day whose batch an approval at `at` belongs to (see the module docstring)."""
    local = at.astimezone(zone)
    if cutoff != time(0) and local.time() >= cutoff:
        return local.date() + timedelta(days=1)
    return local.date()


def day_end(day: date, cutoff: time, zone: ZoneInfo) -> datetime:
    """When `day`'s batch closes (UTC): approvals from then on belong to the next day."""
    if cutoff == time(0):
        local = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    else:
        local = datetime.combine(day, cutoff, tzinfo=zone)
    return local.astimezone(UTC)


def day_start(day: date, cutoff: time, zone: ZoneInfo) -> datetime:
    return day_end(day - timedelta(days=1), cutoff, zone)


def fiscal_year_start(day: date, start_month: int) -> date:
    """The first day of the Wirtschaftsjahr `day` lies in (it starts on the 1st of a month)."""
    year = day.year if day.month >= start_month else day.year - 1
    return date(year, start_month, 1)


class BatchPart(msgspec.Struct, frozen=True, kw_only=True):
    """One file of a day's batch: the invoices of one fiscal year, in approval order."""

    file: str
    fiscal_year_start: date
    invoices: tuple[str, ...]
    bookings: tuple[DatevBooking, ...]


def batch_parts(
    stem: str, accounted: Iterable[tuple[str, Sequence[DatevBooking]]], start_month: int
) -> list[BatchPart]:
    """A day's accounted invoices (id, bookings; all of one invoice share a date) as one part
    per fiscal year, named `<stem>.csv`, or `<stem>_WJ<year>.csv` when the day spans two."""
    years: dict[date, list[tuple[str, Sequence[DatevBooking]]]] = {}
    for invoice, bookings in accounted:
        if bookings:
            first = fiscal_year_start(bookings[0].document_date, start_month)
            years.setdefault(first, []).append((invoice, bookings))
    split = len(years) > 1
    return [
        BatchPart(
            file=f"{stem}_WJ{first:%Y}.csv" if split else f"{stem}.csv",
            fiscal_year_start=first,
            invoices=tuple(invoice for invoice, _ in members),
            bookings=tuple(b for _, bookings in members for b in bookings),
        )
        for first, members in sorted(years.items())
    ]


def bookings_total(batch: Sequence[DatevBooking]) -> Decimal:
    return sum((booking.amount for booking in batch), Decimal(0))

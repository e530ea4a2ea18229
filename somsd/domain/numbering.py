"""Gapless document numbers per series and year: RE-2026-000001, RE-2026-000002, ...

German tax law wants invoice numbers unique, and auditors read gaps as deleted invoices (§14
Abs. 4 Nr. 4 UStG; GoBD). So a number is only ever taken by a committed event: decisions emit
`InvoiceIssued`/`CreditNoteIssued` with `UNNUMBERED`, and the event store, inside the one
transaction that appends them, calls `number_documents` with its current `NumberSeries`. If the
transaction commits, the store keeps the returned series; if it rolls back, it keeps the old one —
`NumberSeries` is an immutable value, so "rolling back" is simply not replacing it. One writer
allocates, so two documents never race for a number. A store that keeps the counters in a table
of its own (the SQLite writer's stamping projections) numbers one event at a time with
`numbering_key` and `assign_number` instead, reading and bumping its counter row.

Each (series, year) pair counts from 1; the year is the document's issue year in the business's
time zone. Numbers are six digits wide, which sorts correctly up to 999,999 documents per series
and year; beyond that they grow a digit and stay unique.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Final

import msgspec

from somsd.domain.events import UNNUMBERED, CreditNoteIssued, InvoiceIssued, OrderEvent

__all__ = [
    "NumberSeries",
    "assign_number",
    "format_number",
    "number_documents",
    "numbering_key",
    "numbering_problems",
    "parse_number",
]

# Uppercase letters only, so a number splits back into its parts at the hyphens.
_SERIES: Final = re.compile(r"^[A-Z]{1,8}$")
_NUMBER: Final = re.compile(r"^(?P<series>[A-Z]{1,8})-(?P<year>\d{4})-(?P<sequence>\d{6,})$")


def format_number(series: str, year: int, sequence: int) -> str:
    if not _SERIES.match(series):
        raise ValueError(f'series "{series}" must be 1 to 8 uppercase letters, like "RE"')
    if not 1000 <= year <= 9999 or sequence < 1:
        raise ValueError(f"no document number for year {year}, sequence {sequence}")
    return f"{series}-{year:04d}-{sequence:06d}"


def parse_number(number: str) -> tuple[str, int, int]:
    """("RE", 2026, 1) from "RE-2026-000001"; ValueError for anything else."""
    match = _NUMBER.match(number)
    if match is None:
        raise ValueError(f'"{number}" is not a document number like "RE-2026-000001"')
    return match.group("series"), int(match.group("year")), int(match.group("sequence"))


class NumberSeries:
    """The last number issued per (series, year); an immutable value."""

    __slots__ = ("_last",)

    def __init__(self, last: Mapping[tuple[str, int], int] | None = None) -> None:
        self._last: dict[tuple[str, int], int] = dict(last or {})

    @classmethod
    def from_numbers(cls, numbers: Iterable[str]) -> NumberSeries:
        """The series after the given issued numbers (e.g. rebuilt from stored events)."""
        last: dict[tuple[str, int], int] = {}
        for number in numbers:
            series, year, sequence = parse_number(number)
            last[series, year] = max(sequence, last.get((series, year), 0))
        return cls(last)

    @property
    def counters(self) -> Mapping[tuple[str, int], int]:
        """(series, year) -> last sequence, e.g. to persist in the store's counter table."""
        return dict(self._last)

    def last_number(self, series: str, year: int) -> int:
        return self._last.get((series, year), 0)

    def next_number(self, series: str, year: int) -> tuple[str, NumberSeries]:
        """The next number of `series` in `year`, and the series state that has taken it."""
        sequence = self.last_number(series, year) + 1
        number = format_number(series, year, sequence)
        return number, NumberSeries({**self._last, (series, year): sequence})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NumberSeries) and self._last == other._last

    def __hash__(self) -> int:
        return hash(frozenset(self._last.items()))

    def __repr__(self) -> str:
        return f"NumberSeries({self._last!r})"


def numbering_key(event: OrderEvent) -> tuple[str, int] | None:
    """(series, year) an unnumbered invoice or credit note takes its number from, else None.

    With `assign_number`, what a store-side stamper needs when it keeps the counters in its own
    table and numbers one event at a time.
    """
    if isinstance(event, InvoiceIssued | CreditNoteIssued) and event.number == UNNUMBERED:
        return event.series, event.issue_date.year
    return None


def assign_number(event: OrderEvent, number: str) -> OrderEvent:
    """The same invoice or credit note with its number (other events are returned unchanged)."""
    if isinstance(event, InvoiceIssued | CreditNoteIssued):
        return msgspec.structs.replace(event, number=number)
    return event


def number_documents(
    events: Sequence[OrderEvent], numbers: NumberSeries
) -> tuple[list[OrderEvent], NumberSeries]:
    """Give every unnumbered invoice and credit note in `events` its number, in order.

    Returns the numbered events and the series after them; events that need no number pass
    through unchanged. The store calls this inside the transaction that appends `events`.
    """
    numbered: list[OrderEvent] = []
    for event in events:
        key = numbering_key(event)
        if key is None:
            numbered.append(event)
            continue
        number, numbers = numbers.next_number(*key)
        numbered.append(assign_number(event, number))
    return numbered, numbers


def numbering_problems(numbers: Iterable[str]) -> list[str]:
    """Duplicates and gaps among issued numbers, per series and year (for `somsd db verify`)."""
    seen: dict[tuple[str, int], list[int]] = {}
    problems: list[str] = []
    for number in numbers:
        try:
            series, year, sequence = parse_number(number)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        seen.setdefault((series, year), []).append(sequence)
    for (series, year), sequences in sorted(seen.items()):
        counts = Counter(sequences)
        problems.extend(
            f"{format_number(series, year, sequence)} issued more than once"
            for sequence, count in sorted(counts.items())
            if count > 1
        )
        problems.extend(
            f"{format_number(series, year, sequence)} is missing"
            for sequence in range(1, max(counts) + 1)
            if sequence not in counts
        )
    return problems

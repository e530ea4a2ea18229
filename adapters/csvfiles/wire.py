"""The `csv` location format: what the files look like, parsed and formatted without I/O.

Three file kinds, all UTF-8 (a leading byte-order mark, as Excel writes one, is accepted),
`;`-separated with a header row, quoted per RFC 4180 where a value needs it. `;` and not `,`
because German Excel opens `;` files directly, and because commas are common in street
addresses ("Hauptstr. 1, Hinterhaus") while semicolons are not. Columns are found by header
name, so their order is free and extra columns are ignored (a WMS may add its own).

- Fulfilment file (somsd -> warehouse), `fulfillment-<id>.csv`, one row per line:
  `fulfillment_id;order_ref;mode;sku;quantity;name;company;street;zip;city;country`
  (`mode` is ship | pickup; the ship-to address is repeated on every row, as WMS imports want).
- Status file (warehouse -> somsd), `status*.csv`, one row per change:
  `fulfillment_id;status;at;sku;quantity;reason;carrier;tracking_number`
  `status` is accepted | picked | packed | shipped | ready_for_pickup | picked_up | rejected;
  `at` is ISO 8601 with an offset. A `rejected` row rejects `quantity` units of `sku` with
  `reason` out_of_stock | damaged (one row per rejected line); `shipped` needs `carrier` and
  `tracking_number`; other statuses leave sku, quantity and reason empty — a stray value there
  usually means the columns slipped, so it is refused rather than guessed at.
- Stock file (warehouse -> somsd), `stock*.csv`: `sku;on_hand;as_of`, absolute counts.

Parsing never stops at a bad row: `parse_*` return the good rows and a `RowProblem` per bad
one (its line number, counting the header as line 1 as an editor does, the problem, and the
cells), so the good rows still count and the bad ones can be quarantined with a reason. Only a
file that cannot be read at all (not UTF-8, header missing a column) raises `MalformedFile`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Final, Generic, Literal, TypeVar, get_args

import msgspec

__all__ = [
    "DELIMITER",
    "FULFILLMENT_COLUMNS",
    "STATUS_COLUMNS",
    "STOCK_COLUMNS",
    "FulfillmentFile",
    "FulfillmentRow",
    "FulfilmentMode",
    "MalformedFile",
    "Parsed",
    "RejectReason",
    "RowProblem",
    "Status",
    "StatusFile",
    "StatusRow",
    "StockFile",
    "StockRow",
    "decode_text",
    "format_fulfillment",
    "format_problem_reasons",
    "format_problem_rows",
    "format_status",
    "format_stock",
    "fulfillment_file_name",
    "parse_fulfillment",
    "parse_inbound",
    "parse_status",
    "parse_stock",
]

DELIMITER: Final = ";"
FULFILLMENT_COLUMNS: Final = (
    "fulfillment_id",
    "order_ref",
    "mode",
    "sku",
    "quantity",
    "name",
    "company",
    "street",
    "zip",
    "city",
    "country",
)
STATUS_COLUMNS: Final = (
    "fulfillment_id",
    "status",
    "at",
    "sku",
    "quantity",
    "reason",
    "carrier",
    "tracking_number",
)
STOCK_COLUMNS: Final = ("sku", "on_hand", "as_of")

FulfilmentMode = Literal["ship", "pickup"]
Status = Literal[
    "accepted", "picked", "packed", "shipped", "ready_for_pickup", "picked_up", "rejected"
]
RejectReason = Literal["out_of_stock", "damaged"]
# Name -> the same name typed as its Literal, so a checked cell keeps its precise type.
_MODES: Final[dict[str, FulfilmentMode]] = {name: name for name in get_args(FulfilmentMode)}
_STATUSES: Final[dict[str, Status]] = {name: name for name in get_args(Status)}
_REASONS: Final[dict[str, RejectReason]] = {name: name for name in get_args(RejectReason)}
# Fulfilment ids become file names: keep them to characters every filesystem and SFTP server
# takes, so the name never needs escaping.
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")

T = TypeVar("T")
L = TypeVar("L", bound=str)


class MalformedFile(ValueError):
    """The whole file is unreadable; the message says why and how to fix it."""


class RowProblem(msgspec.Struct, frozen=True):
    """One refused row: its line number (header = 1), what is wrong, and its cells as read."""

    line: int
    message: str
    cells: tuple[str, ...]


class Parsed(msgspec.Struct, Generic[T], frozen=True):
    """Good rows and refused rows of one file, with the header as it was written."""

    header: tuple[str, ...]
    rows: tuple[T, ...]
    problems: tuple[RowProblem, ...]


class FulfillmentRow(msgspec.Struct, frozen=True, kw_only=True):
    sku: str
    quantity: int


class FulfillmentFile(msgspec.Struct, frozen=True, kw_only=True):
    """One fulfilment as the outbound file holds it."""

    fulfillment_id: str
    order_ref: str
    mode: FulfilmentMode
    name: str
    company: str | None
    street: str
    zip: str
    city: str
    country: str
    lines: tuple[FulfillmentRow, ...]


class StatusRow(msgspec.Struct, frozen=True, kw_only=True):
    fulfillment_id: str
    status: Status
    at: datetime
    sku: str | None = None  # rejected rows only
    quantity: int | None = None  # rejected rows only
    reason: RejectReason | None = None  # rejected rows only
    carrier: str | None = None  # shipped rows only
    tracking_number: str | None = None  # shipped rows only


class StockRow(msgspec.Struct, frozen=True, kw_only=True):
    sku: str
    on_hand: int
    as_of: datetime


class StatusFile(msgspec.Struct, frozen=True, kw_only=True, tag="status"):
    name: str
    parsed: Parsed[StatusRow]


class StockFile(msgspec.Struct, frozen=True, kw_only=True, tag="stock"):
    name: str
    parsed: Parsed[StockRow]


class _RowError(ValueError):
    """A problem with one row; becomes a `RowProblem`."""


# -- formatting ----------------------------------------------------------------------------------


def _format(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=DELIMITER, lineterminator="\r\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def fulfillment_file_name(fulfillment_id: str) -> str:
    """`fulfillment-<id>.csv`; raises `ValueError` for an id that is not file-name safe."""
    if not _SAFE_ID.match(fulfillment_id):
        raise ValueError(
            f"fulfillment id {fulfillment_id!r} cannot be a file name; use letters, digits, . _ -"
        )
    return f"fulfillment-{fulfillment_id}.csv"


def format_fulfillment(fulfillment: FulfillmentFile) -> str:
    f = fulfillment
    return _format(
        FULFILLMENT_COLUMNS,
        (
            (
                f.fulfillment_id,
                f.order_ref,
                f.mode,
                line.sku,
                str(line.quantity),
                f.name,
                f.company or "",
                f.street,
                f.zip,
                f.city,
                f.country,
            )
            for line in f.lines
        ),
    )


def format_status(rows: Iterable[StatusRow]) -> str:
    return _format(
        STATUS_COLUMNS,
        (
            (
                r.fulfillment_id,
                r.status,
                r.at.isoformat(),
                r.sku or "",
                "" if r.quantity is None else str(r.quantity),
                r.reason or "",
                r.carrier or "",
                r.tracking_number or "",
            )
            for r in rows
        ),
    )


def format_stock(rows: Iterable[StockRow]) -> str:
    return _format(STOCK_COLUMNS, ((r.sku, str(r.on_hand), r.as_of.isoformat()) for r in rows))


def format_problem_rows(header: Sequence[str], problems: Iterable[RowProblem]) -> str:
    """The refused rows under the file's own header: fix them and drop the file back in."""
    return _format(header, (problem.cells for problem in problems))


def format_problem_reasons(name: str, problems: Iterable[RowProblem]) -> str:
    """One line per refused row: `<file> line <n>: <problem>`."""
    return "".join(f"{name} line {p.line}: {p.message}\n" for p in problems)


# -- parsing -------------------------------------------------------------------------------------


def decode_text(data: bytes, name: str) -> str:
    """The file's text; UTF-8 with or without a byte-order mark."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedFile(
            f"{name}: not UTF-8 at byte {exc.start}; export the file as UTF-8"
        ) from exc


def _parse(
    text: str, name: str, columns: Sequence[str], parse_row: Callable[[Mapping[str, str]], T]
) -> Parsed[T]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITER, strict=True)
    try:
        header = tuple(cell.strip() for cell in next(reader))
    except StopIteration:
        raise MalformedFile(
            f"{name}: empty file; expected the header {';'.join(columns)}"
        ) from None
    except csv.Error as exc:
        raise MalformedFile(f"{name} line 1: {exc}") from exc
    missing = [column for column in columns if column not in header]
    if missing:
        raise MalformedFile(
            f"{name}: header lacks {', '.join(missing)}; expected {DELIMITER.join(columns)} "
            f"separated by {DELIMITER!r}"
        )
    rows: list[T] = []
    problems: list[RowProblem] = []
    while True:
        line = reader.line_num + 1  # where the next record starts
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. an unterminated quote: the rest is one broken record
            problems.append(RowProblem(line, f"unreadable CSV: {exc}", ()))
            break
        if not cells or all(not cell.strip() for cell in cells):
            continue  # blank lines, including the one many editors leave at the end
        if len(cells) != len(header):
            problems.append(
                RowProblem(
                    line,
                    f"has {len(cells)} fields, the header has {len(header)} "
                    f"(a {DELIMITER!r} inside a value must be quoted)",
                    tuple(cells),
                )
            )
            continue
        try:
            rows.append(parse_row(dict(zip(header, (cell.strip() for cell in cells), strict=True))))
        except _RowError as exc:
            problems.append(RowProblem(line, str(exc), tuple(cells)))
    return Parsed(header=header, rows=tuple(rows), problems=tuple(problems))


def _required(cells: Mapping[str, str], column: str) -> str:
    value = cells[column]
    if not value:
        raise _RowError(f"{column} is empty")
    return value


def _quantity(cells: Mapping[str, str], column: str, *, positive: bool) -> int:
    value = _required(cells, column)
    try:
        number = int(value)
    except ValueError:
        raise _RowError(f'{column} "{value}" is not a whole number') from None
    if positive and number < 1:
        raise _RowError(f"{column} must be at least 1, not {number}")
    return number


def _time(cells: Mapping[str, str], column: str) -> datetime:
    value = _required(cells, column)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise _RowError(
            f'{column} "{value}" is not an ISO 8601 time like 2026-11-21T10:00:00+01:00'
        ) from None
    if when.utcoffset() is None:
        raise _RowError(f'{column} "{value}" needs a UTC offset, e.g. +01:00 or Z')
    return when


def _choice(cells: Mapping[str, str], column: str, allowed: Mapping[str, L]) -> L:
    value = _required(cells, column)
    if value not in allowed:
        raise _RowError(f'{column} "{value}" is not one of {", ".join(sorted(allowed))}')
    return allowed[value]


def _status_row(cells: Mapping[str, str]) -> StatusRow:
    # Checked in column order, so the reported problem is the leftmost one in the row.
    fulfillment_id = _required(cells, "fulfillment_id")
    status = _choice(cells, "status", _STATUSES)
    row = StatusRow(fulfillment_id=fulfillment_id, status=status, at=_time(cells, "at"))
    if status == "rejected":
        return msgspec.structs.replace(
            row,
            sku=_required(cells, "sku"),
            quantity=_quantity(cells, "quantity", positive=True),
            reason=_choice(cells, "reason", _REASONS),
        )
    stray = [column for column in ("sku", "quantity", "reason") if cells[column]]
    if stray:
        raise _RowError(f"{', '.join(stray)} only belong on rejected rows, not on {status}")
    if status == "shipped":
        return msgspec.structs.replace(
            row,
            carrier=_required(cells, "carrier"),
            tracking_number=_required(cells, "tracking_number"),
        )
    return row


def _stock_row(cells: Mapping[str, str]) -> StockRow:
    return StockRow(
        sku=_required(cells, "sku"),
        # Negative counts are kept: ERPs and some WMSs book them, and the stock book keeps what
        # the source says (ATP clamps it for channels).
        on_hand=_quantity(cells, "on_hand", positive=False),
        as_of=_time(cells, "as_of"),
    )


def parse_status(text: str, name: str = "status.csv") -> Parsed[StatusRow]:
    return _parse(text, name, STATUS_COLUMNS, _status_row)


def parse_stock(text: str, name: str = "stock.csv") -> Parsed[StockRow]:
    return _parse(text, name, STOCK_COLUMNS, _stock_row)


def parse_fulfillment(text: str, name: str = "fulfillment.csv") -> FulfillmentFile:
    """Read a fulfilment file back (the warehouse side: the simulator and format tests)."""
    parsed = _parse(text, name, FULFILLMENT_COLUMNS, dict)
    if parsed.problems:
        first = parsed.problems[0]
        raise MalformedFile(f"{name} line {first.line}: {first.message}")
    if not parsed.rows:
        raise MalformedFile(f"{name}: no lines")
    head = parsed.rows[0]
    try:
        mode = _choice(head, "mode", _MODES)
        lines = tuple(
            FulfillmentRow(sku=row["sku"], quantity=_quantity(row, "quantity", positive=True))
            for row in parsed.rows
        )
    except _RowError as exc:
        raise MalformedFile(f"{name}: {exc}") from None
    return FulfillmentFile(
        fulfillment_id=head["fulfillment_id"],
        order_ref=head["order_ref"],
        mode=mode,
        name=head["name"],
        company=head["company"] or None,
        street=head["street"],
        zip=head["zip"],
        city=head["city"],
        country=head["country"],
        lines=lines,
    )


def parse_inbound(name: str, data: bytes) -> StatusFile | StockFile:
    """Parse an inbound file by its name: `status*.csv` or `stock*.csv`."""
    text = decode_text(data, name)
    if name.startswith("status"):
        return StatusFile(name=name, parsed=parse_status(text, name))
    if name.startswith("stock"):
        return StockFile(name=name, parsed=parse_stock(text, name))
    raise MalformedFile(
        f"{name}: unknown file kind; inbound files are named status*.csv or stock*.csv"
    )

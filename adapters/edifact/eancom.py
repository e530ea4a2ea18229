"""EANCOM D.96A subsets: segment tables, reading ORDERS, writing ORDRSP/DESADV/INVOIC.

Each message type has a table of (segment tag, min, max) in the order the message must have
them (our subset of the EANCOM message: header, line group, summary). `check_structure` walks
a message against its table and names the first segment that breaks it, by position and tag.
Qualifiers used (EANCOM usage; QTY qualifiers confirmed on eancom.com): BGM 220 order, 231
order response, 351 despatch advice, 380 invoice, 381 credit note; DTM 137 document date,
2 requested delivery, 11 despatch, 35 delivery; NAD BY buyer, SU supplier, DP delivery party,
IV invoicee; QTY 21 ordered, 12 despatched, 47 invoiced; PRI AAA net price; MOA 77 invoice
total, 79 line total, 125 taxable amount, 124 tax amount, 203 line item amount; TAX 7 VAT.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Final

from pydifact.constants import Element
from pydifact.control.characters import Characters
from pydifact.parser import Parser
from pydifact.segments import Segment, SegmentFactory
from pydifact.serializer import Serializer

__all__ = [
    "UNA",
    "EdifactError",
    "OrderLineIn",
    "OrdersIn",
    "build_interchange",
    "check_structure",
    "parse_interchange",
    "read_orders",
]

UNA: Final = ":+.? '"
CHARACTERS: Final = Characters.from_str(UNA)
SYNTAX: Final = ("UNOC", "3")
GLN_QUALIFIER: Final = "14"  # UNB partner id qualifier: GS1 GLN
MAX_COUNT: Final = 999_999

# (tag, min, max) in order; a repeating line group is the tags between "LIN" and "UNS".
TABLES: Final[dict[str, tuple[tuple[str, int, int], ...]]] = {
    "ORDERS": (
        ("BGM", 1, 1),
        ("DTM", 1, 35),
        ("RFF", 0, 10),
        ("NAD", 1, 99),
        ("CUX", 0, 5),
        ("LIN", 1, 200_000),
        ("PIA", 0, 25),
        ("IMD", 0, 99),
        ("QTY", 1, 99),
        ("DTM", 0, 35),
        ("PRI", 0, 25),
        ("TAX", 0, 10),
        ("UNS", 1, 1),
        ("CNT", 0, 10),
    ),
    "ORDRSP": (
        ("BGM", 1, 1),
        ("DTM", 1, 35),
        ("RFF", 1, 10),
        ("NAD", 1, 99),
        ("LIN", 0, 200_000),
        ("QTY", 0, 99),
        ("UNS", 1, 1),
        ("CNT", 0, 10),
    ),
    "DESADV": (
        ("BGM", 1, 1),
        ("DTM", 1, 35),
        ("RFF", 1, 10),
        ("NAD", 1, 99),
        ("CPS", 1, 1),
        ("LIN", 1, 200_000),
        ("PIA", 0, 25),
        ("QTY", 1, 99),
        ("CNT", 0, 10),
    ),
    "INVOIC": (
        ("BGM", 1, 1),
        ("DTM", 1, 35),
        ("RFF", 1, 10),
        ("NAD", 1, 99),
        ("CUX", 0, 5),
        ("LIN", 1, 200_000),
        ("PIA", 0, 25),
        ("IMD", 0, 99),
        ("QTY", 1, 99),
        ("MOA", 1, 99),
        ("PRI", 0, 25),
        ("TAX", 0, 10),
        ("UNS", 1, 1),
        ("CNT", 0, 10),
        ("MOA", 1, 100),
        ("TAX", 0, 10),
    ),
}
_LINE_GROUP_END: Final = {"ORDERS": "UNS", "ORDRSP": "UNS", "DESADV": "CNT", "INVOIC": "UNS"}


class EdifactError(ValueError):
    """A file we refuse: `segment` is its 1-based position in the interchange, `tag` its tag."""

    def __init__(self, segment: int, tag: str, reason: str) -> None:
        super().__init__(f"segment {segment} ({tag}): {reason}")
        self.segment = segment
        self.tag = tag
        self.reason = reason


class _NoValidation(SegmentFactory):
    """pydifact looks for segment XML it does not ship and warns; our tables check instead."""

    @staticmethod
    def create_segment(
        name: str,
        *elements: Element,
        validate: bool = True,
        version: str = "4",
        directory: str = "d96a",
    ) -> Segment:
        return SegmentFactory.create_segment(
            name, *elements, validate=False, version=version, directory=directory
        )


def parse_interchange(text: str) -> list[Segment]:
    """The segments of an interchange (UNA excluded); EdifactError for broken syntax."""
    try:
        segments = [s for s in Parser(factory=_NoValidation()).parse(text) if s.tag != "UNA"]
    except Exception as exc:  # pydifact raises several kinds for broken syntax
        raise EdifactError(0, "?", f"not EDIFACT: {exc}") from exc
    if not segments or segments[0].tag != "UNB":
        raise EdifactError(
            1, segments[0].tag if segments else "?", "an interchange starts with UNB"
        )
    if segments[-1].tag != "UNZ":
        raise EdifactError(len(segments), segments[-1].tag, "an interchange ends with UNZ")
    return segments


def _text(element: Element | None, index: int = 0) -> str:
    if element is None:
        return ""
    if isinstance(element, list):
        return str(element[index]) if index < len(element) and element[index] is not None else ""
    return element if index == 0 else ""


def _element(segment: Segment, position: int, component: int = 0) -> str:
    elements = segment.elements
    return _text(elements[position], component) if position < len(elements) else ""


def messages_of(segments: Sequence[Segment]) -> list[tuple[int, list[Segment]]]:
    """(position of UNH, segments UNH..UNT) per message; checks UNT and UNZ counts."""
    found: list[tuple[int, list[Segment]]] = []
    current: list[Segment] | None = None
    start = 0
    for position, segment in enumerate(segments[1:-1], start=2):
        if segment.tag == "UNH":
            if current is not None:
                raise EdifactError(position, "UNH", "message not closed by UNT before next UNH")
            current, start = [segment], position
        elif current is None:
            raise EdifactError(position, segment.tag, "segment outside a message (UNH..UNT)")
        else:
            current.append(segment)
            if segment.tag == "UNT":
                if _element(segment, 0) != str(len(current)):
                    raise EdifactError(
                        position,
                        "UNT",
                        f"says {_element(segment, 0)} segments, message has {len(current)}",
                    )
                if _element(segment, 1) != _element(current[0], 0):
                    raise EdifactError(position, "UNT", "reference differs from its UNH")
                found.append((start, current))
                current = None
    if current is not None:
        raise EdifactError(len(segments), segments[-1].tag, "message not closed by UNT")
    unz = segments[-1]
    if _element(unz, 0) != str(len(found)):
        raise EdifactError(
            len(segments), "UNZ", f"says {_element(unz, 0)} messages, found {len(found)}"
        )
    if _element(unz, 1) != _element(segments[0], 4):
        raise EdifactError(len(segments), "UNZ", "control reference differs from UNB's")
    return found


def check_structure(kind: str, start: int, message: Sequence[Segment]) -> None:
    """`message` (UNH..UNT) follows our table for `kind`; EdifactError names the first misfit."""
    table = TABLES[kind]
    body = list(message[1:-1])
    line_start = next(i for i, (tag, _, _) in enumerate(table) if tag == "LIN")
    group_end = next(i for i, (tag, _, _) in enumerate(table) if tag == _LINE_GROUP_END[kind])
    index = 0

    def run(rows: Sequence[tuple[str, int, int]]) -> None:
        nonlocal index
        for tag, low, high in rows:
            count = 0
            while index < len(body) and body[index].tag == tag and count < high:
                index += 1
                count += 1
            if count < low:
                found = body[index].tag if index < len(body) else "UNT"
                raise EdifactError(start + 1 + index, found, f"expected {tag} here ({kind})")

    run(table[:line_start])
    lines = 0
    while index < len(body) and body[index].tag == "LIN":
        run(table[line_start:group_end])
        lines += 1
    if lines == 0 and table[line_start][1] > 0:
        found = body[index].tag if index < len(body) else "UNT"
        raise EdifactError(start + 1 + index, found, f"{kind} needs at least one LIN")
    run(table[group_end:])
    if index < len(body):
        raise EdifactError(start + 1 + index, body[index].tag, f"unexpected segment in {kind}")


@dataclass(frozen=True)
class OrderLineIn:
    line: int
    gtin: str
    supplier_article: str
    description: str
    quantity: int
    net_price: Decimal | None
    tax_rate: Decimal | None


@dataclass(frozen=True)
class OrdersIn:
    sender: str  # UNB sender GLN
    recipient: str
    control_reference: str
    message_reference: str
    order_number: str  # BGM 1004
    order_date: str  # CCYYMMDD
    delivery_date: str
    buyer: str  # NAD+BY GLN
    delivery_party: str  # NAD+DP GLN
    currency: str
    lines: tuple[OrderLineIn, ...]


def _decimal(value: str, position: int, tag: str, what: str) -> Decimal:
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise EdifactError(position, tag, f"{what} {value!r} is not a number") from None
    if not number.is_finite() or number < 0:
        raise EdifactError(position, tag, f"{what} {value!r} is not a non-negative number")
    return number


def read_orders(text: str) -> list[OrdersIn]:
    """Every ORDERS message of an interchange; EdifactError for the first thing wrong."""
    segments = parse_interchange(text)
    unb = segments[0]
    if _element(unb, 0) != SYNTAX[0] and _element(unb, 0) not in ("UNOA", "UNOB", "UNOC", "UNOD"):
        raise EdifactError(1, "UNB", f"syntax {_element(unb, 0)!r} not supported")
    orders: list[OrdersIn] = []
    for start, message in messages_of(segments):
        kind = _element(message[0], 1, 0)
        version = (_element(message[0], 1, 1), _element(message[0], 1, 2))
        if kind != "ORDERS":
            raise EdifactError(start, "UNH", f"message type {kind!r}, expected ORDERS")
        if version != ("D", "96A"):
            raise EdifactError(start, "UNH", f"version {':'.join(version)}, expected D:96A")
        check_structure("ORDERS", start, message)
        orders.append(_order(unb, start, message))
    return orders


def _order(unb: Segment, start: int, message: Sequence[Segment]) -> OrdersIn:
    values = {"number": "", "date": "", "delivery": "", "BY": "", "DP": "", "currency": "EUR"}
    lines: list[OrderLineIn] = []
    current: dict[str, object] | None = None

    def close() -> None:
        if current is not None:
            lines.append(OrderLineIn(**current))  # type: ignore[arg-type]

    for offset, segment in enumerate(message):
        position = start + offset
        tag = segment.tag
        if tag == "BGM":
            if _element(segment, 0, 0) != "220":
                raise EdifactError(
                    position, tag, f"document {_element(segment, 0)!r}, expected 220 (order)"
                )
            values["number"] = _element(segment, 1)
            if not values["number"]:
                raise EdifactError(position, tag, "order number (1004) missing")
        elif tag == "DTM" and current is None:
            qualifier, value = _element(segment, 0, 0), _element(segment, 0, 1)
            if qualifier == "137":
                values["date"] = value
            elif qualifier == "2":
                values["delivery"] = value
        elif tag == "NAD":
            role = _element(segment, 0)
            if role in ("BY", "DP"):
                values[role] = _element(segment, 1, 0)
        elif tag == "CUX":
            values["currency"] = _element(segment, 0, 1) or "EUR"
        elif tag == "LIN":
            close()
            gtin = _element(segment, 2, 0)
            current = {
                "line": len(lines) + 1,
                "gtin": gtin,
                "supplier_article": "",
                "description": "",
                "quantity": 0,
                "net_price": None,
                "tax_rate": None,
            }
        elif current is not None and tag == "PIA":
            current["supplier_article"] = _element(segment, 1, 0)
        elif current is not None and tag == "IMD":
            current["description"] = _element(segment, 2, 3) or _element(segment, 2, 0)
        elif current is not None and tag == "QTY" and _element(segment, 0, 0) == "21":
            quantity = _decimal(_element(segment, 0, 1), position, tag, "quantity")
            if quantity != quantity.to_integral_value() or not 1 <= quantity <= MAX_COUNT:
                raise EdifactError(
                    position, tag, f"quantity {quantity} must be a whole 1..{MAX_COUNT}"
                )
            current["quantity"] = int(quantity)
        elif current is not None and tag == "PRI" and _element(segment, 0, 0) == "AAA":
            current["net_price"] = _decimal(_element(segment, 0, 1), position, tag, "price")
        elif current is not None and tag == "TAX" and _element(segment, 0) == "7":
            current["tax_rate"] = _decimal(_element(segment, 4, 3), position, tag, "tax rate")
    close()
    for line in lines:
        if line.quantity == 0:
            raise EdifactError(start, "QTY", f"line {line.line} has no ordered quantity (QTY 21)")
        if not (line.gtin or line.supplier_article):
            raise EdifactError(start, "LIN", f"line {line.line} names no article (LIN GTIN or PIA)")
    if not values["BY"]:
        raise EdifactError(start, "NAD", "no buyer (NAD+BY)")
    return OrdersIn(
        sender=_element(unb, 1, 0),
        recipient=_element(unb, 2, 0),
        control_reference=_element(unb, 4),
        message_reference=_element(message[0], 0),
        order_number=values["number"],
        order_date=values["date"],
        delivery_date=values["delivery"],
        buyer=values["BY"],
        delivery_party=values["DP"] or values["BY"],
        currency=values["currency"],
        lines=tuple(lines),
    )


def build_interchange(
    *,
    sender: str,
    recipient: str,
    control_reference: int,
    at: datetime,
    messages: Iterable[tuple[str, Sequence[Segment]]],
) -> str:
    """UNA, UNB, each (type, body segments) as UNH..UNT with its count, UNZ with the count.

    Message references are 1, 2, ... within the interchange; `control_reference` (UNB 0020)
    must never repeat for a sender and recipient (see folder.ControlReferences)."""
    reference = str(control_reference)
    segments: list[Segment] = [
        Segment("UNA", UNA),
        Segment(
            "UNB",
            list(SYNTAX),
            [sender, GLN_QUALIFIER],
            [recipient, GLN_QUALIFIER],
            [at.strftime("%y%m%d"), at.strftime("%H%M")],
            reference,
        ),
    ]
    count = 0
    for number, (kind, body) in enumerate(messages, start=1):
        count += 1
        header = Segment("UNH", str(number), [kind, "D", "96A", "UN", "EAN008"])
        segments.extend([header, *body, Segment("UNT", str(len(body) + 2), str(number))])
    segments.append(Segment("UNZ", str(count), reference))
    # No line breaks between segments: the syntax forbids them, even if many tolerate them.
    return Serializer(CHARACTERS).serialize(segments, True, False)

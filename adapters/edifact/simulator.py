"""`EdifactPartner`: a B2B trading partner on the far side of an `edifact` channel's folder.

The partner works on the channel's drop folder exactly as a real one does over SFTP:

- it uploads ORDERS interchanges (EANCOM D.96A, its own GLN as UNB sender and NAD+BY, ours as
  recipient and NAD+SU) as `in/.<name>.part` and renames them into `in/<name>` once complete,
  with UNB control references from its own persisted counter (never repeated);
- it reads back what somsd writes to `out/` (ORDRSP, DESADV, INVOIC) with pydifact and checks
  each interchange: UNB/UNT/UNZ counts and references, the message structure, control
  references never repeating, the GLNs, that the order number (RFF+ON) is one it sent, that
  ORDRSP confirms the ordered lines, that despatched and invoiced quantities never exceed the
  ordered ones, and that INVOIC's line amounts add up to its totals. Everything received is
  kept (`received`) with the problems found (`problems`), for tests to assert on;
- it injects faults on request (`drop_fault`): a truncated file, wrong UNZ or UNT counts, an
  unknown segment, a reused control reference, a file of non-UTF-8 garbage, a file left
  half-written without the rename, and the content errors somsd must name (no buyer, a
  fractional quantity, not an order, the wrong directory version, no lines).

Run standalone (`python -m adapters.edifact --folder DIR --gln G --supplier S --orders N`): it
drops N orders at `--rate` per second, collects the answers until `--seconds` have passed
since the last order (or every order has its ORDRSP), and writes a JSON report
(`--report FILE`, else stdout); the exit status is 0 only if every order got its ORDRSP and
no problem was found.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Final, Literal, get_args

import msgspec
import trio
from pydifact.segments import Segment

from adapters.edifact.eancom import (
    EdifactError,
    build_interchange,
    check_structure,
    messages_of,
    parse_interchange,
)
from adapters.edifact.folder import ControlReferences

__all__ = [
    "FAULTS",
    "DroppedFault",
    "EdifactPartner",
    "Fault",
    "PartnerLine",
    "Received",
    "ReceivedLine",
    "SentOrder",
    "main",
]

Fault = Literal[
    "truncated",
    "unz_count",
    "unt_count",
    "unknown_segment",
    "duplicate_control_reference",
    "garbage",
    "partial",
    "no_buyer",
    "bad_quantity",
    "not_an_order",
    "wrong_version",
    "no_lines",
]
FAULTS: Final[tuple[Fault, ...]] = get_args(Fault)

# What somsd's quarantine reason for each fault says ("partial" is never taken at all).
_FAULT_REASON: Final[dict[Fault, str]] = {
    "truncated": "an interchange ends with UNZ",
    "unz_count": "(UNZ): says 2 messages",
    "unt_count": "(UNT): says",
    "unknown_segment": "(XYZ)",
    "duplicate_control_reference": "(UNB): control reference",
    "garbage": "not EDIFACT",
    "partial": "",
    "no_buyer": "no buyer (NAD+BY)",
    "bad_quantity": "(QTY): quantity",
    "not_an_order": "(BGM): document '380'",
    "wrong_version": "(UNH): version D:01B",
    "no_lines": "(UNS): ORDERS needs at least one LIN",
}
_OUT_KINDS: Final = ("ORDRSP", "DESADV", "INVOIC")
_POLL_SECONDS: Final = 0.05  # another process writes the files: look again this often


@dataclass(frozen=True)
class PartnerLine:
    """One ORDERS line: LIN GTIN, PIA supplier article (somsd's SKU), QTY 21, PRI AAA, TAX."""

    gtin: str
    article: str
    quantity: int
    net_price: Decimal
    tax_rate: Decimal | None = None  # None: no TAX segment (the channel's default rate)
    description: str = ""


@dataclass(frozen=True)
class SentOrder:
    file: str
    control_reference: int
    order_number: str
    lines: tuple[PartnerLine, ...]


@dataclass(frozen=True)
class DroppedFault:
    """A faulty file in in/: `reason` is what somsd's quarantine reason must say."""

    fault: Fault
    file: str
    reason: str
    order_number: str


@dataclass(frozen=True)
class ReceivedLine:
    article: str
    quantity: int
    amount: Decimal | None = None  # INVOIC MOA 203
    price: Decimal | None = None  # INVOIC PRI AAA


@dataclass(frozen=True)
class Received:
    """One interchange read from out/, with what the partner found wrong in it."""

    file: str
    kind: str  # ORDRSP, DESADV, INVOIC; "" when it could not be read
    control_reference: str
    document_code: str  # BGM 1001: 231, 351, 380, 381
    document_number: str  # BGM 1004
    order_number: str  # RFF+ON
    preceding_invoice: str  # RFF+IV (a credit note's invoice)
    lines: tuple[ReceivedLine, ...]
    totals: dict[str, Decimal]  # INVOIC summary MOA qualifier -> amount
    problems: tuple[str, ...]


def _text(segment: Segment, position: int, component: int = 0) -> str:
    elements = segment.elements
    if position >= len(elements):
        return ""
    element = elements[position]
    if isinstance(element, list):
        value = element[component] if component < len(element) else None
        return "" if value is None else str(value)
    return element if component == 0 and element is not None else ""


def _orders_body(
    order_number: str,
    lines: Sequence[PartnerLine],
    *,
    at: datetime,
    buyer: str,
    supplier: str,
    delivery_party: str,
    delivery_date: datetime,
) -> list[Segment]:
    body = [
        Segment("BGM", "220", order_number, "9"),
        Segment("DTM", ["137", at.strftime("%Y%m%d"), "102"]),
        Segment("DTM", ["2", delivery_date.strftime("%Y%m%d"), "102"]),
        Segment("NAD", "BY", [buyer, "", "9"]),
        Segment("NAD", "SU", [supplier, "", "9"]),
        Segment("NAD", "DP", [delivery_party, "", "9"]),
        Segment("CUX", ["2", "EUR", "9"]),
    ]
    for number, line in enumerate(lines, start=1):
        body.append(Segment("LIN", str(number), "", [line.gtin, "SRV"]))
        if line.article:
            body.append(Segment("PIA", "1", [line.article, "SA"]))
        if line.description:
            body.append(Segment("IMD", "F", "", ["", "", "", line.description]))
        body.append(Segment("QTY", ["21", str(line.quantity), "PCE"]))
        body.append(Segment("PRI", ["AAA", f"{line.net_price:f}"]))
        if line.tax_rate is not None:
            body.append(Segment("TAX", "7", "VAT", "", "", ["", "", "", f"{line.tax_rate:f}"]))
    body.extend([Segment("UNS", "S"), Segment("CNT", ["2", str(len(lines))])])
    return body


class EdifactPartner:
    """The partner `gln` trading with somsd's `supplier` GLN through the channel `folder`.

    `state` keeps the partner's own control-reference counter (default: `<folder>/.partner`,
    beside somsd's `.control`, never inside in/ or out/)."""

    def __init__(
        self,
        folder: Path,
        *,
        gln: str,
        supplier: str,
        delivery_party: str = "",
        state: Path | None = None,
    ) -> None:
        self.folder = folder
        self.inbound = folder / "in"
        self.outbound = folder / "out"
        self.failed_folder = folder / "failed"
        self.processed_folder = folder / "processed"
        for path in (self.inbound, self.outbound):
            path.mkdir(parents=True, exist_ok=True)
        self.gln = gln
        self.supplier = supplier
        self.delivery_party = delivery_party or gln
        self.references = ControlReferences((state or folder / ".partner") / gln)
        self.sent: dict[str, SentOrder] = {}
        self.faults: list[DroppedFault] = []
        self._pending: dict[str, SentOrder] = {}  # partial uploads, by file
        self.received: list[Received] = []
        self._read: set[str] = set()
        self._seen_references: dict[str, str] = {}  # control reference -> file
        self._dropped = 0

    # -- sending ---------------------------------------------------------------------------

    def orders_text(
        self,
        order_number: str,
        lines: Sequence[PartnerLine],
        *,
        control_reference: int,
        at: datetime | None = None,
    ) -> str:
        """The ORDERS interchange for one order, exactly as `drop_orders` uploads it."""
        moment = at or datetime.now(UTC)
        body = _orders_body(
            order_number,
            lines,
            at=moment,
            buyer=self.gln,
            supplier=self.supplier,
            delivery_party=self.delivery_party,
            delivery_date=moment + timedelta(days=3),
        )
        return build_interchange(
            sender=self.gln,
            recipient=self.supplier,
            control_reference=control_reference,
            at=moment,
            messages=[("ORDERS", body)],
        )

    def _name(self, name: str | None) -> str:
        self._dropped += 1
        return name or f"orders-{self.gln}-{self._dropped:06d}.edi"

    def _upload(self, name: str, data: bytes, *, complete: bool = True) -> None:
        """Write `.<name>.part`, then rename it into in/ (a partial upload stays .part)."""
        part = self.inbound / f".{name}.part"
        with part.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if complete:
            os.rename(part, self.inbound / name)

    def drop_orders(
        self,
        order_number: str,
        lines: Sequence[PartnerLine],
        *,
        name: str | None = None,
        at: datetime | None = None,
    ) -> SentOrder:
        """Upload one ORDERS interchange with a fresh control reference."""
        file = self._name(name)
        reference = self.references.next()
        text = self.orders_text(order_number, lines, control_reference=reference, at=at)
        self._upload(file, text.encode("latin-1"))
        sent = SentOrder(file, reference, order_number, tuple(lines))
        self.sent[order_number] = sent
        return sent

    def drop_fault(
        self,
        fault: Fault,
        *,
        order_number: str | None = None,
        lines: Sequence[PartnerLine] = (),
        name: str | None = None,
    ) -> DroppedFault:
        """Upload a file broken in the way `fault` names (see the module docstring)."""
        file = self._name(name)
        number = order_number or f"BAD-{self._dropped}"
        order_lines = list(lines) or [PartnerLine("4006381333931", "MUG-1", 1, Decimal("10.00"))]
        if fault == "duplicate_control_reference":
            if not self.sent:
                raise ValueError("a duplicate control reference needs an order sent before")
            reference = max(sent.control_reference for sent in self.sent.values())
        else:
            reference = self.references.next()
        text = self.orders_text(number, order_lines, control_reference=reference)
        data = text.encode("latin-1")
        segments = text.split("'")
        if fault == "truncated":
            data = data[: len(data) * 2 // 3]
        elif fault == "unz_count":
            data = text.replace(f"UNZ+1+{reference}'", f"UNZ+2+{reference}'").encode("latin-1")
        elif fault == "unt_count":
            unt = next(s for s in segments if s.startswith("UNT+"))
            count = int(unt.split("+")[1])
            data = text.replace(f"{unt}'", f"UNT+{count + 1}+1'").encode("latin-1")
        elif fault == "unknown_segment":
            data = self._recount(text.replace("UNS+S'", "XYZ+1'UNS+S'"))
        elif fault == "garbage":
            data = b"\xff\xfe\x00EDI?\x81\x8d\xc3(" * 7
        elif fault == "no_buyer":
            data = self._recount(text.replace(f"NAD+BY+{self.gln}::9'", ""))
        elif fault == "bad_quantity":
            quantity = order_lines[0].quantity
            data = text.replace(f"QTY+21:{quantity}:PCE'", f"QTY+21:{quantity}.5:PCE'", 1).encode(
                "latin-1"
            )
        elif fault == "not_an_order":
            data = text.replace("BGM+220+", "BGM+380+").encode("latin-1")
        elif fault == "wrong_version":
            data = text.replace("ORDERS:D:96A", "ORDERS:D:01B").encode("latin-1")
        elif fault == "no_lines":
            head = text.split("LIN+1", maxsplit=1)[0]
            data = self._recount(head + "UNS+S'UNT+0+1'" + f"UNZ+1+{reference}'")
        self._upload(file, data, complete=fault != "partial")
        if fault == "partial":  # a whole order once `complete` renames it
            self._pending[file] = SentOrder(file, reference, number, tuple(order_lines))
        dropped = DroppedFault(fault, file, _FAULT_REASON[fault], number)
        self.faults.append(dropped)
        return dropped

    @staticmethod
    def _recount(text: str) -> bytes:
        """Fix UNT's count after segments were removed, so only the intended fault remains."""
        parts = text.split("'")
        start = next(i for i, part in enumerate(parts) if part.startswith("UNH+"))
        end = next(i for i, part in enumerate(parts) if part.startswith("UNT+"))
        parts[end] = f"UNT+{end - start + 1}+1"
        return "'".join(parts).encode("latin-1")

    def complete(self, dropped: DroppedFault) -> None:
        """Finish a partial upload: the rename that makes it visible."""
        os.rename(self.inbound / f".{dropped.file}.part", self.inbound / dropped.file)
        sent = self._pending.pop(dropped.file)
        self.sent[sent.order_number] = sent

    # -- receiving -------------------------------------------------------------------------

    def failed(self) -> dict[str, str]:
        """somsd's quarantine: file name -> its reason."""
        if not self.failed_folder.is_dir():
            return {}
        return {
            path.name.removesuffix(".reason.txt"): path.read_text().strip()
            for path in self.failed_folder.glob("*.reason.txt")
        }

    def processed(self) -> set[str]:
        if not self.processed_folder.is_dir():
            return set()
        return {path.name for path in self.processed_folder.iterdir()}

    def collect(self) -> list[Received]:
        """Read and check every interchange in out/ not read before; returns the new ones."""
        new: list[Received] = []
        for path in sorted(self.outbound.iterdir()):
            if path.name in self._read or path.name.startswith(".") or not path.is_file():
                continue
            self._read.add(path.name)
            received = self._check(path.name, path.read_bytes())
            self.received.append(received)
            new.append(received)
        return new

    # The files are written by another process: these look again every _POLL_SECONDS; the
    # caller bounds them with trio.fail_after.
    async def wait_for(
        self, kind: str, count: int = 1, *, order_number: str = ""
    ) -> list[Received]:
        """Collect until `count` interchanges of `kind` (for `order_number`) have arrived."""

        def matching() -> list[Received]:
            return [
                r
                for r in self.received
                if r.kind == kind and (not order_number or r.order_number == order_number)
            ]

        while True:
            await trio.to_thread.run_sync(self.collect)
            if len(matching()) >= count:
                return matching()
            await trio.sleep(_POLL_SECONDS)

    async def wait_failed(self, file: str) -> str:
        """somsd's reason for quarantining `file`, once it is there."""
        while True:
            reasons = await trio.to_thread.run_sync(self.failed)
            if file in reasons and (self.failed_folder / file).exists():
                return reasons[file]
            await trio.sleep(_POLL_SECONDS)

    async def wait_processed(self, file: str) -> None:
        while True:
            if file in await trio.to_thread.run_sync(self.processed):
                return
            await trio.sleep(_POLL_SECONDS)

    @property
    def problems(self) -> list[str]:
        return [f"{r.file}: {problem}" for r in self.received for problem in r.problems]

    def assert_clean(self) -> None:
        problems = self.problems
        if problems:
            raise AssertionError("the partner found problems:\n" + "\n".join(problems))

    def _check(self, file: str, data: bytes) -> Received:
        problems: list[str] = []
        try:
            segments = parse_interchange(data.decode("latin-1"))
            messages = messages_of(segments)
        except EdifactError as exc:
            return Received(file, "", "", "", "", "", "", (), {}, (f"unreadable: {exc}",))
        unb = segments[0]
        reference = _text(unb, 4)
        if _text(unb, 1) != self.supplier:
            problems.append(f"UNB sender {_text(unb, 1)}, expected {self.supplier}")
        if _text(unb, 2) != self.gln:
            problems.append(f"UNB recipient {_text(unb, 2)}, expected {self.gln}")
        if reference in self._seen_references:
            first = self._seen_references[reference]
            problems.append(f"control reference {reference} repeats (first in {first})")
        self._seen_references.setdefault(reference, file)
        if len(messages) != 1:
            problems.append(f"{len(messages)} messages, expected one per interchange")
        start, message = messages[0]
        kind = _text(message[0], 1, 0)
        if kind not in _OUT_KINDS:
            problems.append(f"message type {kind!r} is not one somsd sends")
        else:
            try:
                check_structure(kind, start, message)
            except EdifactError as exc:
                problems.append(str(exc))
        return self._content(file, kind, reference, message, problems)

    def _content(
        self, file: str, kind: str, reference: str, message: Sequence[Segment], problems: list[str]
    ) -> Received:
        values = {"code": "", "number": "", "ON": "", "IV": ""}
        parties: dict[str, str] = {}
        lines: list[ReceivedLine] = []
        totals: dict[str, Decimal] = {}
        current: dict[str, object] | None = None
        after_lines = False

        def close() -> None:
            if current is not None:
                lines.append(ReceivedLine(**current))  # type: ignore[arg-type]

        qualifier = {"ORDRSP": "21", "DESADV": "12", "INVOIC": "47"}.get(kind, "")
        for segment in message:
            tag = segment.tag
            if tag == "BGM":
                values["code"], values["number"] = _text(segment, 0), _text(segment, 1)
            elif tag == "RFF" and _text(segment, 0, 0) in ("ON", "IV"):
                values[_text(segment, 0, 0)] = _text(segment, 0, 1)
            elif tag == "NAD":
                parties[_text(segment, 0)] = _text(segment, 1, 0)
            elif tag == "LIN":
                close()
                current = {"article": _text(segment, 2, 0), "quantity": 0}
            elif tag == "UNS":
                close()
                current, after_lines = None, True
            elif current is not None and tag == "QTY" and _text(segment, 0, 0) == qualifier:
                current["quantity"] = int(Decimal(_text(segment, 0, 1)))
            elif current is not None and tag == "MOA" and _text(segment, 0, 0) == "203":
                current["amount"] = Decimal(_text(segment, 0, 1))
            elif current is not None and tag == "PRI" and _text(segment, 0, 0) == "AAA":
                current["price"] = Decimal(_text(segment, 0, 1))
            elif after_lines and tag == "MOA":
                totals[_text(segment, 0, 0)] = Decimal(_text(segment, 0, 1))
        close()  # DESADV has no UNS
        if parties.get("BY") != self.gln:
            problems.append(f"NAD+BY {parties.get('BY')}, expected {self.gln}")
        if parties.get("SU") != self.supplier:
            problems.append(f"NAD+SU {parties.get('SU')}, expected {self.supplier}")
        received = Received(
            file,
            kind,
            reference,
            values["code"],
            values["number"],
            values["ON"],
            values["IV"],
            tuple(lines),
            totals,
            (),
        )
        sent = self.sent.get(values["ON"])
        if sent is None:
            problems.append(f"order number {values['ON']!r} is not one this partner sent")
        else:
            problems.extend(self._against_order(received, sent))
        return dataclasses.replace(received, problems=tuple(problems))

    def _against_order(self, received: Received, sent: SentOrder) -> list[str]:
        problems: list[str] = []
        ordered: Counter[str] = Counter()
        for line in sent.lines:
            ordered[line.article or line.gtin] += line.quantity

        def key(article: str) -> str:
            for line in sent.lines:
                if article in (line.gtin, line.article):
                    return line.article or line.gtin
            return article

        if received.kind == "ORDRSP":
            confirmed: Counter[str] = Counter()
            for answered in received.lines:
                confirmed[key(answered.article)] += answered.quantity
            if confirmed != ordered:
                problems.append(f"ORDRSP confirms {dict(confirmed)}, ordered {dict(ordered)}")
            return problems
        if received.kind == "INVOIC":
            problems.extend(self._invoice_sums(received))
        kinds = {"DESADV": ("DESADV",), "INVOIC": ("INVOIC",)}[received.kind]
        total: Counter[str] = Counter()
        for earlier in (*self.received, received):
            if earlier.kind not in kinds or earlier.order_number != sent.order_number:
                continue
            sign = -1 if earlier.document_code == "381" else 1
            for item in earlier.lines:
                if item.article != "SHIPPING":
                    total[key(item.article)] += sign * item.quantity
        for article, quantity in total.items():
            if article not in ordered:
                problems.append(f"{received.kind} names {article!r}, which was not ordered")
            elif quantity > ordered[article]:
                problems.append(
                    f"{received.kind}s total {quantity} x {article}, ordered {ordered[article]}"
                )
        return problems

    @staticmethod
    def _invoice_sums(received: Received) -> list[str]:
        problems: list[str] = []
        totals = received.totals
        missing = [q for q in ("77", "79", "124", "125") if q not in totals]
        if missing:
            return [f"INVOIC summary lacks MOA {', '.join(missing)}"]
        line_sum = sum((line.amount or Decimal(0) for line in received.lines), Decimal(0))
        if line_sum != totals["79"]:
            problems.append(f"line amounts add up to {line_sum}, MOA 79 says {totals['79']}")
        if totals["125"] + totals["124"] != totals["77"]:
            problems.append(
                f"MOA 125 {totals['125']} + MOA 124 {totals['124']} != MOA 77 {totals['77']}"
            )
        for line in received.lines:
            if line.amount is None or line.price is None:
                problems.append(f"line {line.article} lacks MOA 203 or PRI AAA")
                continue
            # PRI is net / quantity to 4 places: price x quantity is the amount within that.
            slack = Decimal("0.005") + Decimal("0.00005") * line.quantity
            if abs(line.price * line.quantity - line.amount) > slack:
                problems.append(
                    f"line {line.article}: {line.quantity} x {line.price} != {line.amount}"
                )
        return problems

    def summary(self) -> dict[str, object]:
        by_kind: dict[str, int] = defaultdict(int)
        for received in self.received:
            by_kind[received.kind or "unreadable"] += 1
        answered = {r.order_number for r in self.received if r.kind == "ORDRSP"}
        return {
            "partner": self.gln,
            "orders_sent": len(self.sent),
            "faults_sent": [fault.fault for fault in self.faults],
            "received": dict(by_kind),
            "orders_answered": len(answered & set(self.sent)),
            "quarantined": sorted(self.failed()),
            "problems": self.problems,
        }


def _articles(spec: Iterable[str]) -> list[PartnerLine]:
    """`SKU:GTIN:NET[:RATE]` per article, e.g. `MUG-1:4006381333931:10.00:19`."""
    found: list[PartnerLine] = []
    for item in spec:
        sku, gtin, price, *rate = item.split(":")
        found.append(PartnerLine(gtin, sku, 1, Decimal(price), Decimal(rate[0]) if rate else None))
    return found


async def _run(arguments: argparse.Namespace) -> int:
    partner = EdifactPartner(Path(arguments.folder), gln=arguments.gln, supplier=arguments.supplier)
    articles = _articles(arguments.article or ["MUG-1:4006381333931:10.00:19"])
    interval = 1.0 / arguments.rate if arguments.rate > 0 else 0.0
    for index in range(arguments.orders):
        article = articles[index % len(articles)]
        line = PartnerLine(
            article.gtin, article.article, 1 + index % 3, article.net_price, article.tax_rate
        )
        partner.drop_orders(f"{arguments.prefix}{index + 1:06d}", [line])
        await trio.to_thread.run_sync(partner.collect)
        await trio.sleep(interval)
    with trio.move_on_after(arguments.seconds):
        while {r.order_number for r in partner.received if r.kind == "ORDRSP"} < set(partner.sent):
            await trio.to_thread.run_sync(partner.collect)
            await trio.sleep(_POLL_SECONDS * 4)
    await trio.to_thread.run_sync(partner.collect)
    report = msgspec.json.encode(partner.summary()).decode() + "\n"
    if arguments.report:
        await trio.Path(arguments.report).write_text(report)
    else:
        sys.stdout.write(report)
    answered = {r.order_number for r in partner.received if r.kind == "ORDRSP"}
    return 0 if not partner.problems and answered >= set(partner.sent) else 1


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m adapters.edifact", description="An EANCOM trading partner on a folder"
    )
    parser.add_argument("--folder", required=True, help="the edifact channel's folder")
    parser.add_argument("--gln", required=True, help="the partner's GLN (UNB sender, NAD+BY)")
    parser.add_argument("--supplier", required=True, help="somsd's GLN (the channel's gln)")
    parser.add_argument("--orders", type=int, default=10, help="ORDERS interchanges to drop")
    parser.add_argument("--rate", type=float, default=2.0, help="orders per second (0: at once)")
    parser.add_argument("--prefix", default="PO-", help="order numbers start with this")
    parser.add_argument(
        "--article", action="append", help="SKU:GTIN:NET[:RATE], repeatable (default MUG-1)"
    )
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="how long to wait for the answers"
    )
    parser.add_argument("--report", help="write the JSON report here instead of stdout")
    arguments = parser.parse_args(argv)
    raise SystemExit(trio.run(_run, arguments))


if __name__ == "__main__":
    main()

"""EDIFACT round trip in one process: the partner simulator's ORDERS file in the drop folder ->
canonical order -> ORDRSP, DESADV and INVOIC that the simulator reads back and checks (counts,
structure, GLNs, order numbers, quantities, sums); its malformed files quarantined with the
segment and reason; control references never repeat."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydifact.segments import Segment

from adapters.edifact.eancom import (
    EdifactError,
    build_interchange,
    parse_interchange,
    read_orders,
)
from adapters.edifact.folder import ControlReferences, DropFolder
from adapters.edifact.messages import Partner, desadv, invoic, ordrsp, to_canonical
from adapters.edifact.simulator import FAULTS, EdifactPartner, Fault, PartnerLine
from somsd.domain.documents import build_document, shipping_by_rate
from somsd.domain.order import Address, decode_order

BUYER = "4012345000009"
SUPPLIER = "4098765000002"
DELIVERY_PARTY = "4012345000016"
AT = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
PARTNER = Partner(
    gln=BUYER,
    name="Handelshaus Nord GmbH",
    email="edi@handelshaus.example",
    address=Address(
        name="Wareneingang",
        company="Handelshaus Nord GmbH",
        street="Lagerweg 3",
        zip="28195",
        city="Bremen",
        country="DE",
    ),
)

LINES = (
    PartnerLine("4006381333931", "MUG-1", 3, Decimal("10.00"), description="Becher 0,3 l"),
    PartnerLine("4006381333948", "BOOK-1", 1, Decimal("11.21"), Decimal(7)),
)


def partner_at(folder: Path) -> EdifactPartner:
    return EdifactPartner(folder, gln=BUYER, supplier=SUPPLIER, delivery_party=DELIVERY_PARTY)


def test_orders_file_to_order_and_back_as_ordrsp_desadv_invoic(tmp_path: Path) -> None:
    folder = DropFolder(tmp_path / "partner")
    partner = partner_at(folder.root)
    partial = partner.drop_fault("partial")  # still being uploaded: never claimed
    sent = partner.drop_orders("PO-4711", LINES, at=AT)
    claimed = list(folder.claim())
    assert [path.name for path in claimed] == [sent.file]
    (orders,) = read_orders(folder.read(claimed[0]))
    folder.done(claimed[0])
    assert sent.file in partner.processed()
    assert (folder.inbound / f".{partial.file}.part").exists()
    assert orders.order_number == "PO-4711"
    assert orders.control_reference == str(sent.control_reference)
    assert orders.delivery_party == DELIVERY_PARTY
    assert [(line.supplier_article, line.quantity) for line in orders.lines] == [
        ("MUG-1", 3),
        ("BOOK-1", 1),
    ]

    order = to_canonical(orders, PARTNER, received_at=AT)
    # What every channel's order must pass: the canonical validation.
    decoded = decode_order(msgspec.json.encode(order))
    assert decoded.external_id == f"{BUYER}:PO-4711"
    assert [line.unit_price for line in decoded.lines] == [Decimal("11.90"), Decimal("11.99")]
    assert [line.tax_rate for line in decoded.lines] == [Decimal(19), Decimal(7)]
    assert decoded.lines[0].name == "Becher 0,3 l"

    references = ControlReferences(tmp_path / "refs" / BUYER)
    quantities = {0: 3, 1: 1}
    document = build_document(
        order, "invoice", quantities, shipping=shipping_by_rate(order, quantities)
    )
    outbound = {
        "ORDRSP": ordrsp(orders, number="AB-PO-4711", at=AT, supplier=SUPPLIER),
        "DESADV": desadv(
            number="LS-1",
            at=AT,
            order_number=orders.order_number,
            buyer=BUYER,
            supplier=SUPPLIER,
            delivery_party=orders.delivery_party,
            lines=[("MUG-1", 3), ("BOOK-1", 1)],
        ),
        "INVOIC": invoic(
            document,
            number="RE-2026-000001",
            at=AT,
            order_number=orders.order_number,
            buyer=BUYER,
            supplier=SUPPLIER,
        ),
    }
    for kind, body in outbound.items():
        reference = references.next()
        text = build_interchange(
            sender=SUPPLIER,
            recipient=BUYER,
            control_reference=reference,
            at=AT,
            messages=[(kind, body)],
        )
        folder.send(f"{kind.lower()}-{reference}.edi", text)
    # The partner reads them back: counts, structure, GLNs, order number, quantities, sums.
    received = {item.kind: item for item in partner.collect()}
    partner.assert_clean()
    assert sorted(received) == ["DESADV", "INVOIC", "ORDRSP"]
    assert len({item.control_reference for item in received.values()}) == 3
    assert received["INVOIC"].totals["77"] == document.gross
    assert received["INVOIC"].totals["79"] == document.net
    assert received["INVOIC"].totals["124"] == document.tax
    assert [(line.article, line.quantity) for line in received["DESADV"].lines] == [
        ("MUG-1", 3),
        ("BOOK-1", 1),
    ]
    # A new ControlReferences on the same file (a restart) continues, never repeats.
    last = max(int(item.control_reference) for item in received.values())
    assert ControlReferences(tmp_path / "refs" / BUYER).next() == last + 1


def test_the_partner_catches_what_somsd_must_never_send(tmp_path: Path) -> None:
    """The simulator's checks are real: a repeated control reference, a foreign order
    number, more despatched than ordered and totals that do not add up are each reported."""
    folder = DropFolder(tmp_path / "partner")
    partner = partner_at(folder.root)
    sent = partner.drop_orders("PO-1", LINES[:1], at=AT)
    (orders,) = read_orders((folder.inbound / sent.file).read_text(encoding="latin-1"))

    def send(name: str, kind: str, body: list[Segment], reference: int) -> None:
        text = build_interchange(
            sender=SUPPLIER,
            recipient=BUYER,
            control_reference=reference,
            at=AT,
            messages=[(kind, body)],
        )
        folder.send(name, text)

    send("a.edi", "ORDRSP", ordrsp(orders, number="AB-1", at=AT, supplier=SUPPLIER), 5)
    send("b.edi", "ORDRSP", ordrsp(orders, number="AB-1", at=AT, supplier=SUPPLIER), 5)
    too_many = desadv(
        number="LS-1",
        at=AT,
        order_number="PO-1",
        buyer=BUYER,
        supplier=SUPPLIER,
        delivery_party=BUYER,
        lines=[("MUG-1", 4)],
    )
    send("c.edi", "DESADV", too_many, 6)
    order = to_canonical(orders, PARTNER, received_at=AT)
    document = build_document(order, "invoice", {0: 3})
    body = invoic(
        document, number="RE-1", at=AT, order_number="PO-1", buyer=BUYER, supplier=SUPPLIER
    )
    tampered = [
        Segment("MOA", ["77", "999.99"]) if s.tag == "MOA" and s.elements[0][0] == "77" else s
        for s in body
    ]
    send("d.edi", "INVOIC", tampered, 7)
    foreign = [Segment("RFF", ["ON", "PO-999"]) if s.tag == "RFF" else s for s in too_many]
    send("e.edi", "DESADV", foreign, 8)
    partner.collect()
    problems = "\n".join(partner.problems)
    assert "b.edi: control reference 5 repeats (first in a.edi)" in problems
    assert "c.edi: DESADVs total 4 x MUG-1, ordered 3" in problems
    assert "d.edi: MOA 125 30.00 + MOA 124 5.70 != MOA 77 999.99" in problems
    assert "e.edi: order number 'PO-999' is not one this partner sent" in problems
    assert not any(p.startswith("a.edi") for p in partner.problems)
    with pytest.raises(AssertionError):
        partner.assert_clean()


CONTENT_FAULTS = [
    fault for fault in FAULTS if fault not in ("partial", "duplicate_control_reference")
]


@pytest.mark.parametrize("fault", CONTENT_FAULTS)
def test_malformed_files_are_quarantined_with_segment_and_reason(
    tmp_path: Path, fault: Fault
) -> None:
    folder = DropFolder(tmp_path / "partner")
    dropped = partner_at(folder.root).drop_fault(fault)
    (path,) = folder.claim()
    with pytest.raises(EdifactError) as caught:
        read_orders(folder.read(path))
    assert dropped.reason in str(caught.value)
    assert f"segment {caught.value.segment} ({caught.value.tag})" in str(caught.value)
    folder.quarantine(path, str(caught.value))
    assert (folder.failed / dropped.file).exists()
    reason = partner_at(folder.root).failed()[dropped.file]
    assert dropped.reason in reason
    assert not list(folder.inbound.iterdir())
    assert not list(folder.processing.iterdir())


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="UNBHTZ+:'?.0123456789ORDESA ", max_size=300))
def test_random_input_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(EdifactError):
        read_orders(text)


def test_release_characters_survive_the_round_trip(tmp_path: Path) -> None:
    document_name = "Preis 5+3? ok: ja'x"
    text = partner_at(tmp_path).orders_text("PO-4711", LINES, control_reference=1, at=AT)
    order = to_canonical(read_orders(text)[0], PARTNER, received_at=AT)
    quantities = {0: 1}
    renamed = msgspec.structs.replace(
        order, lines=(msgspec.structs.replace(order.lines[0], name=document_name), order.lines[1])
    )
    document = build_document(renamed, "invoice", quantities)
    text = build_interchange(
        sender=SUPPLIER,
        recipient=BUYER,
        control_reference=7,
        at=AT,
        messages=[
            (
                "INVOIC",
                invoic(
                    document,
                    number="RE-1",
                    at=AT,
                    order_number="PO-4711",
                    buyer=BUYER,
                    supplier=SUPPLIER,
                ),
            )
        ],
    )
    segments = parse_interchange(text)
    names = [s.elements[2][3] for s in segments if s.tag == "IMD"]
    assert names == [document_name]


def test_an_edifact_channel_needs_its_folder_and_gln() -> None:
    from somsd.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config('[[channel]]\nname = "edi"\nkind = "edifact"\n')
    assert "channel[0].folder: required for kind edifact" in caught.value.problems
    assert "channel[0].gln: required for kind edifact" in caught.value.problems


@pytest.mark.slow
def test_the_simulator_runs_standalone(tmp_path: Path) -> None:
    """`python -m adapters.edifact`: drops its orders and reports; with nobody answering
    them it says so and exits 1."""
    import json
    import subprocess
    import sys

    report = tmp_path / "report.json"
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "adapters.edifact",
            *("--folder", str(tmp_path / "edi"), "--gln", BUYER, "--supplier", SUPPLIER),
            *("--orders", "3", "--rate", "0", "--seconds", "0.2", "--report", str(report)),
        ],
        check=False,
        timeout=60,
    )
    assert finished.returncode == 1
    summary = json.loads(report.read_text())
    assert summary["orders_sent"] == 3
    assert summary["orders_answered"] == 0
    dropped = sorted(path.name for path in (tmp_path / "edi" / "in").iterdir())
    assert len(dropped) == 3
    texts = [read_orders((tmp_path / "edi" / "in" / name).read_text("latin-1")) for name in dropped]
    assert [orders[0].order_number for orders in texts] == ["PO-000001", "PO-000002", "PO-000003"]
    assert len({orders[0].control_reference for orders in texts}) == 3

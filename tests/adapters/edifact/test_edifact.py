"""EDIFACT round trip: an ORDERS file from a partner's drop folder -> canonical order ->
ORDRSP, DESADV and INVOIC whose segments and counts the parser reads back; malformed files
quarantined with the segment and reason; control references never repeat."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.edifact.eancom import (
    EdifactError,
    build_interchange,
    check_structure,
    messages_of,
    parse_interchange,
    read_orders,
)
from adapters.edifact.folder import ControlReferences, DropFolder
from adapters.edifact.messages import Partner, desadv, invoic, ordrsp, to_canonical
from somsd.domain.documents import build_document, shipping_by_rate
from somsd.domain.order import Address, decode_order

BUYER = "4012345000009"
SUPPLIER = "4098765000002"
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

ORDERS = (
    "UNA:+.? '"
    f"UNB+UNOC:3+{BUYER}:14+{SUPPLIER}:14+261207:0930+1001'"
    "UNH+1+ORDERS:D:96A:UN:EAN008'"
    "BGM+220+PO-4711+9'"
    "DTM+137:20261207:102'"
    "DTM+2:20261210:102'"
    f"NAD+BY+{BUYER}::9'"
    f"NAD+SU+{SUPPLIER}::9'"
    "NAD+DP+4012345000016::9'"
    "CUX+2:EUR:9'"
    "LIN+1++4006381333931:SRV'"
    "PIA+1+MUG-1:SA'"
    "IMD+F++:::Becher 0?,3 l'"
    "QTY+21:3:PCE'"
    "PRI+AAA:10.00'"
    "LIN+2++4006381333948:SRV'"
    "PIA+1+BOOK-1:SA'"
    "QTY+21:1:PCE'"
    "PRI+AAA:11.21'"
    "TAX+7+VAT+++:::7'"
    "UNS+S'"
    "CNT+2:2'"
    "UNT+21+1'"
    "UNZ+1+1001'"
)


def test_orders_file_to_order_and_back_as_ordrsp_desadv_invoic(tmp_path: Path) -> None:
    folder = DropFolder(tmp_path / "partner")
    (folder.inbound / ".upload.tmp").write_text("half a file")  # still being uploaded
    (folder.inbound / "orders-1.edi").write_text(ORDERS)
    claimed = list(folder.claim())
    assert [path.name for path in claimed] == ["orders-1.edi"]
    (orders,) = read_orders(folder.read(claimed[0]))
    folder.done(claimed[0])
    assert (folder.processed / "orders-1.edi").exists()
    assert orders.order_number == "PO-4711"
    assert orders.delivery_party == "4012345000016"
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
            lines=[("4006381333931", 3), ("4006381333948", 1)],
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
    seen: set[int] = set()
    for kind, body in outbound.items():
        reference = references.next()
        assert reference not in seen
        seen.add(reference)
        text = build_interchange(
            sender=SUPPLIER,
            recipient=BUYER,
            control_reference=reference,
            at=AT,
            messages=[(kind, body)],
        )
        path = folder.send(f"{kind.lower()}-{reference}.edi", text)
        segments = parse_interchange(path.read_text(encoding="latin-1"))
        ((start, message),) = messages_of(segments)  # UNT and UNZ counts checked here
        assert message[0].elements[1][0] == kind
        check_structure(kind, start, message)
        assert segments[0].elements[4] == str(reference)
        if kind == "INVOIC":
            moa = {s.elements[0][0]: Decimal(s.elements[0][1]) for s in message if s.tag == "MOA"}
            assert moa["77"] == document.gross
            assert moa["79"] == document.net
            assert moa["124"] == document.tax
    # A new ControlReferences on the same file (a restart) continues, never repeats.
    assert ControlReferences(tmp_path / "refs" / BUYER).next() == max(seen) + 1


BROKEN = {
    "unt count": (ORDERS.replace("UNT+21+1'", "UNT+20+1'"), "UNT"),
    "unz count": (ORDERS.replace("UNZ+1+1001'", "UNZ+2+1001'"), "UNZ"),
    "no buyer": (ORDERS.replace(f"NAD+BY+{BUYER}::9'", ""), "UNT"),
    "bad quantity": (ORDERS.replace("QTY+21:3:PCE'", "QTY+21:3.5:PCE'"), "QTY"),
    "not an order": (ORDERS.replace("BGM+220+", "BGM+380+"), "BGM"),
    "wrong version": (ORDERS.replace("ORDERS:D:96A", "ORDERS:D:01B"), "UNH"),
    "no lines": (ORDERS.split("LIN+1", maxsplit=1)[0] + "UNS+S'UNT+10+1'UNZ+1+1001'", "UNS"),
    "garbage": ("this is not edifact", "?"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_malformed_files_are_quarantined_with_segment_and_reason(tmp_path: Path, case: str) -> None:
    text, tag = BROKEN[case]
    folder = DropFolder(tmp_path / "partner")
    (folder.inbound / "bad.edi").write_text(text)
    (path,) = folder.claim()
    with pytest.raises(EdifactError) as caught:
        read_orders(folder.read(path))
    assert caught.value.tag == tag, str(caught.value)
    folder.quarantine(path, str(caught.value))
    assert (folder.failed / "bad.edi").exists()
    reason = (folder.failed / "bad.edi.reason.txt").read_text()
    assert f"({tag})" in reason
    assert not list(folder.inbound.iterdir())
    assert not list(folder.processing.iterdir())


@settings(max_examples=40, deadline=None)
@given(text=st.text(alphabet="UNBHTZ+:'?.0123456789ORDESA ", max_size=300))
def test_random_input_is_refused_cleanly(text: str) -> None:
    with contextlib.suppress(EdifactError):
        read_orders(text)


def test_release_characters_survive_the_round_trip() -> None:
    document_name = "Preis 5+3? ok: ja'x"
    order = to_canonical(read_orders(ORDERS)[0], PARTNER, received_at=AT)
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

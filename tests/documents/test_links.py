"""Signed invoice links for shop order notes: what the note says and what the link opens."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from actors.documents import DocumentRendered, link_is_valid, link_note
from somsd.config import DocumentsConfig, Duration, SecretFile
from somsd.domain.channel_sync import ChannelEffect
from somsd.domain.testing import sample_order
from somsd.secrets import Secret

NOW = 1_800_000_000.0


def record(valid: bool = True, kind: str = "invoice") -> DocumentRendered:
    return DocumentRendered(
        number="RE-2026-000042",
        kind=kind,
        order_id="ord-1",
        issue_date=date(2026, 12, 7),
        profile="EN16931",
        files=(),
        valid=valid,
    )


def documents(**changes: object) -> DocumentsConfig:
    key = SecretFile(Path("links.key"), Secret("k3y\n"))
    base = DocumentsConfig(
        public_url="https://shop.example.com/somsd/",
        link_key_file=key,
        link_valid_for=Duration("7d"),
    )
    return msgspec.structs.replace(base, **changes)


def test_the_note_links_the_pdf_for_as_long_as_configured() -> None:
    order = sample_order()
    item = link_note(documents(), record(), "shop", order, NOW)
    assert item is not None
    assert item.target == "channel/shop"
    effect = msgspec.json.decode(item.payload, type=ChannelEffect)
    assert (effect.kind, effect.order_id, effect.number) == ("note", "ord-1", order.number)
    assert effect.key == item.idempotency_key == "channel/shop/ord-1/note/document-RE-2026-000042"
    link = re.search(r"https://\S+", effect.note)
    assert link is not None
    parts = urlsplit(link.group(0))
    assert parts.path == "/somsd/v1/public/documents/RE-2026-000042"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    expires = int(query["expires"])
    assert expires == NOW + 7 * 86400
    assert effect.note.startswith("Rechnung RE-2026-000042 als PDF (bis 2027-01-22)")
    assert link_is_valid(b"k3y", "RE-2026-000042", expires, query["sig"], NOW)
    assert not link_is_valid(b"k3y", "RE-2026-000042", expires, query["sig"], expires + 1)
    assert not link_is_valid(b"k3y", "RE-2026-000043", expires, query["sig"], NOW)


def test_no_note_without_a_public_url_or_for_an_invalid_e_invoice() -> None:
    order = sample_order()
    assert link_note(documents(public_url=None), record(), "shop", order, NOW) is None
    assert link_note(documents(), record(valid=False), "shop", order, NOW) is None
    note = link_note(documents(), record(kind="credit_note"), "shop", order, NOW)
    assert note is not None
    assert b"Rechnungskorrektur RE-2026-000042" in note.payload


@given(st.text(max_size=80), st.integers(min_value=0, max_value=10**11))
def test_a_forged_signature_never_opens_a_document(signature: str, expires: int) -> None:
    from actors.documents import _link_signature

    genuine = _link_signature(b"k3y", "RE-2026-000042", expires)
    valid = link_is_valid(b"k3y", "RE-2026-000042", expires, signature, 0.0)
    assert valid == (signature == genuine)

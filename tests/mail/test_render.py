"""Customer mails, pure: planning (keys once per cause) and rendering (escaping, headers,
one customer per mail, languages, templates overridable)."""

from __future__ import annotations

from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape

from somsd.config import parse_config
from somsd.domain.atp import StockLine
from somsd.domain.cancellation import cancel_order
from somsd.domain.lifecycle import receive_order
from somsd.domain.order import Address as PostalAddress
from somsd.domain.order import Customer
from somsd.domain.policy import OrderPolicy
from somsd.domain.state import OrderState
from somsd.domain.testing import InMemoryOrderLog, sample_order
from somsd.mail import (
    Attachment,
    InvalidRecipient,
    MailJob,
    MailSettings,
    Renderer,
    TemplateProblem,
    build_message,
    header_text,
    message_id_for,
    plan_order_mails,
)
from somsd.mail.render import mail_settings

NOW = datetime(2026, 12, 7, 11, tzinfo=UTC)
POLICY = OrderPolicy()
RENDERER = Renderer()
SETTINGS = MailSettings(
    sender="Test Shop <shop@example.com>",
    reply_to="service@example.com",
    bcc=("archive@example.com",),
    shop_name="Test Shop",
    shop_url="https://shop.example.com",
)
KINDS = ("order_confirmation", "shipped", "pickup_ready", "return_received", "refund")


def order_state(
    order_id: str = "o-1",
    *,
    name: str = "Max Muster",
    email: str = "max@example.com",
    country: str = "DE",
    log: InMemoryOrderLog | None = None,
) -> tuple[OrderState, InMemoryOrderLog]:
    log = log or InMemoryOrderLog()
    address = PostalAddress(
        name=name, street="Hauptstr. 1", zip="10115", city="Berlin", country=country
    )
    order = sample_order(
        external_id=order_id,
        customer=Customer(id="1", email=email, name=name),
        billing_address=address,
        shipping_address=address,
    )
    events = receive_order(
        order, order_id=order_id, channel="shop", policy=POLICY, now=NOW, actor="test"
    )
    log.commit(order_id, events)
    return log.state(order_id), log


def job(kind: str, order_id: str = "o-1") -> MailJob:
    return MailJob(
        kind=kind,  # type: ignore[arg-type]
        order_id=order_id,
        key=f"mail/{order_id}/{kind}",
        carrier="dhl",
        tracking_number="00340434161234567890",
        lines=(StockLine("MUG-1", 2),),
        location="store-essen",
        pickup_code="482913",
        rma_id="rma-1",
    )


def parsed(message: EmailMessage) -> EmailMessage:
    """What the receiving side reads: the bytes on the wire, parsed again."""
    return message_from_bytes(message.as_bytes(), policy=policy.default)  # type: ignore[return-value]


def body(message: EmailMessage, kind: str) -> str:
    part = message.get_body(preferencelist=(kind,))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def test_confirmation_in_german_with_headers_and_both_parts() -> None:
    state, _ = order_state()
    message, envelope = build_message(job("order_confirmation"), state, SETTINGS, RENDERER, now=NOW)
    mail = parsed(message)
    assert envelope == ["max@example.com", "archive@example.com"]
    assert "Bcc" not in mail  # blind copies are envelope only
    assert str(mail["Subject"]) == "Ihre Bestellung o-1 bei Test Shop"
    assert str(mail["To"]) == "Max Muster <max@example.com>"
    assert str(mail["Reply-To"]) == "service@example.com"
    assert str(mail["Message-ID"]) == message_id_for("mail/o-1/order_confirmation", SETTINGS.sender)
    assert str(mail["Content-Language"]) == "de"
    assert "2 x Mug (MUG-1) à 12,50 EUR: 25,00 EUR" in body(mail, "plain")
    assert "<strong>29,90 EUR</strong>" in body(mail, "html")


def test_language_from_the_billing_country_and_config() -> None:
    state, _ = order_state(country="FR")
    message, _ = build_message(job("shipped"), state, SETTINGS, RENDERER, now=NOW)
    assert str(message["Subject"]) == "Your order o-1 is on its way"
    assert "Track your parcel: https://www.dhl.de/" in body(parsed(message), "plain")
    config = parse_config(
        '[notify]\nhost = "h"\nsender = "a@b.de"\nlanguages = { FR = "de" }\n'
        'default_language = "de"\n'
    )
    assert config.notify is not None
    french = mail_settings(config.notify, "shop")
    assert french.language_for("FR") == "de"
    assert french.language_for("US") == "de"
    assert mail_settings(config.notify, "shop").language_for("AT") == "de"


def test_every_kind_renders_in_both_languages() -> None:
    log = InMemoryOrderLog()
    for country in ("DE", "GB"):
        state, _ = order_state(f"o-{country}", country=country, log=log)
        for kind in KINDS:
            message, _ = build_message(
                job(kind, state.order_id), state, SETTINGS, RENDERER, now=NOW
            )
            mail = parsed(message)
            assert state.order.number in str(mail["Subject"])
            assert "Max Muster" in body(mail, "plain")


def test_pickup_mail_has_the_code_and_the_store_address() -> None:
    config = parse_config(
        """
[[location]]
name = "store-essen"
kind = "store"
capabilities = ["ship", "pickup"]
[location.address]
name = "Store Essen"
street = "Kettwiger Str. 1"
zip = "45127"
city = "Essen"
[notify]
host = "h"
sender = "a@b.de"
"""
    )
    assert config.notify is not None
    stores = {loc.name: loc.address for loc in config.location if loc.address is not None}
    state, _ = order_state()
    message, _ = build_message(
        job("pickup_ready"), state, mail_settings(config.notify, "shop", stores), RENDERER, now=NOW
    )
    text = body(parsed(message), "plain")
    assert "Ihr Abholcode: 482913" in text
    assert "Kettwiger Str. 1" in text
    assert "45127 Essen" in text


def test_invoice_mail_has_the_number_table_and_an_attachment_seam() -> None:
    state, _log = order_state()
    assert state.invoice is not None  # paid by card: invoiced at intake
    pdf = Attachment("invoice.pdf", "application/pdf", b"%PDF-1.7 fake")
    message, _ = build_message(
        job("invoice"), state, SETTINGS, RENDERER, now=NOW, attachments=[pdf]
    )
    mail = parsed(message)
    assert state.invoice.number in str(mail["Subject"])
    text = body(mail, "plain")
    assert "MwSt. 19 %" in text
    assert "Rechnungsbetrag: 29,90 EUR" in text
    attachments = list(mail.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["invoice.pdf"]
    assert attachments[0].get_content() == b"%PDF-1.7 fake"  # type: ignore[attr-defined]


def test_refund_mail_after_a_cancellation_names_the_credit_note() -> None:
    state, log = order_state()
    events = cancel_order(
        state, refund_id="r-1", policy=POLICY, reason="customer asked", now=NOW, actor="test"
    )
    [refund] = [j for j in plan_order_mails("o-1", state, events) if j.kind == "refund"]
    log.commit("o-1", events)
    after = log.state("o-1")
    assert refund.credit_note == 0
    assert refund.refund_amount == after.refunded
    message, _ = build_message(refund, after, SETTINGS, RENDERER, now=NOW)
    mail = parsed(message)
    assert str(mail["Subject"]).startswith(f"Gutschrift {after.credit_notes[0].number} ")
    assert "wir erstatten Ihnen 29,90 EUR" in body(mail, "plain")


def test_planner_keys_once_per_cause() -> None:
    order = sample_order(external_id="p-1")
    events = receive_order(
        order, order_id="p-1", channel="shop", policy=POLICY, now=NOW, actor="test"
    )
    jobs = plan_order_mails("p-1", None, events)
    assert [j.kind for j in jobs] == ["order_confirmation", "invoice"]
    assert [j.key for j in jobs] == ["mail/p-1/order_confirmation", "mail/p-1/invoice"]
    assert plan_order_mails("p-1", None, events) == jobs  # the same events, the same keys


def test_a_template_folder_overrides_one_file(tmp_path: Path) -> None:
    (tmp_path / "de").mkdir()
    (tmp_path / "de" / "shipped.txt").write_text(
        '{% extends "de/base.txt" %}{% block subject %}Paket {{ order_number }}{% endblock %}'
        "{% block content %}Nr. {{ tracking_number }}{% endblock %}"
    )
    state, _ = order_state()
    renderer = Renderer(tmp_path)
    message, _ = build_message(job("shipped"), state, SETTINGS, renderer, now=NOW)
    assert str(message["Subject"]) == "Paket o-1"
    assert body(parsed(message), "plain").startswith("Nr. 00340434161234567890\n")
    assert "Lieferadresse" in body(parsed(message), "html")  # the built-in HTML still
    (tmp_path / "de" / "shipped.txt").write_text("{% block subject %}{{ nope }}{% endblock %}")
    with pytest.raises(TemplateProblem, match="nope"):
        build_message(job("shipped"), state, SETTINGS, Renderer(tmp_path), now=NOW)


HOSTILE = [
    "Eve\r\nBcc: victim@evil.example",
    "Eve\nSubject: pwned",
    '<script>alert("x")</script> & Co',
    '"Quoted" <other@evil.example>, third@evil.example',
    "Zoë Ünïcödé \u2028 line separator",
    "=?utf-8?q?encoded=0D=0ABcc:_x@evil.example?=",
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_cannot_add_headers_or_markup(name: str) -> None:
    state, _ = order_state(name=name)
    for kind in KINDS:
        message, envelope = build_message(job(kind), state, SETTINGS, RENDERER, now=NOW)
        raw = message.as_bytes()
        mail = parsed(message)
        assert envelope == ["max@example.com", "archive@example.com"]
        assert "Bcc" not in mail
        assert len(mail.get_all("Subject") or []) == 1
        to = mail["To"]
        assert [a.addr_spec for a in to.addresses] == ["max@example.com"]
        html = body(mail, "html")
        assert "<script>" not in html
        for header_line in raw.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
            assert not header_line.lower().startswith((b"bcc:", b"cc:"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=st.text(min_size=1, max_size=60), other=st.text(min_size=1, max_size=60))
def test_any_name_one_recipient_escaped_and_no_other_customer(name: str, other: str) -> None:
    """Whatever the names, each mail goes to its own customer only, shows its own name
    escaped in HTML, and carries nothing of another order rendered just before."""
    log = InMemoryOrderLog()
    mine, _ = order_state("o-mine", name=f"A{name}", email="mine@example.com", log=log)
    theirs, _ = order_state("o-theirs", name=f"B{other}", email="theirs@example.com", log=log)
    build_message(job("shipped", "o-theirs"), theirs, SETTINGS, RENDERER, now=NOW)
    message, envelope = build_message(job("shipped", "o-mine"), mine, SETTINGS, RENDERER, now=NOW)
    raw = message.as_bytes()
    mail = parsed(message)
    assert envelope[0] == "mine@example.com"
    assert [a.addr_spec for a in mail["To"].addresses] == ["mine@example.com"]
    assert b"theirs@example.com" not in raw
    assert b"o-theirs" not in raw
    assert str(escape(header_text(f"A{name}"))) in body(mail, "html")
    assert header_text(f"A{name}") in body(mail, "plain")


@given(st.text(max_size=300))
def test_header_text_has_no_line_breaks_or_controls(value: str) -> None:
    text = header_text(value)
    assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in text)
    assert "\u2028" not in text
    assert "\u2029" not in text
    assert len(text) <= 200
    assert text == text.strip()


@settings(max_examples=60, deadline=None)
@given(
    st.text(min_size=1, max_size=40) | st.sampled_from(["=?utf-8?q?a=0D=0ABcc:_x?=", ",x", "<y>"])
)
def test_a_recipient_that_is_not_one_plain_address_is_refused(junk: str) -> None:
    address = f"max{junk}@example.com"
    state, _ = order_state()
    customer = msgspec.structs.replace(state.order.customer, email=address)
    state = msgspec.structs.replace(
        state, order=msgspec.structs.replace(state.order, customer=customer)
    )
    try:
        message, envelope = build_message(job("shipped"), state, SETTINGS, RENDERER, now=NOW)
    except InvalidRecipient:
        return
    # Accepted: then it is exactly that one address, on the envelope and in To.
    assert envelope[0] == address
    assert [a.addr_spec for a in parsed(message)["To"].addresses] == [address]


def test_message_id_is_stable_per_key_and_distinct_across_keys() -> None:
    one = message_id_for("mail/o-1/shipped/f-1", "Shop <shop@example.com>")
    assert one == message_id_for("mail/o-1/shipped/f-1", "shop@example.com")
    assert one != message_id_for("mail/o-1/shipped/f-2", "shop@example.com")
    assert one.endswith("@example.com>")
    assert Address(addr_spec=one.strip("<>"))


@settings(max_examples=40, deadline=None)
@given(
    cancels=st.integers(min_value=0, max_value=4),
    quantity=st.integers(min_value=1, max_value=5),
)
def test_planned_keys_are_stable_and_unique_over_an_order_life(cancels: int, quantity: int) -> None:
    """Replanning the same events gives the same keys; no two mails of one order share one
    (the outbox would refuse the whole append)."""
    from somsd.domain.cancellation import cancel_lines
    from somsd.domain.events import LineQuantity
    from somsd.domain.testing import sample_line

    log = InMemoryOrderLog()
    order = sample_order(external_id="h-1", lines=[sample_line(quantity=quantity)])
    events = receive_order(
        order, order_id="h-1", channel="shop", policy=POLICY, now=NOW, actor="test"
    )
    keys: list[str] = [j.key for j in plan_order_mails("h-1", None, events)]
    log.commit("h-1", events)
    for n in range(cancels):
        state = log.state("h-1")
        if state.lines[0].open <= 1:  # the last unit would be a whole-order cancellation
            break
        batch = cancel_lines(
            state,
            [LineQuantity(line=0, quantity=1)],
            refund_id=f"r-{n}",
            policy=POLICY,
            reason="asked",
            now=NOW,
            actor="test",
        )
        planned = plan_order_mails("h-1", state, batch)
        assert planned == plan_order_mails("h-1", state, batch)
        keys += [j.key for j in planned]
        log.commit("h-1", batch)
    assert len(keys) == len(set(keys))
    assert keys[:2] == ["mail/h-1/order_confirmation", "mail/h-1/invoice"]
    assert sum(k.startswith("mail/h-1/refund/") for k in keys) == min(cancels, quantity - 1)

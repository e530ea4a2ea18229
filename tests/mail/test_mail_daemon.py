"""Customer mail end to end: a real `somsd run` and a real SMTP server process on loopback.

Orders go in over the webhook route, fulfilments move through the store/warehouse routes,
and every assertion reads what the SMTP server stored: each mail exactly once (by Message-ID),
to the right customer, with the tracking link or the pickup code.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from actors.mailer import CONCURRENCY
from somsd.domain.order import Address, Customer
from somsd.domain.testing import sample_line
from somsd.mail import message_id_for
from tests.harness import running_daemon
from tests.mail.smtp import SmtpServer, html_of, mails_to, message_ids, text_of
from tests.orders.shop import accept, order_body, webhook_config

pytestmark = pytest.mark.slow

SENDER = "Test Shop <shop@example.com>"
LOCATIONS = """
[[location]]
name = "wh"
ships_to = ["DE"]

[[location]]
name = "store-essen"
kind = "store"
capabilities = ["pickup"]
ships_to = ["DE"]

[location.address]
name = "Store Essen"
street = "Kettwiger Str. 1"
zip = "45127"
city = "Essen"
"""


def customer(n: int | str, name: str = "Kunde") -> dict[str, Any]:
    address = Address(
        name=f"{name} {n}", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE"
    )
    return {
        "customer": Customer(id=str(n), email=f"kunde{n}@example.com", name=f"{name} {n}"),
        "billing_address": address,
        "shipping_address": address,
    }


async def eventually(what: str, check: Callable[[], Any], within: float = 30.0) -> Any:
    """Mails arrive after the 202, in another process; poll the Maildir, bounded."""
    with trio.fail_after(within):
        for _ in range(int(within / 0.05)):
            result = await check() if callable(check) else check
            if result:
                return result
            await trio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def stock(admin: httpx.AsyncClient, location: str, **units: int) -> None:
    response = await admin.put(
        f"/v1/locations/{location}/stock",
        json=[{"sku": sku.replace("_", "-"), "on_hand": n} for sku, n in units.items()],
    )
    assert response.status_code == 200, response.text


async def fulfilment_of(admin: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        detail = (await admin.get(f"/v1/orders/{order_id}")).json()
        fulfilments = detail["fulfilment"]["fulfilments"]
        return fulfilments[0] if fulfilments else None

    result: dict[str, Any] = await eventually(f"a fulfilment of {order_id}", found)
    return result


def config_for(tmp_path: Path, smtp: SmtpServer) -> Path:
    return webhook_config(tmp_path, LOCATIONS + smtp.notify_section())


def kinds_of(mails: list[EmailMessage]) -> list[str]:
    return sorted(str(m["Subject"]).split(" ")[0] for m in mails)


async def test_order_life_mails_each_once_with_link_and_code(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    async with running_daemon(config_for(tmp_path, smtp)) as daemon, daemon.admin() as admin:
        await stock(admin, "wh", MUG_1=10)
        await stock(admin, "store-essen", MUG_1=10)
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            shipped_id = await accept(shop, order_body("m-1", **customer(1)))
            pickup_id = await accept(
                shop,
                order_body(
                    "m-2",
                    shipping_method="pickup",
                    shipping_price="0.00",
                    pickup_location="store-essen",
                    **customer(2),
                ),
            )
        # Intake: confirmation and (card, paid) invoice for both.
        await eventually("4 mails", lambda: _count(smtp, 4))
        parcel = await fulfilment_of(admin, shipped_id)
        url = f"/v1/fulfillments/{parcel['id']}"
        ship = await admin.post(
            f"{url}/ship", json={"carrier": "dhl", "tracking_number": "00340434"}
        )
        assert ship.status_code == 200, ship.text
        pickup = await fulfilment_of(admin, pickup_id)
        url = f"/v1/fulfillments/{pickup['id']}"
        for step in ("accept", "pick", "ready"):
            assert (await admin.post(f"{url}/{step}")).status_code == 200
        await eventually("6 mails", lambda: _count(smtp, 6))
        await trio.sleep(1.5)  # a rescan or two of the outbox: nothing more is sent
        mails = smtp.mails()
        assert len(mails) == 6
        assert all(n == 1 for n in message_ids(mails).values())
        first, second = mails_to(mails, "kunde1@example.com"), mails_to(mails, "kunde2@example.com")
        assert kinds_of(first) == ["Ihre", "Ihre", "Rechnung"]
        assert kinds_of(second) == ["Ihre", "Ihre", "Rechnung"]
        [shipped] = [m for m in first if "unterwegs" in str(m["Subject"])]
        assert str(shipped["Message-ID"]) == message_id_for(
            f"mail/{shipped_id}/shipped/{parcel['id']}", SENDER
        )
        assert "verfolgen.html?piececode=00340434" in text_of(shipped)
        assert 'href="https://www.dhl.de/' in html_of(shipped)
        [ready] = [m for m in second if "Abholung" in str(m["Subject"])]
        code = (await admin.get(f"/v1/orders/{pickup_id}")).json()["fulfilment"]["fulfilments"][0][
            "pickup_code"
        ]
        assert code
        assert f"Ihr Abholcode: {code}" in text_of(ready)
        assert "Kettwiger Str. 1" in text_of(ready)
        for mail in first:
            assert "Kunde 2" not in mail.as_string()  # never another customer's data
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(daemon.metrics + "/metrics")).text
        assert 'somsd_mails_sent_total{kind="shipped"} 1.0' in metrics
        assert 'somsd_mails_sent_total{kind="order_confirmation"} 2.0' in metrics


async def _count(smtp: SmtpServer, n: int) -> bool:
    return len(smtp.mails()) >= n


async def test_smtp_down_mails_wait_and_go_when_it_is_back(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = config_for(tmp_path, smtp)
    await smtp.stop()
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            for n in range(3):
                await accept(shop, order_body(f"d-{n}", **customer(n)))
        await daemon.wait_log("outbox_delivery_retry")
        pending = (await admin.get("/v1/dead-letters")).json()
        assert pending["dead_letters"] == []
        await smtp.start()  # same port
        await eventually("6 mails after the outage", lambda: _count(smtp, 6))
        await trio.sleep(1.0)
        mails = smtp.mails()
        assert len(mails) == 6
        assert all(n == 1 for n in message_ids(mails).values())


async def test_permanent_rejection_is_a_dead_letter_with_the_answer_and_4xx_retries(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    smtp.faults(permanent=["kunde1@example.com"], temporary=["kunde2@example.com"])
    async with running_daemon(config_for(tmp_path, smtp)) as daemon, daemon.admin() as admin:
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            for n in (1, 2, 3):
                await accept(shop, order_body(f"r-{n}", **customer(n)))

        async def dead() -> list[dict[str, Any]]:
            entries: list[dict[str, Any]] = (
                await admin.get("/v1/dead-letters", params={"target": "notify/smtp"})
            ).json()["dead_letters"]
            return entries if len(entries) == 2 else []

        letters = await eventually("two dead letters", dead)
        assert all("550 5.1.1" in entry["last_error"] for entry in letters)
        assert all("kunde1@example.com" in entry["last_error"] for entry in letters)
        await eventually("customer 3's mails", lambda: _count(smtp, 2))
        assert mails_to(smtp.mails(), "kunde2@example.com") == []  # 451: still retrying
        smtp.faults()  # the relay takes customer 2 again
        await eventually("customer 2's mails", lambda: _count(smtp, 4), within=20)
        assert len(mails_to(smtp.mails(), "kunde2@example.com")) == 2
        assert mails_to(smtp.mails(), "kunde1@example.com") == []


async def test_sigkill_while_mails_are_sent_none_missing_none_twice(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """SMTP has no idempotency key: a kill between the relay's 250 and the commit of
    "delivered" sends that mail again. The copy has the same Message-ID, so 'none twice' is
    by Message-ID; what must never happen is a mail missing or two different ones."""
    config = config_for(tmp_path, smtp)
    smtp.faults(delay=0.02)  # each DATA takes a moment: kills land mid-conversation
    orders = 30
    async with running_daemon(config) as daemon:
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            for n in range(orders):
                await accept(shop, order_body(f"k-{n}", lines=[sample_line()], **customer(n)))
        await eventually("some mails", lambda: _count(smtp, 5))
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    async with running_daemon(config) as daemon:
        await eventually("some more mails", lambda: _count(smtp, 25))
        daemon.signal(signal.SIGKILL)
        await daemon.wait_exit()
    async with running_daemon(config):
        await eventually("every mail", lambda: _unique(smtp, 2 * orders), within=60)
    ids = message_ids(smtp.mails())
    assert len(ids) == 2 * orders  # confirmation + invoice per order, none missing
    duplicates = sum(n - 1 for n in ids.values())
    assert duplicates <= 2 * CONCURRENCY  # at most what was in flight at each kill


async def _unique(smtp: SmtpServer, n: int) -> bool:
    return len(message_ids(smtp.mails())) >= n


async def test_cancellation_sends_the_refund_mail_with_its_credit_note(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = webhook_config(tmp_path, smtp.notify_section())  # no location: nothing ships
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            order_id = await accept(shop, order_body("c-1", **customer(7)))
        await eventually("confirmation and invoice", lambda: _count(smtp, 2))
        cancel = await admin.post(f"/v1/orders/{order_id}/cancel", json={"reason": "asked"})
        assert cancel.status_code == 200, cancel.text
        await eventually("the refund mail", lambda: _count(smtp, 3))
        detail = (await admin.get(f"/v1/orders/{order_id}")).json()
        note = detail["credit_notes"][0]["number"]
        [refund] = [m for m in smtp.mails() if "Gutschrift" in str(m["Subject"])]
        assert str(refund["Subject"]) == f"Gutschrift {note} zu Ihrer Bestellung c-1"
        assert "wir erstatten Ihnen 29,90 EUR" in text_of(refund)
        assert str(refund["To"]) == "Kunde 7 <kunde7@example.com>"


async def test_a_reload_changes_the_sender_of_the_next_mails(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = webhook_config(tmp_path, smtp.notify_section())
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            await accept(shop, order_body("s-1", **customer(1)))
            await eventually("the first order's mails", lambda: _count(smtp, 2))
            config.write_text(config.read_text().replace(SENDER, "New Name <news@example.com>"))
            reload = await admin.post("/v1/admin/reload")
            assert reload.status_code == 200, reload.text
            assert "notify" in reload.json()["changed"]
            await accept(shop, order_body("s-2", **customer(2)))
            await eventually("the second order's mails", lambda: _count(smtp, 4))
        senders = {str(m["From"]) for m in mails_to(smtp.mails(), "kunde2@example.com")}
        assert senders == {"New Name <news@example.com>"}
        old = {str(m["From"]) for m in mails_to(smtp.mails(), "kunde1@example.com")}
        assert old == {SENDER}


async def test_shipped_by_hand_returned_and_refunded_each_send_their_mail(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    config = webhook_config(tmp_path, smtp.notify_section())
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            order_id = await accept(shop, order_body("ret-1", **customer(5)))
        url = f"/v1/orders/{order_id}"
        shipped = await admin.post(f"{url}/shipments", json={"lines": [{"line": 0, "quantity": 2}]})
        assert shipped.status_code == 200, shipped.text
        # Shipped by hand on the order (no fulfilment): still the customer's shipped mail.
        await eventually("the shipped mail", lambda: _count(smtp, 3))
        [parcel] = [m for m in smtp.mails() if "unterwegs" in str(m["Subject"])]
        assert "2 x Mug (MUG-1)" in text_of(parcel)
        requested = await admin.post(
            f"{url}/returns", json={"lines": [{"line": 0, "quantity": 1}], "reason": "too big"}
        )
        assert requested.status_code == 201, requested.text
        rma = requested.json()["returns"][-1]["rma_id"]
        assert (await admin.post(f"{url}/returns/{rma}/approve", json={})).status_code == 200
        received = await admin.post(
            f"{url}/returns/{rma}/receive",
            json={"lines": [{"line": 0, "quantity": 1, "condition": "resellable"}]},
        )
        assert received.status_code == 200, received.text
        await eventually("the return mail", lambda: _count(smtp, 4))
        [mail] = [m for m in smtp.mails() if "Rücksendung" in str(m["Subject"])]
        assert f"Ihre Rücksendung {rma} zur Bestellung ret-1" in text_of(mail)
        assert "1 x Mug (MUG-1)" in text_of(mail)
        refunded = await admin.post(f"{url}/returns/{rma}/refund", json={})
        assert refunded.status_code == 200, refunded.text
        await eventually("the refund mail", lambda: _count(smtp, 5))
        assert all(n == 1 for n in message_ids(smtp.mails()).values())


DOCUMENTS = """
[documents]
enabled = true
seller_name = "Muster Handel GmbH"
street = "Industriestr. 5"
zip = "20095"
city = "Hamburg"
vat_id = "DE123456789"
email = "rechnung@muster.example"
contact_name = "Max Muster"
phone = "+49 40 1234567"
iban = "DE02120300000000202051"
"""


async def test_invoice_mail_carries_the_rendered_invoice_pdf(
    tmp_path: Path, smtp: SmtpServer
) -> None:
    """With [documents] on, the invoice mail waits for the PDF and attaches exactly the bytes
    somsd stored and serves for that invoice."""
    config = webhook_config(tmp_path, LOCATIONS + smtp.notify_section() + DOCUMENTS)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await stock(admin, "wh", MUG_1=10)
        async with httpx.AsyncClient(base_url=daemon.api) as shop:
            order_id = await accept(shop, order_body("pdf-1", **customer(7)))
        await eventually("confirmation and invoice", lambda: _count(smtp, 2), within=90)
        mine = mails_to(smtp.mails(), "kunde7@example.com")
        [invoice_mail] = [m for m in mine if "Rechnung" in str(m["Subject"])]
        [pdf] = list(invoice_mail.iter_attachments())
        assert pdf.get_content_type() == "application/pdf"
        records = (await admin.get(f"/v1/orders/{order_id}/documents")).json()["documents"]
        [number] = [r["number"] for r in records if str(r["number"]).startswith("RE-")]
        assert pdf.get_filename() == f"{number}.pdf"
        served = await admin.get(f"/v1/documents/{number}", headers={"Accept": "application/pdf"})
        assert served.status_code == 200
        assert pdf.get_content() == served.content
        assert served.content.startswith(b"%PDF-")

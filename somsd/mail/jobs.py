"""Which customer mails a change causes: pure planners from events to `MailJob`s.

A `MailJob` names the mail and the facts it is about, not its text: the text is rendered when
the mail is delivered (`somsd.mail.render`), from the order as it stands then. Two reasons:
an invoice's number does not exist yet when the planner runs (the event store numbers it in the
transaction that commits the event, after the hook ran), and rendering templates is work the
order desk should not do on its hot path.

Every job has an idempotency key that names its cause, `mail/<order_id>/<kind>[/<ref>]`, and
the same cause always gives the same key; the outbox refuses a second row with one key, so a
mail is planned once, and its Message-ID is derived from the key (`render.message_id_for`), so
a mail sent twice after a crash is recognisably the same message.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import msgspec

from somsd.config import MailKind
from somsd.domain.atp import StockLine
from somsd.domain.events import (
    CreditNoteIssued,
    InvoiceIssued,
    LinesShipped,
    OrderEvent,
    OrderReceived,
    RefundRecorded,
    ReturnReceived,
)
from somsd.domain.state import OrderState
from somsd.projections.fulfilments import (
    FulfilmentEvent,
    FulfilmentReady,
    FulfilmentShipped,
    FulfilmentState,
)

# Shipments the fulfilment desk records on the order carry this actor; their mail is planned
# from the fulfilment's own events (with the carrier), so the order planner leaves them out.
FULFILMENT_ACTOR = "fulfilments"

__all__ = ["MailJob", "decode_job", "encode_job", "plan_fulfilment_mails", "plan_order_mails"]


class MailJob(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One customer mail to send: its kind, its order and the facts only its cause knows."""

    kind: MailKind
    order_id: str
    key: str
    fulfilment_id: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    lines: tuple[StockLine, ...] = ()  # what the parcel or the pickup holds
    location: str | None = None  # the pickup store
    pickup_code: str | None = None
    rma_id: str | None = None
    refund_id: str | None = None
    refund_amount: Decimal | None = None
    credit_note: int | None = None  # index into OrderState.credit_notes


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(MailJob)


def encode_job(job: MailJob) -> bytes:
    return _encoder.encode(job)


def decode_job(payload: bytes) -> MailJob:
    return _decoder.decode(payload)


def _key(order_id: str, kind: str, ref: str = "") -> str:
    return f"mail/{order_id}/{kind}/{ref}" if ref else f"mail/{order_id}/{kind}"


def plan_order_mails(
    order_id: str, before: OrderState | None, events: Sequence[OrderEvent]
) -> list[MailJob]:
    """The mails the order events about to be committed cause, in event order.

    Confirmation on `OrderReceived`, the invoice on `InvoiceIssued`, "shipped" for a shipment
    recorded on the order by someone other than the fulfilment desk (whose shipments are
    mailed from the fulfilment's events, with their carrier), one mail per received
    return, and for money going back one mail per `RefundRecorded` (naming the credit note of
    the same change, if any), or per credit note when nothing is paid back (an unpaid invoice
    order whose receivable shrinks).
    """
    jobs: list[MailJob] = []
    notes = len(before.credit_notes) if before is not None else 0
    batch_notes: list[int] = []
    for event in events:
        if isinstance(event, CreditNoteIssued):
            batch_notes.append(notes)
            notes += 1
    refunds = [e for e in events if isinstance(e, RefundRecorded)]
    credited = iter(batch_notes)
    for event in events:
        match event:
            case OrderReceived():
                jobs.append(
                    MailJob(
                        kind="order_confirmation",
                        order_id=order_id,
                        key=_key(order_id, "order_confirmation"),
                    )
                )
            case InvoiceIssued():
                jobs.append(
                    MailJob(kind="invoice", order_id=order_id, key=_key(order_id, "invoice"))
                )
            case LinesShipped(shipment_id=shipment_id, actor=actor) if actor != FULFILMENT_ACTOR:
                # Recorded on the order directly (an operator, the ERP): no carrier known.
                names = before.order.lines if before is not None else ()
                jobs.append(
                    MailJob(
                        kind="shipped",
                        order_id=order_id,
                        key=_key(order_id, "shipped", shipment_id),
                        tracking_number=event.tracking_number or None,
                        lines=tuple(
                            StockLine(names[q.line].sku, q.quantity)
                            for q in event.lines
                            if q.line < len(names)
                        ),
                    )
                )
            case ReturnReceived(rma_id=rma_id):
                jobs.append(
                    MailJob(
                        kind="return_received",
                        order_id=order_id,
                        key=_key(order_id, "return_received", rma_id),
                        rma_id=rma_id,
                    )
                )
            case RefundRecorded(refund_id=refund_id, amount=amount):
                jobs.append(
                    MailJob(
                        kind="refund",
                        order_id=order_id,
                        key=_key(order_id, "refund", refund_id),
                        refund_id=refund_id,
                        refund_amount=amount,
                        credit_note=next(credited, None),
                    )
                )
    if not refunds:
        for index in batch_notes:
            jobs.append(
                MailJob(
                    kind="refund",
                    order_id=order_id,
                    key=_key(order_id, "refund", f"credit-note-{index}"),
                    credit_note=index,
                )
            )
    return jobs


def plan_fulfilment_mails(
    fulfilment: FulfilmentState, events: Sequence[FulfilmentEvent]
) -> list[MailJob]:
    """Shipped (with carrier and tracking number) for a parcel to the customer, ready for
    pickup (with the code and the store) for a click & collect. Transfers between locations
    are somsd's business, not the customer's: they cause no mail."""
    jobs: list[MailJob] = []
    order_id = fulfilment.order_id
    for event in events:
        match event:
            case FulfilmentShipped(carrier=carrier, tracking_number=tracking) if (
                fulfilment.kind == "ship"
            ):
                jobs.append(
                    MailJob(
                        kind="shipped",
                        order_id=order_id,
                        key=_key(order_id, "shipped", fulfilment.fulfilment_id),
                        fulfilment_id=fulfilment.fulfilment_id,
                        carrier=carrier or None,
                        tracking_number=tracking or None,
                        lines=fulfilment.lines,
                    )
                )
            case FulfilmentReady(pickup_code=code) if fulfilment.kind == "pickup":
                jobs.append(
                    MailJob(
                        kind="pickup_ready",
                        order_id=order_id,
                        key=_key(order_id, "pickup_ready", fulfilment.fulfilment_id),
                        fulfilment_id=fulfilment.fulfilment_id,
                        location=fulfilment.location,
                        pickup_code=code,
                        lines=fulfilment.lines,
                    )
                )
    return jobs

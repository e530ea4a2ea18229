"""Customer mails as bytes: a `MailJob` and the order it is about, through Jinja2 templates.

- **Templates.** Per kind and language a plain-text template (`de/shipped.txt`, whose
  `subject` block is the subject) and an HTML one (`de/shipped.html`); both extend a layout.
  A folder named by `notify.template_dir` is searched first, so an operator overrides one
  file by writing one of the same name. Templates run in Jinja's sandbox with
  `StrictUndefined`: a misspelt variable in an override is an error, not an empty gap.
  HTML is autoescaped; plain text is not (it is not markup), and headers never come from a
  template without `header_text`.
- **Headers cannot be injected.** Every header value that contains data (subject, display
  names) goes through `header_text`, which turns every control character, CR and LF among
  them, into a space, and breaks up RFC 2047 encoded words (which the email package would
  decode back into CR LF); addresses are built as `email.headerregistry.Address` objects, which
  quote display names, and a recipient address that is not plainly one address is refused
  (`InvalidRecipient`, which the mailer dead-letters) rather than sent somewhere else.
- **One customer per mail.** The context is built from one `OrderState` and the job planned
  for that same order; nothing else is in reach of a template.
- **Message-ID** is derived from the job's idempotency key (`message_id_for`), so a mail the
  outbox delivers twice (after a crash between SMTP's 250 and the commit of "delivered") is
  recognisably the same message to the customer's mail client and to us.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from jinja2 import ChoiceLoader, FileSystemLoader, StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from somsd.config import MailKind, MailLanguage, NotifyConfig, StoreAddress
from somsd.domain.documents import InvoiceDocument
from somsd.domain.money import minor_unit_exponent
from somsd.domain.order import Address as PostalAddress
from somsd.domain.state import OrderState
from somsd.mail.jobs import MailJob

__all__ = [
    "DEFAULT_LANGUAGES",
    "DEFAULT_TRACKING_URLS",
    "Attachment",
    "InvalidRecipient",
    "MailSettings",
    "RenderedMail",
    "Renderer",
    "TemplateProblem",
    "build_message",
    "header_text",
    "mail_settings",
    "message_id_for",
]

TEMPLATES: Final = Path(__file__).parent / "templates"
# Billing countries whose customers read German; every other one gets `default_language`.
DEFAULT_LANGUAGES: Final[Mapping[str, MailLanguage]] = {
    "DE": "de",
    "AT": "de",
    "CH": "de",
    "LI": "de",
}
# Carriers' public tracking pages; `notify.tracking_urls` adds others or replaces these.
DEFAULT_TRACKING_URLS: Final[Mapping[str, str]] = {
    "dhl": "https://www.dhl.de/de/privatkunden/pakete-empfangen/verfolgen.html?piececode={tracking_number}",
}
SUBJECT_LIMIT: Final = 200  # characters; RFC 5322 has no limit, mail clients cut at ~80
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# One address in RFC 5322's dot-atom form, ASCII only: nothing a header parser could read as a
# second address or a display name. Non-ASCII addresses would need SMTPUTF8, which somsd does
# not negotiate; such a mail is refused here with a reason rather than mangled on the way.
_PLAIN_ADDRESS = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


class InvalidRecipient(ValueError):
    """The order's e-mail address cannot be written into a header as exactly one address."""


class TemplateProblem(ValueError):
    """A template is missing or broken (an override in `notify.template_dir`, usually)."""


@dataclass(frozen=True)
class Attachment:
    """A file to attach (the invoice PDF, once documents exist): name, MIME type, bytes."""

    filename: str
    content_type: str  # "application/pdf"
    data: bytes


@dataclass(frozen=True)
class MailSettings:
    """`[notify]` as it applies to one channel's customers."""

    sender: str
    reply_to: str | None = None
    bcc: tuple[str, ...] = ()
    shop_name: str = ""
    shop_url: str | None = None
    tracking_urls: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TRACKING_URLS))
    default_language: MailLanguage = "en"
    languages: Mapping[str, MailLanguage] = field(default_factory=lambda: dict(DEFAULT_LANGUAGES))
    mails: frozenset[MailKind] = frozenset()
    stores: Mapping[str, StoreAddress] = field(default_factory=dict)  # pickup store addresses

    def language_for(self, country: str) -> MailLanguage:
        return self.languages.get(country.upper(), self.default_language)


def mail_settings(
    notify: NotifyConfig, channel: str, stores: Mapping[str, StoreAddress] | None = None
) -> MailSettings:
    """The settings for `channel`'s customers: its `[[notify.channel]]` over `[notify]`."""
    own = next((c for c in notify.channel if c.name == channel), None)
    mails = notify.mails if own is None or own.mails is None else own.mails
    return MailSettings(
        sender=(own.sender if own and own.sender else notify.sender),
        reply_to=(own.reply_to if own and own.reply_to else notify.reply_to),
        bcc=notify.bcc,
        shop_name=(own.shop_name if own and own.shop_name else notify.shop_name),
        shop_url=(own.shop_url if own and own.shop_url else notify.shop_url),
        tracking_urls={**DEFAULT_TRACKING_URLS, **notify.tracking_urls},
        default_language=notify.default_language,
        languages={**DEFAULT_LANGUAGES, **{k.upper(): v for k, v in notify.languages.items()}},
        mails=frozenset(mails),
        stores=dict(stores or {}),
    )


def header_text(value: str, limit: int = SUBJECT_LIMIT) -> str:
    """`value` safe for a header: control characters (CR, LF among them) become one space,
    and "=?" is broken up. The latter because Python's email package decodes RFC 2047
    encoded words in a value it is given (`=?utf-8?q?a=0D=0ABcc:_x?=` is "a\r\nBcc: x") and
    then writes the decoded CR LF out raw: a header injection past any CR/LF filter."""
    text = " ".join(_CONTROL.sub(" ", value).split()).replace("=?", "= ?")
    return text[:limit].rstrip()


def message_id_for(key: str, sender: str) -> str:
    """The Message-ID of the mail with idempotency key `key`, in the sender's domain."""
    addr = getaddresses([sender])[0][1]
    domain = addr.rpartition("@")[2] or "somsd.invalid"
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{digest}.somsd@{domain}>"


def _address(name: str, addr: str) -> Address:
    if not _PLAIN_ADDRESS.match(addr) or "=?" in addr:  # no encoded word, see header_text
        raise InvalidRecipient(
            f'"{header_text(addr, 80)}" is not a single plain e-mail address (somsd sends to '
            "ASCII addresses only)"
        )
    local, _, domain = addr.rpartition("@")
    try:
        return Address(display_name=header_text(name, 100), username=local, domain=domain)
    except (ValueError, IndexError) as exc:
        raise InvalidRecipient(f'"{header_text(addr, 80)}" is not usable: {exc}') from None


def _configured(value: str) -> Address:
    """A configured address ("Shop <shop@example.com>"; checked by the config already)."""
    name, addr = getaddresses([value])[0]
    return _address(name, addr)


# -- the context templates see ------------------------------------------------------------


def format_money(amount: Decimal, currency: str, language: str) -> str:
    """ "1.234,50 EUR" in German, "1,234.50 EUR" in English."""
    places = minor_unit_exponent(currency)
    text = f"{amount:,.{places}f}"
    if language == "de":
        text = text.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return f"{text} {currency}"


def _postal(address: PostalAddress | StoreAddress) -> list[str]:
    lines = [address.name]
    company = getattr(address, "company", None)
    if company:
        lines.append(company)
    lines += [address.street, f"{address.zip} {address.city}", address.country]
    return lines


def _document(document: InvoiceDocument, money: Any) -> dict[str, Any]:
    return {
        "lines": [
            {
                "sku": line.sku,
                "name": line.name,
                "shipping": line.line is None,
                "quantity": line.quantity,
                "unit_price": money(line.unit_price),
                "tax_rate": f"{line.tax_rate.normalize():f}",
                "net": money(line.net),
                "tax": money(line.tax),
                "gross": money(line.gross),
            }
            for line in document.lines
        ],
        "taxes": [
            {
                "rate": f"{t.rate.normalize():f}",
                "net": money(t.net),
                "tax": money(t.tax),
                "gross": money(t.gross),
            }
            for t in document.taxes
        ],
        "net": money(document.net),
        "tax": money(document.tax),
        "gross": money(document.gross),
    }


def _context(job: MailJob, state: OrderState, settings: MailSettings) -> dict[str, Any]:
    order = state.order
    language = settings.language_for(order.billing_address.country)

    def money(amount: Decimal) -> str:
        return format_money(amount, order.currency, language)

    names = {line.sku: line.name for line in order.lines}
    context: dict[str, Any] = {
        "lang": language,
        "shop_name": settings.shop_name,
        "shop_url": settings.shop_url,
        "order_number": order.number,
        "placed_at": order.placed_at.date().isoformat(),
        "customer_name": header_text(order.customer.name),  # one line, even in a body
        "lines": [
            {
                "sku": line.sku,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": money(line.unit_price),
                "total": money(line.unit_price * line.quantity),
            }
            for line in order.lines
        ],
        "shipping_method": order.shipping.method,
        "shipping_price": money(order.shipping.price),
        "total": money(order.payment.amount),
        "payment_method": order.payment.method,
        "billing_address": _postal(order.billing_address),
        "shipping_address": _postal(order.shipping_address),
        "items": [
            {"sku": line.sku, "name": names.get(line.sku, line.sku), "quantity": line.quantity}
            for line in job.lines
        ],
    }
    match job.kind:
        case "invoice":
            if state.invoice is None:
                raise TemplateProblem(f"order {state.order_id} has no invoice yet")
            context["invoice_number"] = state.invoice.number
            context["invoice_date"] = state.invoice.issue_date.isoformat()
            context["invoice"] = _document(state.invoice.document, money)
        case "shipped":
            carrier = job.carrier or ""
            context["carrier"] = carrier
            context["tracking_number"] = job.tracking_number or ""
            template = settings.tracking_urls.get(carrier.lower())
            context["tracking_url"] = (
                template.replace("{tracking_number}", quote(job.tracking_number, safe=""))
                if template and job.tracking_number
                else None
            )
        case "pickup_ready":
            store = settings.stores.get(job.location or "")
            context["pickup_code"] = job.pickup_code or ""
            context["store_name"] = store.name if store is not None else (job.location or "")
            context["store_address"] = _postal(store) if store is not None else []
        case "return_received":
            returned = next((r for r in state.returns if r.rma_id == job.rma_id), None)
            received = returned.received if returned is not None else ()
            context["rma_id"] = job.rma_id or ""
            context["items"] = [
                {
                    "sku": order.lines[r.line].sku,
                    "name": order.lines[r.line].name,
                    "quantity": r.quantity,
                }
                for r in received
                if 0 <= r.line < len(order.lines)
            ]
        case "refund":
            note = (
                state.credit_notes[job.credit_note]
                if job.credit_note is not None and job.credit_note < len(state.credit_notes)
                else None
            )
            context["refund_amount"] = (
                money(job.refund_amount) if job.refund_amount is not None else None
            )
            context["credit_note_number"] = note.number if note is not None else None
            context["credit_note"] = _document(note.document, money) if note is not None else None
        case "order_confirmation":
            pass
    return context


# -- rendering ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    text: str
    html: str
    language: MailLanguage


class Renderer:
    """The template environment: built-in templates, under an override folder if given."""

    def __init__(self, template_dir: str | Path | None = None) -> None:
        loaders = [FileSystemLoader(str(TEMPLATES))]
        if template_dir is not None:
            loaders.insert(0, FileSystemLoader(str(template_dir)))
        self.template_dir = template_dir
        self.env = SandboxedEnvironment(
            loader=ChoiceLoader(loaders),
            autoescape=lambda name: name is not None and name.endswith(".html"),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )

    def render(self, job: MailJob, state: OrderState, settings: MailSettings) -> RenderedMail:
        context = _context(job, state, settings)
        language: MailLanguage = context["lang"]
        try:
            text_template = self.env.get_template(f"{language}/{job.kind}.txt")
            block = text_template.blocks.get("subject")
            if block is None:
                raise TemplateProblem(f"{language}/{job.kind}.txt has no subject block")
            subject = header_text("".join(block(text_template.new_context(context))))
            context["subject"] = subject
            text = text_template.render(context)
            html = self.env.get_template(f"{language}/{job.kind}.html").render(context)
        except TemplateError as exc:
            raise TemplateProblem(
                f"template {language}/{job.kind}: {type(exc).__name__}: {exc}"
            ) from exc
        return RenderedMail(subject=subject, text=text, html=html, language=language)


def build_message(
    job: MailJob,
    state: OrderState,
    settings: MailSettings,
    renderer: Renderer,
    *,
    now: datetime,
    attachments: Sequence[Attachment] = (),
) -> tuple[EmailMessage, list[str]]:
    """The mail for `job` and its envelope recipients (the customer, then the BCCs).

    `attachments` is the seam for documents: the invoice PDF goes here once it exists.
    """
    if job.order_id != state.order_id:
        raise ValueError(f"mail job for order {job.order_id} given order {state.order_id}")
    customer = state.order.customer
    recipient = _address(customer.name, customer.email.strip())
    rendered = renderer.render(job, state, settings)
    message = EmailMessage(policy=SMTP)
    message["From"] = _configured(settings.sender)
    message["To"] = recipient
    if settings.reply_to:
        message["Reply-To"] = _configured(settings.reply_to)
    message["Subject"] = rendered.subject
    message["Date"] = format_datetime(now)
    message["Message-ID"] = message_id_for(job.key, settings.sender)
    # RFC 3834: an automatic message; vacation responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    message["Content-Language"] = rendered.language  # after set_content, which clears it
    for attachment in attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        message.add_attachment(
            attachment.data,
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=header_text(attachment.filename, 100),
        )
    envelope = [recipient.addr_spec]
    envelope += [_configured(bcc).addr_spec for bcc in settings.bcc]
    return message, envelope

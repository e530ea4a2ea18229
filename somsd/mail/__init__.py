"""Customer e-mail, pure: which mails a change causes (`jobs`) and their bytes (`render`).

No I/O but reading templates: the SMTP conversation is `adapters.smtp`, the outbox deliverer
that joins the two is `actors.mailer`.
"""

from somsd.mail.jobs import MailJob, decode_job, encode_job, plan_fulfilment_mails, plan_order_mails
from somsd.mail.render import (
    Attachment,
    InvalidRecipient,
    MailSettings,
    Renderer,
    TemplateProblem,
    build_message,
    header_text,
    mail_settings,
    message_id_for,
)

__all__ = [
    "Attachment",
    "InvalidRecipient",
    "MailJob",
    "MailSettings",
    "Renderer",
    "TemplateProblem",
    "build_message",
    "decode_job",
    "encode_job",
    "header_text",
    "mail_settings",
    "message_id_for",
    "plan_fulfilment_mails",
    "plan_order_mails",
]

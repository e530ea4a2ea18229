"""SMTP client for customer mail: the standard library's `smtplib` on a worker thread.

Why `smtplib` in `trio.to_thread.run_sync` and not an async client: aiosmtplib, the usual
async one, is asyncio-only (it awaits asyncio streams and futures, which trio cannot run), and
an SMTP client of our own on trio streams would re-implement ESMTP, STARTTLS, AUTH and
dot-stuffing that `smtplib` has done right for decades. One mail is a handful of round trips;
a worker thread per conversation costs far less than that, and the dispatcher's per-target
limit (four at once) bounds the threads. The thread is never abandoned: a cancelled delivery
waits for its conversation to end, which `timeout` bounds, so a mail is never half-sent by
us walking away.

Connections are kept open between mails (`SmtpPool`, a few idle ones): most of a mail's cost
on a relay nearby is the connect, STARTTLS and AUTH, not the message. An idle connection is
checked with NOOP before reuse when it has been idle for a while, so a relay that dropped it
costs a fresh connection, not a failed mail.

What a failure means (`adapters.errors`): an SMTP 4xx reply, a refused or dropped connection,
a timeout or a TLS failure is transient (the outbox retries with backoff); a 5xx reply to the
mail itself (sender, recipient or content refused) is permanent and the entry is dead-lettered
with the server's answer. A refused AUTH is transient although its code is 5xx: it is our
configuration, not the mail, and every mail would fail alike; once the password file is fixed
the retries go through without an operator replaying dead letters.
"""

from __future__ import annotations

import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, Literal

import trio

from adapters.errors import PermanentUpstreamError, TransientUpstreamError, UpstreamError
from somsd.secrets import Secret

__all__ = [
    "SmtpPool",
    "SmtpSettings",
    "check_connection",
    "smtp_error",
]

Security = Literal["starttls", "tls", "none"]
# Idle connections kept per pool: the dispatcher runs four deliveries per target at once.
MAX_IDLE: Final = 4
# A connection idle longer than this is checked with NOOP before it carries a mail; relays
# drop idle sessions after minutes, and a check is one round trip.
CHECK_AFTER_IDLE: Final = 5.0
# Idle connections older than this are closed rather than checked.
MAX_IDLE_SECONDS: Final = 60.0


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    security: Security = "starttls"
    user: str | None = None
    password: Secret | None = None
    timeout: float = 30.0
    ca_file: str | None = None
    system: str = "notify/smtp"  # names the upstream in errors and metrics


def _tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=settings.ca_file)


def _open(settings: SmtpSettings) -> smtplib.SMTP:
    """Connect, greet, STARTTLS and AUTH as configured; raises smtplib/OS errors."""
    smtp: smtplib.SMTP
    if settings.security == "tls":
        smtp = smtplib.SMTP_SSL(
            settings.host, settings.port, timeout=settings.timeout, context=_tls_context(settings)
        )
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    try:
        smtp.ehlo()
        if settings.security == "starttls":
            _starttls(smtp, settings)
        if settings.user is not None and settings.password is not None:
            smtp.login(settings.user, settings.password.reveal())
    except BaseException:
        _close(smtp)
        raise
    return smtp


def _starttls(smtp: smtplib.SMTP, settings: SmtpSettings) -> None:
    if not smtp.has_extn("starttls"):
        raise TransientUpstreamError(
            settings.system,
            f"{settings.system}: {settings.host}:{settings.port} does not offer STARTTLS; "
            'set notify.security = "tls" or "none" if that is intended',
            operation="STARTTLS",
        )
    smtp.starttls(context=_tls_context(settings))
    smtp.ehlo()


def _close(smtp: smtplib.SMTP) -> None:
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()


def _answer(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:500]


def smtp_error(exc: BaseException, settings: SmtpSettings, stage: str) -> UpstreamError:
    """The outbox's kind of error for an smtplib/socket failure (see the module docstring)."""
    system = settings.system
    where = f"{system}: {settings.host}:{settings.port}"
    match exc:
        case UpstreamError():
            return exc
        case smtplib.SMTPRecipientsRefused(recipients=refused):
            answers = {rcpt: (code, msg) for rcpt, (code, msg) in refused.items()}
            permanent = all(code >= 500 for code, _ in answers.values())
            text = "; ".join(f"{rcpt}: {_answer(c, m)}" for rcpt, (c, m) in answers.items())
            kind = PermanentUpstreamError if permanent else TransientUpstreamError
            return kind(system, f"{where} refused the recipient ({text})", operation="RCPT TO")
        case smtplib.SMTPAuthenticationError(smtp_code=code, smtp_error=message):
            return TransientUpstreamError(
                system,
                f"{where} refused the login ({_answer(code, message)}); check notify.user and "
                "notify.password_file",
                operation="AUTH",
            )
        case smtplib.SMTPResponseException(smtp_code=code, smtp_error=message):
            # SMTPSenderRefused (MAIL FROM), SMTPDataError (DATA), SMTPHeloError, ...
            answer = _answer(code, message)
            if 400 <= code < 500 or code < 200:
                return TransientUpstreamError(
                    system, f"{where} answered {answer} on {stage}; will retry", operation=stage
                )
            if stage in ("connect", "EHLO"):
                return TransientUpstreamError(
                    system, f"{where} refused the session: {answer}", operation=stage
                )
            return PermanentUpstreamError(
                system, f"{where} refused the mail: {answer}", operation=stage
            )
        case smtplib.SMTPNotSupportedError():
            return TransientUpstreamError(
                system, f"{where} does not support what we asked ({exc})", operation=stage
            )
        case smtplib.SMTPServerDisconnected():
            return TransientUpstreamError(
                system, f"{where} closed the connection during {stage}", operation=stage
            )
        case ssl.SSLCertVerificationError():
            return TransientUpstreamError(
                system,
                f"{where}: TLS certificate not trusted ({exc.verify_message}); set "
                "notify.ca_file to the relay's CA",
                operation=stage,
            )
        case ssl.SSLError():
            return TransientUpstreamError(
                system, f"{where}: TLS failed ({exc.reason or exc})", operation=stage
            )
        case TimeoutError() | socket.timeout():
            return TransientUpstreamError(
                system, f"{where} timed out during {stage}", operation=stage
            )
        case ConnectionRefusedError():
            return TransientUpstreamError(
                system, f"{where} refused the connection; is the relay up?", operation=stage
            )
        case OSError():
            return TransientUpstreamError(
                system, f"{where}: network error during {stage} ({exc})", operation=stage
            )
        case smtplib.SMTPException():
            return TransientUpstreamError(system, f"{where}: {exc}", operation=stage)
        case _:
            return PermanentUpstreamError(
                system, f"{where}: {type(exc).__name__} during {stage}", operation=stage
            )


class SmtpPool:
    """Sends mails over a few kept-open connections to one relay (see the module docstring)."""

    def __init__(self, settings: SmtpSettings, *, max_idle: int = MAX_IDLE) -> None:
        self.settings = settings
        self.max_idle = max_idle
        self._idle: list[tuple[smtplib.SMTP, float]] = []
        self._lock = threading.Lock()
        self.opened = 0  # connections opened so far (tests, the bench)

    def _take(self) -> smtplib.SMTP:
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                smtp, since = self._idle.pop()
            idle = now - since
            if idle > MAX_IDLE_SECONDS:
                _close(smtp)
                continue
            if idle > CHECK_AFTER_IDLE:
                try:
                    if smtp.noop()[0] != 250:
                        raise smtplib.SMTPServerDisconnected("NOOP failed")
                except (smtplib.SMTPException, OSError):
                    smtp.close()
                    continue
            return smtp
        self.opened += 1
        return _open(self.settings)

    def _give_back(self, smtp: smtplib.SMTP) -> None:
        with self._lock:
            if len(self._idle) < self.max_idle:
                self._idle.append((smtp, time.monotonic()))
                return
        _close(smtp)

    def send_sync(self, sender: str, recipients: Sequence[str], data: bytes) -> dict[str, str]:
        """Send one mail; the recipients refused while others were taken (BCC) come back."""
        stage = "connect"
        try:
            smtp = self._take()
        except BaseException as exc:
            raise smtp_error(exc, self.settings, stage) from exc
        try:
            stage = "MAIL FROM"
            refused = smtp.sendmail(sender, list(recipients), data)
        except smtplib.SMTPRecipientsRefused as exc:
            # Nothing was sent; the session is still good for the next mail after RSET.
            self._reset_or_close(smtp)
            raise smtp_error(exc, self.settings, "RCPT TO") from exc
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            self._reset_or_close(smtp)
            stage = "MAIL FROM" if isinstance(exc, smtplib.SMTPSenderRefused) else "DATA"
            raise smtp_error(exc, self.settings, stage) from exc
        except BaseException as exc:
            smtp.close()
            raise smtp_error(exc, self.settings, "DATA") from exc
        self._give_back(smtp)
        return {rcpt: _answer(code, msg) for rcpt, (code, msg) in refused.items()}

    def _reset_or_close(self, smtp: smtplib.SMTP) -> None:
        try:
            smtp.rset()
        except (smtplib.SMTPException, OSError):
            smtp.close()
            return
        self._give_back(smtp)

    async def send(self, sender: str, recipients: Sequence[str], data: bytes) -> dict[str, str]:
        """`send_sync` on a worker thread; see the module docstring for why."""
        return await trio.to_thread.run_sync(partial(self.send_sync, sender, recipients, data))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for smtp, _ in idle:
            _close(smtp)


def check_connection_sync(settings: SmtpSettings) -> list[str]:
    """Connect, STARTTLS and AUTH as configured, then QUIT without sending; the steps done."""
    done: list[str] = []
    stage = "connect"
    try:
        smtp = (
            smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=_tls_context(settings),
            )
            if settings.security == "tls"
            else smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        )
        done.append("connected" + (" (TLS)" if settings.security == "tls" else ""))
        try:
            stage = "EHLO"
            smtp.ehlo()
            if settings.security == "starttls":
                stage = "STARTTLS"
                _starttls(smtp, settings)
                done.append("STARTTLS")
            if settings.user is not None and settings.password is not None:
                stage = "AUTH"
                smtp.login(settings.user, settings.password.reveal())
                done.append(f"AUTH as {settings.user}")
            stage = "NOOP"
            smtp.noop()
        finally:
            _close(smtp)
    except BaseException as exc:
        raise smtp_error(exc, settings, stage) from exc
    return done


async def check_connection(settings: SmtpSettings) -> list[str]:
    return await trio.to_thread.run_sync(partial(check_connection_sync, settings))

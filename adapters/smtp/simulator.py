"""A real SMTP server on loopback for tests and the demo: aiosmtpd, mails into a Maildir.

`python -m adapters.smtp --dir DIR` listens on 127.0.0.1 (port 0 unless `--port`), prints one
JSON line `{"event": "smtp_listening", "port": N, ...}` on stdout and writes the same to
`DIR/server.json`, and stores every accepted mail in the Maildir `DIR/mail` with two headers
put in front: `X-Envelope-From` and `X-Envelope-To`, so a reader sees the BCCs too.

- `--security starttls` (STARTTLS offered and required before MAIL) or `tls` (implicit TLS);
  the certificate is self-signed, made at start for `localhost` and 127.0.0.1 with
  `cryptography`, written to `DIR/cert.pem`: clients trust it with `notify.ca_file`.
- `--user U --password P`: AUTH PLAIN/LOGIN required before MAIL.
- Faults, re-read from `DIR/faults.json` on each command (write it at any time):
  `{"temporary": ["a@x"], "permanent": ["b@y"], "down": false, "delay": 0.0}` answers RCPT TO
  for those recipients with 451 or 550, every MAIL FROM with 421 while `down`, and waits
  `delay` seconds before answering DATA. Stopping the process is the other way to be down.

Not a relay: nothing is ever forwarded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import mailbox
import signal
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["FaultFile", "MaildirHandler", "main", "make_certificate", "read_mails"]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost/127.0.0.1: (cert.pem, key.pem) in `directory`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class FaultFile:
    """`faults.json`, re-read when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self.faults: dict[str, Any] = {}

    def current(self) -> dict[str, Any]:
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self.faults, self._mtime = {}, None
            return self.faults
        if mtime != self._mtime:
            try:
                self.faults = json.loads(self.path.read_text() or "{}")
                self._mtime = mtime
            except (json.JSONDecodeError, OSError):
                pass  # half-written: keep the last good one, read again next time
        return self.faults


class MaildirHandler:
    def __init__(self, directory: Path, faults: FaultFile) -> None:
        self.maildir = mailbox.Maildir(directory, create=True)
        self.faults = faults
        self.received = 0

    async def handle_MAIL(  # aiosmtpd's hook names
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.faults.current().get("down"):
            return "421 4.3.2 Service not available (simulated outage)"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        faults = self.faults.current()
        if address.lower() in {a.lower() for a in faults.get("permanent", ())}:
            return f"550 5.1.1 <{address}>: mailbox unavailable (simulated)"
        if address.lower() in {a.lower() for a in faults.get("temporary", ())}:
            return f"451 4.3.0 <{address}>: try again later (simulated)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        delay = float(self.faults.current().get("delay", 0) or 0)
        if delay > 0:
            await asyncio.sleep(min(delay, 60.0))
        content = envelope.original_content or b""
        head = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        self.maildir.add(head + content)
        self.received += 1
        return "250 2.0.0 OK: queued"


def read_mails(directory: Path) -> list[mailbox.MaildirMessage]:
    """Every mail the server at `directory` stored, in no particular order."""
    box = mailbox.Maildir(directory / "mail", create=False)
    return [box.get_message(key) for key in box.iterkeys()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m adapters.smtp", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="Maildir, cert and faults here")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--security", choices=("none", "starttls", "tls"), default="none")
    parser.add_argument("--user")
    parser.add_argument("--password")
    return parser


def _tls(args: argparse.Namespace) -> tuple[ssl.SSLContext | None, Path | None]:
    directory: Path = args.dir
    directory.mkdir(parents=True, exist_ok=True)
    if args.security == "none":
        return None, None
    cert, key = make_certificate(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context, cert


async def serve(
    args: argparse.Namespace, context: ssl.SSLContext | None, cert: Path | None
) -> None:
    directory: Path = args.dir
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(directory / "mail", FaultFile(directory / "faults.json"))

    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == (args.user or "").encode()
            and data.password == (args.password or "").encode()
        )
        return AuthResult(success=ok)

    def factory() -> SMTP:
        return SMTP(
            handler,
            hostname="smtp-sim.localhost",
            ident="somsd SMTP simulator",
            tls_context=context if args.security == "starttls" else None,
            require_starttls=args.security == "starttls",
            auth_required=args.user is not None,
            auth_require_tls=args.security != "none",
            authenticator=authenticate if args.user is not None else None,
            timeout=60,
            loop=loop,
        )

    sock = socket.create_server((args.host, args.port))
    server = await loop.create_server(
        factory, sock=sock, ssl=context if args.security == "tls" else None
    )
    port = sock.getsockname()[1]
    ready = {
        "event": "smtp_listening",
        "host": args.host,
        "port": port,
        "security": args.security,
        "cert": str(cert) if cert else None,
        "maildir": str(directory / "mail"),
    }
    (directory / "server.json").write_text(json.dumps(ready))  # once, at start
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)


def main(argv: list[str] | None = None) -> None:
    import warnings

    # aiosmtpd warns that AUTH without TLS is insecure: on loopback, for tests, it is intended.
    warnings.filterwarnings("ignore", module="aiosmtpd")
    args = _parser().parse_args(argv)
    try:
        asyncio.run(serve(args, *_tls(args)))
    except KeyboardInterrupt:
        sys.exit(130)

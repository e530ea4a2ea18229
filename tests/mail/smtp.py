"""The SMTP simulator as a separate process (`python -m adapters.smtp`), for tests and bench."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import trio

from adapters.smtp.simulator import read_mails

START_TIMEOUT = 15.0


class SmtpServer:
    """One simulator process; `stop()` and `start()` again keep its port (SMTP down and back)."""

    def __init__(
        self,
        directory: Path,
        *,
        security: str = "none",
        user: str | None = None,
        password: str | None = None,
    ) -> None:
        self.directory = directory
        self.security = security
        self.user = user
        self.password = password
        self.port = 0
        self.cert: Path | None = None
        self.process: trio.Process | None = None

    async def start(self) -> None:
        args = [
            sys.executable,
            "-m",
            "adapters.smtp",
            "--dir",
            str(self.directory),
            "--port",
            str(self.port),
            "--security",
            self.security,
        ]
        if self.user is not None:
            args += ["--user", self.user, "--password", self.password or ""]
        process = await trio.lowlevel.open_process(args, stdout=subprocess.PIPE)
        self.process = process
        assert process.stdout is not None
        buffer = b""
        with trio.fail_after(START_TIMEOUT):
            while b"\n" not in buffer:
                chunk = await process.stdout.receive_some(4096)
                if not chunk:
                    raise AssertionError("the SMTP simulator exited before listening")
                buffer += chunk
        ready = json.loads(buffer.split(b"\n", 1)[0])
        assert ready["event"] == "smtp_listening"
        self.port = ready["port"]
        self.cert = Path(ready["cert"]) if ready["cert"] else None

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            with trio.fail_after(10):
                await self.process.wait()
        self.process = None

    def faults(self, **faults: Any) -> None:
        path = self.directory / "faults.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(faults))
        tmp.replace(path)

    def mails(self) -> list[EmailMessage]:
        if not (self.directory / "mail").exists():
            return []
        return [
            message_from_bytes(bytes(m), policy=policy.default)  # type: ignore[misc]
            for m in read_mails(self.directory)
        ]

    def notify_section(self, extra: str = "") -> str:
        lines = [
            "[notify]",
            'host = "127.0.0.1"',
            f"port = {self.port}",
            f'security = "{self.security}"',
            'sender = "Test Shop <shop@example.com>"',
            'shop_name = "Test Shop"',
            'timeout = "5s"',
        ]
        if self.cert is not None:
            lines.append(f'ca_file = "{self.cert}"')
        if self.user is not None:
            (self.directory.parent / "smtp.password").write_text(f"{self.password}\n")
            lines += [f'user = "{self.user}"', 'password_file = "smtp.password"']
        return "\n".join(lines) + "\n" + extra


def message_ids(mails: list[EmailMessage]) -> Counter[str]:
    return Counter(str(m["Message-ID"]) for m in mails)


def mails_to(mails: list[EmailMessage], address: str) -> list[EmailMessage]:
    return [m for m in mails if address in str(m["X-Envelope-To"])]


def text_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def html_of(mail: EmailMessage) -> str:
    part = mail.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]

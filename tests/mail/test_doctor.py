"""`somsd doctor` for SMTP: connect, STARTTLS and AUTH against the real simulator, no mail."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import write_daemon_config
from tests.mail.smtp import SmtpServer
from tests.orders.shop import somsd_cli

pytestmark = pytest.mark.slow


async def test_doctor_checks_starttls_and_auth_without_sending(tmp_path: Path) -> None:
    smtp = SmtpServer(tmp_path / "smtp", security="starttls", user="shop", password="s3cret")
    await smtp.start()
    try:
        config = write_daemon_config(tmp_path, smtp.notify_section())
        doctor = await somsd_cli("doctor", "-c", str(config))
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert b"STARTTLS, AUTH as shop; no mail sent" in doctor.stdout
        assert smtp.mails() == []
        (tmp_path / "smtp.password").write_text("wrong\n")
        doctor = await somsd_cli("doctor", "-c", str(config))
        assert doctor.returncode == 1
        assert b"FAIL notify/smtp" in doctor.stdout
        # Without the CA the self-signed certificate is not trusted: named, with the fix.
        config.write_text(config.read_text().replace(f'ca_file = "{smtp.cert}"', ""))
        (tmp_path / "smtp.password").write_text("s3cret\n")
        doctor = await somsd_cli("doctor", "-c", str(config))
        assert doctor.returncode == 1
        assert b"notify.ca_file" in doctor.stdout
    finally:
        await smtp.stop()


async def test_doctor_names_a_relay_that_is_down(tmp_path: Path, smtp: SmtpServer) -> None:
    config = write_daemon_config(tmp_path, smtp.notify_section())
    await smtp.stop()
    doctor = await somsd_cli("doctor", "-c", str(config))
    assert doctor.returncode == 1
    assert b"refused the connection; is the relay up?" in doctor.stdout


async def test_the_pool_sends_over_starttls_with_auth_and_reuses_its_connection(
    tmp_path: Path,
) -> None:
    from adapters.smtp.client import SmtpPool, SmtpSettings
    from somsd.secrets import Secret

    smtp = SmtpServer(tmp_path / "smtp", security="starttls", user="shop", password="s3cret")
    await smtp.start()
    try:
        pool = SmtpPool(
            SmtpSettings(
                host="127.0.0.1",
                port=smtp.port,
                security="starttls",
                user="shop",
                password=Secret("s3cret"),
                ca_file=str(smtp.cert),
                timeout=5,
            )
        )
        for n in range(3):
            data = f"Message-ID: <{n}@example.com>\r\nSubject: {n}\r\n\r\nbody\r\n".encode()
            assert await pool.send("shop@example.com", ["a@example.com"], data) == {}
        pool.close()
        assert pool.opened == 1
        assert sorted(str(m["Subject"]) for m in smtp.mails()) == ["0", "1", "2"]
    finally:
        await smtp.stop()

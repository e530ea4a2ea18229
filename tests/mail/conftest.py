"""Fixtures: a real SMTP simulator process per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.mail.smtp import SmtpServer


@pytest.fixture
async def smtp(tmp_path: Path) -> AsyncIterator[SmtpServer]:
    server = SmtpServer(tmp_path / "smtp")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()

"""Timestamps as the store writes them: UTC, timezone-aware, one fixed text format.

SQLite has no date type, so times are TEXT. A fixed format (always microseconds, always
`+00:00`) makes text order equal time order, which is what lets `next_attempt_at <= ?` use an
index instead of parsing every row. Naive datetimes are refused: a local wall-clock time written
by mistake would look valid and be off by hours.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

__all__ = ["Clock", "from_text", "to_text", "utc_now"]

Clock = Callable[[], datetime]
"""Where the store reads the time; tests pass a fixed or stepping clock."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def to_text(at: datetime) -> str:
    """Render an aware datetime as UTC ISO-8601 text with microseconds and offset."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at!r} is naive; pass a timezone-aware datetime, e.g. datetime.now(UTC)")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def from_text(text: str) -> datetime:
    return datetime.fromisoformat(text)

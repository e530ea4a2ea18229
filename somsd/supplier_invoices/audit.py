"""The audit trail of one supplier invoice: its events, hash-chained.

Every event payload is an `AuditEntry`: which step, when, its data as JSON text, the hash of
the entry before it and its own hash over all of that. Changing any stored entry (its data, its
time, its place) changes its hash, which then no longer matches the next entry's `previous`:
`verify_chain` finds it. The data is kept as the exact JSON text that was hashed, so
verification never depends on re-encoding a decoded value byte for byte.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Final

import msgspec

__all__ = ["GENESIS", "AuditEntry", "entry_hash", "seal", "verify_chain"]

GENESIS: Final = "0" * 64  # the `previous` of an invoice's first entry


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    index: int  # 1 for the first entry of the invoice, then +1
    step: str  # received, extracted, check, decided, overridden, posted, ...
    at: str  # RFC 3339 UTC
    data: str  # JSON text of the step's details
    previous: str  # hash of entry index-1; GENESIS for the first
    hash: str


def entry_hash(index: int, step: str, at: str, data: str, previous: str) -> str:
    # Length-prefixed fields: no two different entries can hash the same input text.
    digest = hashlib.sha256()
    for part in (str(index), step, at, data, previous):
        encoded = part.encode()
        digest.update(f"{len(encoded)}:".encode())
        digest.update(encoded)
    return digest.hexdigest()


def seal(previous: AuditEntry | None, step: str, at: str, data: str) -> AuditEntry:
    """The entry after `previous` (None: the first of its invoice)."""
    index = 1 if previous is None else previous.index + 1
    before = GENESIS if previous is None else previous.hash
    return AuditEntry(
        index=index,
        step=step,
        at=at,
        data=data,
        previous=before,
        hash=entry_hash(index, step, at, data, before),
    )


def seal_all(
    previous: AuditEntry | None, steps: Sequence[tuple[str, str, str]]
) -> list[AuditEntry]:
    """Chain several (step, at, data) after `previous`."""
    entries: list[AuditEntry] = []
    for step, at, data in steps:
        previous = seal(previous, step, at, data)
        entries.append(previous)
    return entries


def verify_chain(entries: Sequence[AuditEntry]) -> list[str]:
    """Every break in the chain, as text; empty when the chain is intact."""
    problems: list[str] = []
    before = GENESIS
    for position, entry in enumerate(entries, start=1):
        if entry.index != position:
            problems.append(f"entry {position}: index {entry.index} (entries missing or moved)")
        if entry.previous != before:
            problems.append(f"entry {position} ({entry.step}): previous hash does not match")
        expected = entry_hash(entry.index, entry.step, entry.at, entry.data, entry.previous)
        if entry.hash != expected:
            problems.append(f"entry {position} ({entry.step}): hash does not match its content")
        before = entry.hash
    return problems

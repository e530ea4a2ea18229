"""The values that go into and come out of the event store.

All are frozen msgspec Structs: they cross task boundaries (producer -> writer -> producer) and
are cheap to build on the hot path. Payloads are bytes the producer has already encoded with
msgspec JSON, so the single writer thread spends its time in SQLite, not in encoding.

Rows written to the log follow msgspec's schema-evolution rules (see
docs/schema-evolution.rst): an event type may gain fields with defaults, never change a field's
type, so old rows still decode after an upgrade.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
from datetime import datetime
from typing import TypeVar

import msgspec

__all__ = [
    "MAX_BLOB_BYTES",
    "Appended",
    "Duplicate",
    "IdempotencyKey",
    "NewEvent",
    "OutboxCounts",
    "OutboxEntry",
    "OutboxItem",
    "OutboxState",
    "StoredEvent",
    "blob_key",
]

T = TypeVar("T")


# The largest blob an append may carry. A carrier label is tens to a few hundred kilobytes (a
# multi-page export label a few MB), an invoice PDF tens of kilobytes; a supplier's scanned
# invoice may be several MB, and `[[supplier_inbox]] max_file_bytes` took up to 20 MiB by
# default before its files were blobs. 20 MiB keeps that default (and configs that copied
# it) valid and one append's transaction, and the memory a reader needs to serve it, bounded.
MAX_BLOB_BYTES = 20 * 1024 * 1024


def blob_key(content: bytes) -> str:
    """The key a blob is stored under: its SHA-256, lower-case hex."""
    return hashlib.sha256(content).hexdigest()


class NewEvent(msgspec.Struct, frozen=True, gc=False):
    """An event to append: its type name, msgspec-JSON payload and string metadata.

    Build the payload with `msgspec.json.encode(value)` in the producer. Metadata carries who
    and why (actor, user, correlation id); it is stored as a JSON object.
    """

    type: str
    payload: bytes
    metadata: dict[str, str] = msgspec.field(default_factory=dict)


class IdempotencyKey(msgspec.Struct, frozen=True, gc=False):
    """Names an inbound message, e.g. ("smartstore/shop", "order 1042"), so a redelivery is
    recognised: the second append with the same key writes nothing and returns `Duplicate`."""

    source: str
    external_id: str


class OutboxItem(msgspec.Struct, frozen=True, gc=False):
    """An effect on an external system, written in the same transaction as its events.

    `idempotency_key` is unique across the outbox and is what the dispatcher sends upstream
    where the upstream accepts one, so a retried delivery is not applied twice.
    """

    target: str
    payload: bytes
    idempotency_key: str


class Appended(msgspec.Struct, frozen=True, gc=False):
    """The append committed: its events have seqs first_seq..last_seq and the stream is now at
    `version`."""

    stream: str
    first_seq: int
    last_seq: int
    version: int
    # The events as stored, when a stamping projection changed any of them (invoice numbers);
    # empty when they were stored exactly as submitted. Unchanged events are the very objects
    # submitted, so a caller can tell which ones changed with `is`.
    stamped: tuple[NewEvent, ...] = ()


class Duplicate(msgspec.Struct, frozen=True, gc=False):
    """The idempotency key was seen before; nothing was written. `first_seq` is the first event
    the original append wrote, in `stream`."""

    stream: str
    first_seq: int


class StoredEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as committed: global `seq`, position `version` in its stream, commit time."""

    seq: int
    stream: str
    version: int
    type: str
    payload: bytes
    metadata: dict[str, str]
    recorded_at: datetime

    def decode(self, into: builtins.type[T]) -> T:
        """Decode the payload into the given type (usually the event's Struct)."""
        return msgspec.json.decode(self.payload, type=into)


class OutboxState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class OutboxEntry(msgspec.Struct, frozen=True, gc=False):
    """An outbox row: what to deliver where, and how delivery has gone so far."""

    id: int
    target: str
    payload: bytes
    idempotency_key: str
    state: OutboxState
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class OutboxCounts(msgspec.Struct, frozen=True, gc=False):
    """Undelivered outbox entries per target: still trying (`pending`) and given up (`dead`).

    A target with no such entries is absent from a mapping, not present with 0.
    """

    pending: dict[str, int]
    dead: dict[str, int]

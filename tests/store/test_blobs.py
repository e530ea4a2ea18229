"""Blobs: documents appended with the events that refer to them by SHA-256 (carrier labels),
in the same transaction, on either backend; bounded in size; checked by `db verify`."""

from __future__ import annotations

import pytest

from somsd.store import MAX_BLOB_BYTES, EventStore, VersionConflict, blob_key
from tests.store.helpers import StoreBackend, event

LABEL = b"%PDF-1.4\n" + bytes(range(256)) * 64  # binary, not text


async def test_a_blob_is_stored_with_its_append_and_read_back_by_its_hash(
    store: EventStore, backend: StoreBackend
) -> None:
    await store.append("label-1", [event("LabelStored")], blobs=[LABEL])
    assert await store.blob(blob_key(LABEL)) == LABEL
    assert await store.blob(blob_key(b"never stored")) is None
    # The same document again (a label found by reference after a lost answer) is one row.
    await store.append("label-2", [event("LabelStored")], blobs=[LABEL])
    assert backend.query("SELECT sha256, size FROM blobs") == [(blob_key(LABEL), len(LABEL))]
    assert backend.verify() == []


async def test_a_refused_append_stores_none_of_its_blobs(store: EventStore) -> None:
    await store.append("label-1", [event()])
    with pytest.raises(VersionConflict):
        await store.append("label-1", [event()], expected_version=0, blobs=[b"orphan"])
    assert await store.blob(blob_key(b"orphan")) is None


async def test_a_blob_over_the_bound_is_refused_before_anything_is_queued(
    store: EventStore,
) -> None:
    too_big = b"\0" * (MAX_BLOB_BYTES + 1)
    with pytest.raises(ValueError, match=f"more than the {MAX_BLOB_BYTES}"):
        await store.append("label-1", [event()], blobs=[too_big])
    assert await store.stream_version("label-1") == 0


async def test_blobs_are_immutable_and_verify_finds_a_replaced_one(
    store: EventStore, backend: StoreBackend
) -> None:
    await store.append("label-1", [event()], blobs=[LABEL])
    with pytest.raises(Exception, match="immutable"):
        backend.execute("UPDATE blobs SET size = 1")
    key = blob_key(LABEL)
    backend.execute("DELETE FROM blobs")
    backend.execute(
        "INSERT INTO blobs (sha256, content, size, created_at) VALUES (?, ?, ?, ?)",
        (key, b"forged", len(LABEL), "2026-01-01T00:00:00Z"),
    )
    [problem] = backend.verify()
    assert problem.startswith(f"blob {key}: 6 bytes hashing to {blob_key(b'forged')}")

"""`db verify` names a missing guard trigger (append-only log, immutable blobs) on either
backend: a database edited or restored without them accepts what the store forbids."""

from __future__ import annotations

from somsd.store import EventStore
from tests.store.helpers import StoreBackend, event


async def test_verify_names_a_dropped_guard_trigger(
    store: EventStore, backend: StoreBackend
) -> None:
    await store.append("order-1", [event()])
    assert backend.verify() == []
    drop = {
        "sqlite": "DROP TRIGGER blobs_no_update",
        "postgres": "DROP TRIGGER blobs_no_update ON blobs",
    }
    backend.execute(drop[backend.name])
    [problem] = backend.verify()
    assert problem.startswith("trigger 'blobs_no_update' is missing")

"""The outbox: written with its events, then delivered, retried, parked and requeued."""

from __future__ import annotations

from datetime import timedelta

import pytest

from somsd.store import (
    EventStore,
    OutboxItem,
    OutboxState,
    OutboxTransitionError,
    VersionConflict,
)
from tests.store.helpers import T0, Clock, StoreBackend, event


async def test_outbox_lifecycle(store: EventStore, clock: Clock) -> None:
    """pending -> retry later -> dead letter -> requeued -> delivered, with counts at each step."""
    await store.append(
        "order-1",
        [event("OrderAccepted")],
        outbox=[
            OutboxItem("erp", b'{"post":"order-1"}', "erp:order-1"),
            OutboxItem("shop", b'{"status":"processing"}', "shop:order-1:processing"),
        ],
    )
    due = await store.due_outbox()
    assert [(e.target, e.state, e.attempts, e.next_attempt_at) for e in due] == [
        ("erp", OutboxState.PENDING, 0, T0),
        ("shop", OutboxState.PENDING, 0, T0),
    ]
    erp, shop = due
    assert erp.payload == b'{"post":"order-1"}'
    assert erp.idempotency_key == "erp:order-1"
    assert (await store.outbox_counts()).pending == {"erp": 1, "shop": 1}

    retry_at = T0 + timedelta(seconds=30)
    clock.at = T0 + timedelta(seconds=1)
    await store.schedule_retry(erp.id, error="503 from ERP", next_attempt_at=retry_at)
    assert [e.target for e in await store.due_outbox()] == ["shop"]
    _shop, again = await store.due_outbox(now=retry_at)  # oldest due first
    assert (again.id, again.attempts, again.last_error) == (erp.id, 1, "503 from ERP")
    assert again.updated_at == clock.at

    await store.mark_dead(erp.id, error="400: invalid VAT id")
    [dead] = await store.dead_letters()
    assert (dead.id, dead.state, dead.attempts, dead.last_error) == (
        erp.id,
        OutboxState.DEAD,
        2,
        "400: invalid VAT id",
    )
    assert await store.dead_letters(target="shop") == []
    counts = await store.outbox_counts()
    assert (counts.pending, counts.dead) == ({"shop": 1}, {"erp": 1})

    clock.at = T0 + timedelta(minutes=5)
    await store.requeue(erp.id)
    [requeued] = [e for e in await store.due_outbox() if e.id == erp.id]
    assert (requeued.attempts, requeued.next_attempt_at) == (0, clock.at)
    assert requeued.last_error == "400: invalid VAT id"

    await store.mark_delivered(erp.id)
    await store.mark_delivered(shop.id)
    assert await store.due_outbox(now=T0 + timedelta(days=1)) == []
    counts = await store.outbox_counts()
    assert (counts.pending, counts.dead) == ({}, {})


@pytest.mark.parametrize(
    ("action", "message"),
    [("requeue", "is pending; cannot requeue"), ("again", "is delivered; cannot mark delivered")],
)
async def test_outbox_changes_check_the_current_state(
    store: EventStore, action: str, message: str
) -> None:
    """A change from the wrong state is refused with the state named, and changes nothing."""
    await store.append("s", [event()], outbox=[OutboxItem("erp", b"{}", "k")])
    [entry] = await store.due_outbox()
    if action == "again":
        await store.mark_delivered(entry.id)
        with pytest.raises(OutboxTransitionError, match=message):
            await store.mark_delivered(entry.id)
    else:
        with pytest.raises(OutboxTransitionError, match=message):
            await store.requeue(entry.id)
        assert await store.due_outbox() == [entry]


async def test_unknown_outbox_entry_is_reported(store: EventStore) -> None:
    with pytest.raises(OutboxTransitionError, match="outbox entry 42 does not exist") as caught:
        await store.mark_dead(42, error="x")
    assert caught.value.state is None


async def test_naive_retry_time_is_refused(store: EventStore) -> None:
    """A local wall-clock time would be silently off by hours; it is refused at the call."""
    with pytest.raises(ValueError, match="is naive"):
        await store.schedule_retry(1, error="x", next_attempt_at=T0.replace(tzinfo=None))


async def test_outbox_entries_share_their_appends_fate(
    store: EventStore, backend: StoreBackend
) -> None:
    """An append that fails writes none of its outbox entries."""
    await store.append("s", [event()])
    with pytest.raises(VersionConflict):
        await store.append(
            "s", [event()], expected_version=0, outbox=[OutboxItem("erp", b"{}", "k")]
        )
    assert backend.query("SELECT count(*) FROM outbox") == [(0,)]

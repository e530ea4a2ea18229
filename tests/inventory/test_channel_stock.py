"""What shops are told: debounced `ChannelStockChanged` pushes with outbox rows, low-stock alerts.

Real clock with small budgets, not autojump: every change is committed in the store's worker
thread, and autojump would advance virtual time past the debounce window while a commit is in
that thread, turning one burst into several pushes. The windows here are 0.05-0.3 s and the
waits are bounded at 2 s (ten times the window, for a loaded CI machine); the budget for a
push that must come "at once" (1 s) is far below the 30 s quiet time it must skip.
"""

from __future__ import annotations

import msgspec
import trio
from prometheus_client import CollectorRegistry

from actors.inventory import (
    ChannelStockChanged,
    ChannelStockEvent,
    ChannelStockSettings,
    LowStock,
    channel_stock_stream,
    decode_channel_stock_event,
)
from somsd.domain.atp import DebouncePolicy, SafetyStock
from somsd.store import EventStore
from tests.inventory.conftest import StartInventory
from tests.inventory.support import later, report, reserve, shop

FAST = DebouncePolicy(quiet_seconds=0.05, max_delay_seconds=1.0)
SLOW = DebouncePolicy(quiet_seconds=30.0, max_delay_seconds=60.0)
WAIT = 2.0  # bound on waiting for a push that is due; see the module docstring


async def channel_events(store: EventStore, channel: str = "shop") -> list[ChannelStockEvent]:
    stored = await store.read_stream(channel_stock_stream(channel))
    return [decode_channel_stock_event(event.payload) for event in stored]


async def wait_for_events(
    store: EventStore, count: int, channel: str = "shop"
) -> list[ChannelStockEvent]:
    with trio.fail_after(WAIT):
        while True:
            events = await channel_events(store, channel)
            if len(events) >= count:
                return events
            await trio.sleep(0.01)


def pushes(events: list[ChannelStockEvent]) -> list[ChannelStockChanged]:
    return [event for event in events if isinstance(event, ChannelStockChanged)]


async def test_a_burst_of_changes_is_pushed_once_with_its_outbox_row(
    start_inventory: StartInventory, store: EventStore, registry: CollectorRegistry
) -> None:
    """A report and four reservations in quick succession become one push of the final
    quantity, once the SKU has been quiet, with an outbox row in the same append."""
    quiet = 0.2
    inventory, _ = await start_inventory(
        channels=[shop("wh")], debounce=DebouncePolicy(quiet, max_delay_seconds=5.0)
    )
    await report(inventory, "wh", {"MUG": 10})
    for n in range(4):
        await reserve(inventory, f"r{n}", "wh", MUG=1)
    last_change = trio.current_time()

    [event] = await wait_for_events(store, 1)
    assert trio.current_time() - last_change >= quiet * 0.9  # waited for quiet (timer slack)
    assert isinstance(event, ChannelStockChanged)
    assert (event.sku, event.available, event.transition, event.visibility) == (
        "MUG",
        6,
        "back_in_stock",
        "show",
    )
    await trio.sleep(quiet * 2)
    assert len(await channel_events(store)) == 1  # and nothing more for the burst
    [entry] = await store.due_outbox(now=later(60 * 24 * 365))
    assert entry.target == "channel/shop/stock"
    assert entry.idempotency_key == "stock/shop/MUG/1"
    assert msgspec.json.decode(entry.payload, type=ChannelStockChanged) == event
    changes = registry.get_sample_value(
        "somsd_channel_stock_changes_total", {"channel": "shop", "transition": "back_in_stock"}
    )
    assert changes == 1


async def test_sold_out_is_pushed_at_once_and_lag_shows_the_waiting_change(
    start_inventory: StartInventory, store: EventStore, registry: CollectorRegistry
) -> None:
    """With a 30 s quiet time, selling out is pushed within a second (hide the product); a
    restock then waits, and the sync-lag gauge shows its age."""
    channels = [shop("wh")]
    inventory, _ = await start_inventory(channels=channels, debounce=FAST)
    await report(inventory, "wh", {"MUG": 2})
    await wait_for_events(store, 1)
    inventory.reconfigure(safety=SafetyStock(), channels=channels, debounce=SLOW)

    await reserve(inventory, "r", "wh", MUG=2)
    with trio.fail_after(1.0):
        events = await wait_for_events(store, 2)
    sold_out = pushes(events)[-1]
    assert (sold_out.available, sold_out.transition, sold_out.visibility) == (0, "sold_out", "hide")

    await report(inventory, "wh", {"MUG": 7}, as_of=later(1))
    await trio.sleep(0.2)
    assert len(await channel_events(store)) == 2  # the restock waits for quiet
    lag = registry.get_sample_value("somsd_stock_sync_lag_seconds", {"channel": "shop"})
    assert lag is not None
    assert 0.15 <= lag < WAIT


async def test_low_stock_alert_is_recorded_once_per_crossing(
    start_inventory: StartInventory, store: EventStore, registry: CollectorRegistry
) -> None:
    """Falling to the threshold raises one alert (an event, no outbox row); going further
    below it does not raise another."""
    inventory, _ = await start_inventory(
        channels=[shop("wh", "store", low_stock_threshold=3)], debounce=FAST
    )
    await report(inventory, "wh", {"MUG": 6})
    await report(inventory, "store", {"MUG": 4})
    await reserve(inventory, "a", "wh", MUG=6)  # 10 -> 4: above the threshold
    await reserve(inventory, "b", "store", MUG=1)  # 4 -> 3: crosses it
    await reserve(inventory, "c", "store", MUG=1)  # 3 -> 2: already low
    events = await wait_for_events(store, 2)
    await trio.sleep(0.2)  # let every due push land
    events = await channel_events(store)
    alerts = [event for event in events if isinstance(event, LowStock)]
    assert [(a.sku, a.available, a.threshold) for a in alerts] == [("MUG", 3, 3)]
    assert registry.get_sample_value("somsd_stock_low_alerts_total", {"channel": "shop"}) == 1
    outbox = await store.due_outbox(now=later(60 * 24 * 365))
    assert len(outbox) == len(pushes(events))  # alerts have no outbox row


async def test_restart_pushes_what_was_committed_but_not_pushed_and_nothing_twice(
    start_inventory: StartInventory, store: EventStore
) -> None:
    """A change committed just before a stop is pushed by the next run; a run that finds the
    shop up to date pushes nothing."""
    inventory, scope = await start_inventory(channels=[shop("wh")], debounce=SLOW)
    await report(inventory, "wh", {"MUG": 5})
    scope.cancel()

    _, scope = await start_inventory(channels=[shop("wh")], debounce=FAST)
    [event] = pushes(await wait_for_events(store, 1))
    assert event.available == 5
    scope.cancel()

    await start_inventory(channels=[shop("wh")], debounce=FAST)
    await trio.sleep(0.2)
    assert len(await channel_events(store)) == 1


async def test_channel_without_stock_sync_gets_alerts_but_no_pushes(
    start_inventory: StartInventory, store: EventStore, registry: CollectorRegistry
) -> None:
    """`sync_stock = false`: nothing is pushed to that shop, low stock is still recorded."""
    b2b = ChannelStockSettings("b2b", frozenset({"wh"}), low_stock_threshold=2, sync_stock=False)
    inventory, _ = await start_inventory(channels=[b2b, shop("wh")], debounce=FAST)
    await report(inventory, "wh", {"MUG": 5})
    await reserve(inventory, "r", "wh", MUG=4)
    await wait_for_events(store, 1, channel="b2b")
    await wait_for_events(store, 1, channel="shop")
    await trio.sleep(0.2)
    assert [type(e) for e in await channel_events(store, "b2b")] == [LowStock]
    outbox = await store.due_outbox(now=later(60 * 24 * 365))
    assert {entry.target for entry in outbox} == {"channel/shop/stock"}
    lags = registry.get_sample_value("somsd_stock_sync_lag_seconds", {"channel": "b2b"})
    assert lags is None  # not synced, so no lag to report


async def test_reload_adding_a_channel_pushes_its_current_stock(
    start_inventory: StartInventory, store: EventStore
) -> None:
    """A channel added by a config reload is compared with the book and brought up to date."""
    inventory, _ = await start_inventory(channels=[shop("wh")], debounce=FAST)
    await report(inventory, "wh", {"MUG": 5, "CUP": 0})
    outlet = ChannelStockSettings("outlet", frozenset({"wh"}))
    inventory.reconfigure(safety=SafetyStock(), channels=[shop("wh"), outlet], debounce=FAST)
    events = await wait_for_events(store, 1, channel="outlet")
    assert [(e.sku, e.available) for e in pushes(events)] == [("MUG", 5)]

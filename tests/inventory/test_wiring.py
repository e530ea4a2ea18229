"""Building the inventory's arguments from the config, as the composition root does."""

from __future__ import annotations

from actors.inventory import (
    ChannelStockSettings,
    channel_stock_policies,
    debounce_policy,
    safety_stock,
)
from somsd.config import ChannelConfig, InventoryConfig, LocationConfig
from somsd.domain.atp import DebouncePolicy


def test_channels_locations_and_push_timing_come_from_the_config() -> None:
    """Channel policies keep locations and display rules; a webhook channel is never synced
    (it has nowhere to push to); safety stock is per location; durations become seconds."""
    shop = ChannelConfig(
        name="shop", kind="smartstore", locations=("wh", "store"), low_stock_threshold=3
    )
    b2b = ChannelConfig(name="b2b", kind="webhook", locations=("wh",), hide_sold_out=False)
    assert channel_stock_policies([shop, b2b]) == (
        ChannelStockSettings("shop", frozenset({"wh", "store"}), True, 3, sync_stock=True),
        ChannelStockSettings("b2b", frozenset({"wh"}), False, None, sync_stock=False),
    )
    safety = safety_stock([LocationConfig(name="wh"), LocationConfig(name="store", safety_stock=2)])
    assert (safety.safety_stock_for("MUG", "wh"), safety.safety_stock_for("MUG", "store")) == (0, 2)
    assert debounce_policy(InventoryConfig()) == DebouncePolicy(2.0, 30.0)

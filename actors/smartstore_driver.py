"""The Smartstore driver of the channel actor: what `kind = "smartstore"` means in practice.

`ChannelActor` is generic; this module turns its calls into Web API requests through
`adapters.smartstore.SmartstoreClient`:

- **Orders** (`orders_since`): a page of `Orders` by `(UpdatedOnUtc, Id)`, each mapped to the
  canonical order (`to_canonical`); paid in the shop = `PaymentStatusId` Paid, cancelled =
  `OrderStatusId` Cancelled.
- **Order effects** (outbox payload `order_effect`, see `somsd.domain.channel_sync`): the shop
  answers a not-allowed action with 200 and the unchanged order, so every action's answer is
  checked; a refusal becomes a permanent error (a dead letter an operator sees), an answer
  that already shows the wanted state is success. `add_shipment` never runs twice for one
  parcel: before each attempt the order's shipments are read and one with the parcel's
  tracking number is taken as ours (a lost answer after the shop created it). Notes carry a
  reference (`somsd:<key>`) so a retried note is found instead of posted twice.
- **Stock pushes** (the inventory's `ChannelStockChanged` rows) and **reconciliation fixes**
  (`stock_fix`): PATCH `StockQuantity` on the product or combination of the SKU, found in a
  SKU -> id map loaded by paging `Products` and `ProductVariantAttributeCombinations` with
  `$select`, refreshed for a SKU it does not know. Sold out hides the product per
  `sold_out_action`; back in stock shows it again only if somsd hid it
  (`somsd.domain.channel_sync.visibility_change`). Which products somsd hid is kept as events
  in `channel-<name>-hidden` (`product_hidden` before the PATCH that hides, `product_shown` after
  the PATCH that shows: a crash in between leaves a product somsd will still show, never one
  it forgot it hid). Reconciliation fixes show what is sellable whoever hid it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import TYPE_CHECKING, Final, Literal, TypeVar

import msgspec
import structlog
import trio

from actors.channel import (
    DRIVERS,
    ORDER_EFFECT_CONCURRENCY,
    ShopOrder,
    ShopOrderPage,
    StockFix,
)
from actors.inventory import ChannelStockChanged
from adapters.errors import PermanentUpstreamError
from adapters.smartstore import to_canonical
from adapters.smartstore.client import SmartstoreClient, smartstore_http_client
from adapters.smartstore.errors import SmartstoreNotFound, SmartstoreRejected
from adapters.smartstore.wire import SsOrder, SsProduct, SsShipment
from somsd.domain.channel_sync import (
    ChannelEffect,
    ReconcileFix,
    ShopItem,
    shown_state,
    visibility_change,
)
from somsd.domain.holds import HoldReason
from somsd.projections.fulfilments import fetch_fulfilment
from somsd.store import NewEvent, OutboxEntry, utc_now

if TYPE_CHECKING:
    from datetime import datetime

    from actors.channel import ChannelActor

__all__ = ["SmartstoreDriver", "smartstore_driver"]

log = structlog.get_logger("actors.smartstore")

T = TypeVar("T")

# Smartstore's enums (reference §7).
ORDER_COMPLETE: Final = 30
ORDER_CANCELLED: Final = 40
PAID_OR_LATER: Final = frozenset({30, 35, 40})  # paid, partially refunded, refunded
MANAGE_BY_ATTRIBUTES: Final = 2

HIDDEN_EVENT: Final = "product_hidden"
SHOWN_EVENT: Final = "product_shown"

_encoder = msgspec.json.Encoder()


class _Kind(msgspec.Struct, frozen=True):
    type: str = ""


class _ProductHidden(msgspec.Struct, frozen=True):
    product_id: int
    sku: str
    previous: str = ""  # Visibility before (action hide)


class _ProductShown(msgspec.Struct, frozen=True):
    product_id: int
    sku: str


class _Ref(msgspec.Struct, frozen=True):
    kind: Literal["product", "combination"]
    id: int
    product_id: int


_kind_decoder = msgspec.json.Decoder(_Kind)
_effect_decoder = msgspec.json.Decoder(ChannelEffect)
_stock_decoder = msgspec.json.Decoder(ChannelStockChanged)
_fix_decoder = msgspec.json.Decoder(StockFix)


class SmartstoreDriver:
    def __init__(self, client: SmartstoreClient, actor: ChannelActor) -> None:
        self.client = client
        self.actor = actor
        self.section = actor.section
        self.target = actor.target
        self._skus: dict[str, _Ref] | None = None  # loaded on first use
        self._hidden: dict[int, _ProductHidden] = {}  # product id -> why somsd hid it
        self._map_lock = trio.Lock()
        # One push per SKU at a time: hide/show decides on what the previous one left.
        self._sku_locks: dict[str, trio.Lock] = {}

    @property
    def hidden_stream(self) -> str:
        return f"channel-{self.section.name}-hidden"

    async def load(self) -> None:
        for stored in await self.actor.store.read_stream(self.hidden_stream):
            if stored.type == HIDDEN_EVENT:
                hidden = stored.decode(_ProductHidden)
                self._hidden[hidden.product_id] = hidden
            else:
                self._hidden.pop(stored.decode(_ProductShown).product_id, None)

    # -- orders ---------------------------------------------------------------------------

    async def orders_since(
        self, updated_from: datetime, after: tuple[datetime, int] | None
    ) -> ShopOrderPage:
        page = await self._within_max_top(
            lambda: self.client.orders_since(updated_from, after=after)
        )
        orders: list[ShopOrder] = []
        for shop_order in page.orders:
            orders.append(self._map(shop_order))
        return ShopOrderPage(
            orders=tuple(orders), has_more=page.has_more, server_date=page.server_date
        )

    def _map(self, raw: SsOrder) -> ShopOrder:
        mapped = to_canonical(
            raw,
            channel=self.section.name,
            payment_methods=self.section.payment_methods,
            shipping_methods=self.section.shipping_methods,
            pickup_locations=self.section.pickup_locations,
            default_pickup_location=self.section.default_pickup_location,
        )
        return ShopOrder(
            key=mapped.external_id,
            shop_id=mapped.shop_id,
            number=mapped.number,
            updated_at=raw.updated_on_utc,
            order=None if mapped.unrepresentable else mapped.order,
            holds=tuple(HoldReason(hold.code, hold.message) for hold in mapped.holds),
            rejected="unrepresentable" if mapped.unrepresentable or mapped.order is None else "",
            detail=mapped.unrepresentable or "",
            paid=mapped.paid,
            cancelled=mapped.cancelled,
        )

    # -- the deliverer ----------------------------------------------------------------------

    async def deliver(self, entry: OutboxEntry) -> None:
        kind = _kind_decoder.decode(entry.payload).type
        try:
            if kind == "order_effect":
                await self._order_effect(_effect_decoder.decode(entry.payload), entry)
            elif kind == "ChannelStockChanged":
                push = _stock_decoder.decode(entry.payload)
                lock = self._sku_locks.setdefault(push.sku, trio.Lock())
                async with lock:
                    await self._stock(push)
                lag = (utc_now() - push.at).total_seconds()
                self.actor.metrics.stock_delivery.labels(self.section.name).observe(max(lag, 0))
            elif kind == "stock_fix":
                await self._fix(_fix_decoder.decode(entry.payload).fix)
            else:
                raise PermanentUpstreamError(
                    self.target,
                    f"{self.target}: outbox entry {entry.id} has unknown type {kind!r}",
                    operation="decode payload",
                )
        except msgspec.DecodeError as exc:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: outbox entry {entry.id} is not readable ({exc})",
                operation="decode payload",
            ) from exc

    def _refused(self, effect: ChannelEffect, what: str) -> PermanentUpstreamError:
        return PermanentUpstreamError(
            self.target,
            f"{self.target}: order {effect.number}: the shop did not {what} (it answers a "
            "not-allowed action with the unchanged order); check the order in the shop",
            operation=effect.kind,
        )

    async def _order_effect(self, effect: ChannelEffect, entry: OutboxEntry) -> None:
        order_id = self.actor.shop_id_of(effect.external_id)
        if order_id is None:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: order {effect.number} ({effect.external_id}) was never read "
                "from this shop, so it cannot be addressed there",
                operation=effect.kind,
            )
        client = self.client
        match effect.kind:
            case "payment_paid":
                order = await client.payment_paid(order_id)
                if order.payment_status_id not in PAID_OR_LATER:
                    raise self._refused(effect, "mark the order paid")
            case "cancel":
                order = await client.cancel(order_id)
                if order.order_status_id != ORDER_CANCELLED:
                    raise self._refused(effect, "cancel the order")
            case "complete":
                order = await client.complete_order(order_id)
                if order.order_status_id != ORDER_COMPLETE:
                    raise self._refused(effect, "complete the order")
            case "add_shipment":
                await self._ship(order_id, effect)
            case "deliver":
                await self._deliver_shipment(order_id, effect)
            case "note":
                marker = f"[somsd:{effect.key}]"
                if entry.attempts > 0:  # an earlier attempt may have posted it
                    notes = await client.order_notes(order_id)
                    if any(marker in note.note for note in notes):
                        return
                await client.add_order_note(order_id, f"{effect.note} {marker}")

    async def _fulfilment(self, shipment_id: str) -> tuple[str, str | None]:
        """(tracking number, carrier) of somsd's fulfilment behind a shipment effect."""
        state = await self.actor.store.read(partial(fetch_fulfilment, fulfilment_id=shipment_id))
        if state is None:
            return "", None
        return state.tracking_number or "", state.carrier

    @staticmethod
    def _ours(shipments: Sequence[SsShipment], tracking: str) -> SsShipment | None:
        if tracking:
            return next((s for s in shipments if (s.tracking_number or "") == tracking), None)
        # Without a tracking number there is nothing to match by: with one parcel per order
        # (how somsd ships to a shop that gets no tracking) the only shipment is ours.
        return shipments[0] if len(shipments) == 1 else None

    async def _ship(self, order_id: int, effect: ChannelEffect) -> None:
        tracking, carrier = await self._fulfilment(effect.shipment_id)
        tracking = effect.tracking_number or tracking
        # Look first, every attempt: a lost answer to AddShipment still created the shipment.
        shipment = self._ours(await self.client.shipments(order_id), tracking)
        if shipment is None:
            shipment = await self.client.add_shipment(
                order_id, tracking or None, None, carrier, is_shipped=False
            )
            if shipment is None:
                # Nothing left to ship in the shop: somebody shipped it there already.
                log.info("shop_nothing_to_ship", channel=self.section.name, order=effect.number)
                return
        if shipment.shipped_date_utc is None:
            await self.client.ship(shipment.id)

    async def _deliver_shipment(self, order_id: int, effect: ChannelEffect) -> None:
        tracking, _ = await self._fulfilment(effect.shipment_id)
        shipment = self._ours(await self.client.shipments(order_id), tracking)
        if shipment is None:
            raise PermanentUpstreamError(
                self.target,
                f"{self.target}: order {effect.number}: no shipment in the shop for parcel "
                f"{effect.shipment_id} to mark delivered",
                operation="deliver",
            )
        if shipment.delivery_date_utc is None:
            await self.client.deliver(shipment.id)

    # -- stock ------------------------------------------------------------------------------

    async def _sku_map(self) -> dict[str, _Ref]:
        async with self._map_lock:
            if self._skus is None:
                skus: dict[str, _Ref] = {}
                async for page in self.catalogue():
                    for item in page:
                        skus[item.sku] = _Ref(item.kind, item.id, item.product_id)
                self._skus = skus
            return self._skus

    async def _ref(self, sku: str) -> _Ref | None:
        skus = await self._sku_map()
        ref = skus.get(sku)
        if ref is not None:
            return ref
        # Unknown: the merchant may have added it since the map was loaded.
        products = [p for p in await self.client.products_by_sku(sku) if p.sku == sku]
        if products:
            ref = _Ref("product", products[0].id, products[0].id)
        else:
            combinations = [c for c in await self.client.combinations_by_sku(sku) if c.sku == sku]
            if combinations:
                ref = _Ref("combination", combinations[0].id, combinations[0].product_id)
        if ref is not None:
            skus[sku] = ref
        return ref

    async def _product(self, ref: _Ref, sku: str) -> SsProduct | None:
        products = [p for p in await self.client.products_by_sku(sku) if p.id == ref.id]
        return products[0] if products else None

    async def _stock(self, push: ChannelStockChanged) -> None:
        ref = await self._ref(push.sku)
        if ref is None:
            log.info("shop_sku_unknown", channel=self.section.name, sku=push.sku)
            return  # nothing to update; reconciliation reports it as missing in the shop
        # The latest value, not the entry's: see `Inventory.pushed`.
        latest = self.actor.inventory.pushed(self.section.name, push.sku)
        available = max(push.available if latest is None else latest, 0)
        if ref.kind == "combination":
            await self._patch_combination(ref, {"StockQuantity": available})
            return
        fields: dict[str, object] = {"StockQuantity": available}
        want: Literal["hide", "show"] | None = None
        if push.visibility is not None:
            want = "show" if available > 0 else "hide"
        if want is not None:
            product = await self._product(ref, push.sku)
            if product is None:
                self._forget(push.sku)
                return
            action = self.section.sold_out_action
            hidden = self._hidden.get(ref.id)
            change = visibility_change(
                want,
                shown_now=shown_state(
                    product.published, product.visibility, product.disable_buy_button, action
                ),
                hidden_by_somsd=hidden is not None,
                action=action,
                visibility_now=product.visibility,
                previous=hidden.previous if hidden else "",
            )
            fields.update(change.fields)
            if change.hidden_by_somsd and hidden is None:
                await self._remember_hidden(ref.id, push.sku, change.previous)
            await self._patch_product(ref, fields)
            if not change.hidden_by_somsd and hidden is not None:
                await self._remember_shown(ref.id, push.sku)
            return
        await self._patch_product(ref, fields)

    async def _fix(self, fix: ReconcileFix) -> None:
        ref = _Ref(fix.kind, fix.id, fix.product_id)
        if fix.kind == "combination":
            if fix.stock is not None:
                await self._patch_combination(ref, {"StockQuantity": fix.stock})
            return
        fields: dict[str, object] = {}
        if fix.stock is not None:
            fields["StockQuantity"] = fix.stock
        action = self.section.sold_out_action
        if fix.show is True:
            hidden = self._hidden.get(fix.id)
            fields.update(
                {"Published": True}
                if action == "unpublish"
                else {"Visibility": (hidden.previous if hidden else "") or "Full"}
                if action == "hide"
                else {"DisableBuyButton": False}
            )
            await self._patch_product(ref, fields)
            if hidden is not None:
                await self._remember_shown(fix.id, fix.sku)
        elif fix.show is False:
            fields.update(
                {"Published": False}
                if action == "unpublish"
                else {"Visibility": "Hidden"}
                if action == "hide"
                else {"DisableBuyButton": True}
            )
            if fix.id not in self._hidden:
                await self._remember_hidden(fix.id, fix.sku, "Full")
            await self._patch_product(ref, fields)
        elif fields:
            await self._patch_product(ref, fields)

    async def _patch_product(self, ref: _Ref, fields: dict[str, object]) -> None:
        try:
            await self.client.patch_product(ref.id, fields, return_representation=False)
        except SmartstoreNotFound:
            self._skus = None  # deleted in the shop: reload the map next time
            log.info("shop_product_gone", channel=self.section.name, product_id=ref.id)

    async def _patch_combination(self, ref: _Ref, fields: dict[str, object]) -> None:
        try:
            await self.client.patch_combination(ref.id, fields, return_representation=False)
        except SmartstoreNotFound:
            self._skus = None
            log.info("shop_combination_gone", channel=self.section.name, combination=ref.id)

    def _forget(self, sku: str) -> None:
        if self._skus is not None:
            self._skus.pop(sku, None)

    async def _remember_hidden(self, product_id: int, sku: str, previous: str) -> None:
        hidden = _ProductHidden(product_id, sku, previous)
        await self.actor.store.append(
            self.hidden_stream,
            [NewEvent(HIDDEN_EVENT, _encoder.encode(hidden), {"actor": self.target})],
        )
        self._hidden[product_id] = hidden

    async def _remember_shown(self, product_id: int, sku: str) -> None:
        shown = _ProductShown(product_id, sku)
        await self.actor.store.append(
            self.hidden_stream,
            [NewEvent(SHOWN_EVENT, _encoder.encode(shown), {"actor": self.target})],
        )
        self._hidden.pop(product_id, None)

    async def _within_max_top(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call`, once more if the shop refused a page size above a MaxTop it just told us.

        The client pages by the last `Smartstore-Api-MaxTop` it saw, 120 before the first
        answer; a shop configured lower refuses that first page (400) and names its limit.
        """
        before = self.client.max_top
        try:
            return await call()
        except SmartstoreRejected:
            if self.client.max_top >= before:
                raise
            return await call()

    # -- the catalogue ------------------------------------------------------------------------

    async def catalogue(self) -> AsyncIterator[Sequence[ShopItem]]:
        action = self.section.sold_out_action
        after = 0
        while True:
            products = await self._within_max_top(partial(self.client.products, after_id=after))
            # Products managed by attributes keep their stock in their combinations.
            yield [
                ShopItem(
                    sku=p.sku,
                    kind="product",
                    id=p.id,
                    product_id=p.id,
                    stock=p.stock_quantity,
                    shown=shown_state(p.published, p.visibility, p.disable_buy_button, action),
                )
                for p in products.products
                if p.sku and p.manage_inventory_method_id != MANAGE_BY_ATTRIBUTES
            ]
            if not products.has_more or not products.products:
                break
            after = products.last_id
        after = 0
        while True:
            combinations = await self._within_max_top(
                partial(self.client.combinations, after_id=after)
            )
            yield [
                ShopItem(
                    sku=c.sku,
                    kind="combination",
                    id=c.id,
                    product_id=c.product_id,
                    stock=c.stock_quantity,
                    shown=c.is_active,
                )
                for c in combinations.combinations
                if c.sku
            ]
            if not combinations.has_more or not combinations.combinations:
                break
            after = combinations.last_id


@asynccontextmanager
async def smartstore_driver(actor: ChannelActor) -> AsyncIterator[SmartstoreDriver]:
    section = actor.section
    if section.url is None or section.public_key is None or section.secret_key_file is None:
        raise ValueError(f"channel {section.name!r}: smartstore needs url, public_key and key")
    secret = section.secret_key_file.lines()[0].reveal()
    # Connections: stock pushes (stock_sync_concurrency at once), order effects, one poll and
    # one reconciliation.
    connections = section.stock_sync_concurrency + ORDER_EFFECT_CONCURRENCY + 2
    async with smartstore_http_client(
        section.url, section.public_key, secret, max_connections=connections
    ) as http:
        driver = SmartstoreDriver(SmartstoreClient(http, system=actor.target), actor)
        await driver.load()
        yield driver


DRIVERS["smartstore"] = smartstore_driver

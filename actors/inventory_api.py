"""HTTP routes for stock: reports from a POS or WMS, and one SKU's stock everywhere.

`PUT /v1/locations/{location}/stock` takes the contract's bare array `[{"sku", "on_hand"}]`
(counted now) or an object `{"as_of", "counts", "complete"}` for a source that knows when it
counted and whether the list is its whole range. Checks run cheapest first: the location
exists (404), the body is JSON (400), it validates (422 with the JSON path: negative on hand,
a SKU listed twice, a time without a timezone or in the future). Only then does the inventory
actor see it, and the answer - rows counted, stale rows ignored, reservations the counts no
longer cover - is sent once the counts are committed.

`GET /v1/stock` pages through every SKU the stock table knows, each shown as
`GET /v1/inventory/{sku}` shows it (the console's stock page). All routes need the admin
token: a stock report changes what every shop sells.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from actors.inventory import GetPositions, Inventory, ReportStock
from somsd.actor import ReplyError
from somsd.api import ApiError, ApiRoute, decode_body, json_response, query_int
from somsd.domain.atp import (
    MAX_ON_HAND,
    ChannelStockPolicy,
    Oversold,
    StaleCount,
    StockCount,
    StockPosition,
    StockReport,
    StockReportDecision,
)
from somsd.store import Connection, utc_now

__all__ = ["InventoryRoutes"]

# A report dated ahead of our clock by more than this is refused: a POS with a wrong clock
# would otherwise make every honest report after it look stale until that time came. Five
# minutes covers clocks that NTP keeps in sync and still catches a wrong day or time zone.
MAX_CLOCK_SKEW = timedelta(minutes=5)
# SKUs are short codes; a longer one is a mapping error, not an article.
MAX_SKU_LENGTH = 200


class CountBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sku: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_SKU_LENGTH)]
    on_hand: Annotated[int, msgspec.Meta(ge=0, le=MAX_ON_HAND)]


class ReportBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A stock report with its count time; `complete`: SKUs not listed are counted as 0."""

    as_of: Annotated[datetime, msgspec.Meta(tz=True)]
    counts: tuple[CountBody, ...]
    complete: bool = False


StockReportBody = list[CountBody] | ReportBody


class StockReportAnswer(msgspec.Struct, frozen=True):
    location: str
    as_of: datetime
    counted: int  # rows applied
    stale: tuple[StaleCount, ...]  # rows ignored: a newer count was already applied
    oversold: tuple[Oversold, ...]  # reservations the new counts no longer cover


class LocationStock(msgspec.Struct, frozen=True):
    on_hand: int
    reserved: int
    safety: int
    atp: int  # signed: negative means below safety stock or oversold
    as_of: datetime | None  # the newest count applied; null: never counted


class ChannelStock(msgspec.Struct, frozen=True):
    available: int  # what the channel may sell: positive ATP summed over its locations


class InventoryView(msgspec.Struct, frozen=True):
    sku: str
    locations: dict[str, LocationStock]
    channels: dict[str, ChannelStock]


class StockPage(msgspec.Struct, frozen=True):
    """`GET /v1/stock`: SKUs in order, each as `GET /v1/inventory/{sku}` shows it."""

    items: tuple[InventoryView, ...]
    channels: tuple[str, ...]  # every channel selling from stock (the views' channel keys)
    next_cursor: str | None  # the last SKU of this page, to pass as `cursor`; null: no more


STOCK_PAGE: Final = 50
MAX_STOCK_PAGE: Final = 200

_body_decoder = msgspec.json.Decoder(StockReportBody)


def _stock_skus(
    conn: Connection, *, location: str | None, prefix: str, after: str, limit: int
) -> list[str]:
    """SKUs the stock table knows (at `location`), starting with `prefix`, after `after`."""
    rows = conn.execute(
        "SELECT DISTINCT sku FROM stock_levels WHERE sku > ? AND substr(sku, 1, ?) = ? "
        "AND (? IS NULL OR location = ?) ORDER BY sku LIMIT ?",
        (after, len(prefix), prefix, location, location, limit),
    ).fetchall()
    return [row[0] for row in rows]


def _decode_report(raw: bytes) -> tuple[datetime | None, tuple[CountBody, ...], bool, str]:
    """(as_of or None for "now", counts, complete, JSON path of the counts array)."""
    body = decode_body(raw, _body_decoder)
    if isinstance(body, ReportBody):
        return body.as_of, body.counts, body.complete, "$.counts"
    return None, tuple(body), False, "$"


class InventoryRoutes:
    """Builds the stock routes around the inventory actor and the live config."""

    def __init__(
        self,
        inventory: Inventory,
        *,
        locations: Callable[[], set[str]],
        channels: Callable[[], Sequence[ChannelStockPolicy]],
        now: Callable[[], datetime] = utc_now,
        on_oversold: Callable[[tuple[Oversold, ...]], Awaitable[None]] | None = None,
    ) -> None:
        self.inventory = inventory
        self._locations = locations
        self._channels = channels
        self._now = now
        # Reservations a count no longer covers are routed again by whoever owns fulfilments
        # (the fulfilment desk); the inventory only reports them.
        self._on_oversold = on_oversold

    async def _ask(self, make: Callable[[Any], Any]) -> Any:
        try:
            return await self.inventory.ask(make)
        except ReplyError as exc:
            raise ApiError(503, "unavailable", str(exc)) from None
        except ValueError as exc:  # the actor refused the request itself (a count out of range)
            raise ApiError(422, "invalid_body", str(exc)) from None

    async def report_stock(self, request: Request) -> Response:
        location = request.path_params["location"]
        if location not in self._locations():
            raise ApiError(404, "unknown_location", f"no location {location!r} in the config")
        as_of, counts, complete, path = _decode_report(await request.body())
        now = self._now()
        if as_of is None:
            as_of = now
        elif as_of > now + MAX_CLOCK_SKEW:
            raise ApiError(
                422,
                "as_of_in_future",
                f"as_of {as_of.isoformat()} is ahead of somsd's clock ({now.isoformat()}); "
                "check the sender's clock and time zone",
                "$.as_of",
            )
        first_row: dict[str, int] = {}
        for index, count in enumerate(counts):
            seen = first_row.setdefault(count.sku, index)
            if seen != index:
                raise ApiError(
                    422,
                    "duplicate_sku",
                    f"SKU {count.sku!r} is listed twice (also at index {seen}); send each once",
                    f"{path}[{index}].sku",
                )
        report = StockReport(
            location,
            as_of,
            tuple(StockCount(count.sku, count.on_hand) for count in counts),
            complete,
        )
        decision: StockReportDecision = await self._ask(lambda reply: ReportStock(report, reply))
        if decision.oversold and self._on_oversold is not None:
            await self._on_oversold(decision.oversold)
        counted = 0 if decision.counted is None else len(decision.counted.counts)
        return json_response(
            StockReportAnswer(location, as_of, counted, decision.stale, decision.oversold)
        )

    async def show_sku(self, request: Request) -> Response:
        sku = request.path_params["sku"]
        view = await self._view(sku)
        if view is None:
            raise ApiError(404, "unknown_sku", f"no stock report or reservation names {sku!r}")
        return json_response(view)

    async def list_stock(self, request: Request) -> Response:
        params = request.query_params
        limit = min(query_int(params, "limit", STOCK_PAGE, 1, 1_000_000), MAX_STOCK_PAGE)
        location = params.get("location") or None
        if location is not None and location not in self._locations():
            raise ApiError(404, "unknown_location", f"no location {location!r} in the config")
        skus = await self.inventory.store.read(
            partial(
                _stock_skus,
                location=location,
                prefix=params.get("sku", "")[:MAX_SKU_LENGTH],
                after=params.get("cursor", "")[:MAX_SKU_LENGTH],
                limit=limit,
            )
        )
        views = [view for sku in skus if (view := await self._view(sku)) is not None]
        channels = tuple(channel.name for channel in self._channels())
        next_cursor = skus[-1] if len(skus) == limit else None
        return json_response(StockPage(tuple(views), channels, next_cursor))

    async def _view(self, sku: str) -> InventoryView | None:
        positions: tuple[StockPosition, ...] = await self._ask(
            lambda reply: GetPositions(sku, reply)
        )
        if not positions:
            return None
        by_location = {p.location: p for p in positions}
        safety = self.inventory.safety
        # Configured locations that never counted the SKU are shown too: "0 here" is an answer
        # an operator looks for.
        for location in sorted(self._locations() - by_location.keys()):
            held = safety.safety_stock_for(sku, location)
            by_location[location] = StockPosition(sku, location, 0, 0, held, -held, None)
        channels = {
            channel.name: ChannelStock(
                sum(max(p.atp, 0) for p in positions if p.location in channel.locations)
            )
            for channel in self._channels()
        }
        return InventoryView(
            sku,
            {
                name: LocationStock(p.on_hand, p.reserved, p.safety, p.atp, p.as_of)
                for name, p in sorted(by_location.items())
            },
            channels,
        )

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(
                "/v1/locations/{location}/stock",
                "PUT",
                self.report_stock,
                "Stock report from a POS or WMS: absolute on-hand counts; answered once stored",
                admin=True,
                request=StockReportBody,
                responses={200: StockReportAnswer, 400: None, 404: None, 422: None, 503: None},
                tags=("inventory",),
            ),
            ApiRoute(
                "/v1/stock",
                "GET",
                self.list_stock,
                "Every SKU's stock, a page at a time: per location and per channel",
                admin=True,
                responses={200: StockPage, 404: None, 422: None, 503: None},
                tags=("inventory",),
                query=(
                    ("location", "string", "only SKUs this location counted or reserved"),
                    ("sku", "string", "only SKUs starting with this"),
                    ("cursor", "string", "next_cursor of the previous page"),
                    (
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 1_000_000},
                        f"page size (default {STOCK_PAGE}, at most {MAX_STOCK_PAGE} served)",
                    ),
                ),
            ),
            ApiRoute(
                "/v1/inventory/{sku}",
                "GET",
                self.show_sku,
                "One SKU: on hand, reserved, safety stock and ATP per location; "
                "what each channel may sell",
                admin=True,
                responses={200: InventoryView, 404: None, 503: None},
                tags=("inventory",),
            ),
        ]

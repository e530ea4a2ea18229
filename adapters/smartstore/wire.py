"""Smartstore Web API (OData v4) entities as JSON carries them, shared by client and simulator.

Field names are Smartstore's (PascalCase, via `rename="pascal"`: `order_guid` <-> `OrderGuid`).
Amounts are `Decimal`, decoded straight from the JSON number text (msgspec never goes through
float for a `Decimal` field), and encoded back as JSON numbers by `ENCODER`. Datetimes must
carry an offset (the API serialises UTC `DateTimeOffset`s with `Z`). Unknown fields are ignored:
shops run different versions and plugins add properties.

Navigation properties (`OrderItems`, `BillingAddress`, `Product`, `Country` ...) are present only
when the request `$expand`ed them; they default to None / empty.

Bounds: an answer that is not plausibly a shop's (an order with more than `MAX_ORDER_ITEMS`
lines, a text field over `MAX_TEXT` characters) fails decoding, and the client reports that as
`SmartstoreProtocolViolation` rather than pouring it into the event log.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Final, Generic, TypeVar

import msgspec

__all__ = [
    "ENCODER",
    "MAX_ORDER_ITEMS",
    "MAX_PAGE_ROWS",
    "MAX_TEXT",
    "CombinationsPage",
    "CombinationsPageBody",
    "ODataError",
    "ODataErrorBody",
    "ODataErrorDetail",
    "ODataPage",
    "OrderNotesPage",
    "OrdersPage",
    "OrdersPageBody",
    "ProductsPage",
    "ProductsPageBody",
    "RawPageBody",
    "RejectedRow",
    "RowKey",
    "ShipmentInfo",
    "ShipmentsPage",
    "SsAddress",
    "SsCombination",
    "SsCountry",
    "SsOrder",
    "SsOrderItem",
    "SsOrderNote",
    "SsProduct",
    "SsProductRef",
    "SsShipment",
    "UtcDateTime",
]

MAX_ORDER_ITEMS: Final = 1000
# Page size ceiling we accept whatever MaxTop says: an owner can raise MaxTop, but a page of
# more than this many rows is a misconfigured shop or not a shop.
MAX_PAGE_ROWS: Final = 10_000
# Longest text we keep from a shop field. AttributeDescription is HTML and may be long; 8 KB
# is far above any name, address or note a human types.
MAX_TEXT: Final = 8192

Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT)]
UtcDateTime = Annotated[datetime, msgspec.Meta(tz=True)]

# Amounts as JSON numbers, as the shop sends them.
ENCODER: Final = msgspec.json.Encoder(decimal_format="number")


class _Entity(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """Base: PascalCase names, unknown fields ignored."""


class SsCountry(_Entity, frozen=True, kw_only=True):
    id: int
    name: Text = ""
    two_letter_iso_code: Text | None = None
    three_letter_iso_code: Text | None = None


class SsAddress(_Entity, frozen=True, kw_only=True):
    id: int
    salutation: Text | None = None
    title: Text | None = None
    first_name: Text | None = None
    last_name: Text | None = None
    email: Text | None = None
    company: Text | None = None
    country_id: int | None = None
    state_province_id: int | None = None
    city: Text | None = None
    address1: Text | None = None
    address2: Text | None = None
    zip_postal_code: Text | None = None
    phone_number: Text | None = None
    country: SsCountry | None = None  # $expand=Country


class SsProductRef(_Entity, frozen=True, kw_only=True):
    """`OrderItem.Product` expanded with `$select=Name` (more fields when selected)."""

    id: int | None = None
    name: Text | None = None
    sku: Text | None = None


class SsOrderItem(_Entity, frozen=True, kw_only=True):
    id: int
    order_item_guid: Text | None = None
    order_id: int
    product_id: int
    sku: Text | None = None  # stored since 5.0.5/5.1.0; older items have none
    quantity: int
    unit_price_incl_tax: Decimal = Decimal(0)
    unit_price_excl_tax: Decimal = Decimal(0)
    price_incl_tax: Decimal = Decimal(0)
    price_excl_tax: Decimal = Decimal(0)
    tax_rate: Decimal = Decimal(0)
    discount_amount_incl_tax: Decimal = Decimal(0)
    discount_amount_excl_tax: Decimal = Decimal(0)
    attribute_description: Text | None = None
    raw_attributes: Text | None = None
    product: SsProductRef | None = None  # $expand=Product


class SsOrderNote(_Entity, frozen=True, kw_only=True):
    id: int = 0
    order_id: int
    note: Text
    display_to_customer: bool = False
    created_on_utc: UtcDateTime | None = None


class SsShipment(_Entity, frozen=True, kw_only=True):
    id: int
    order_id: int
    tracking_number: Text | None = None
    tracking_url: Text | None = None
    total_weight: Decimal | None = None
    shipped_date_utc: UtcDateTime | None = None
    delivery_date_utc: UtcDateTime | None = None
    created_on_utc: UtcDateTime | None = None


class SsOrder(_Entity, frozen=True, kw_only=True):
    id: int
    # Never null in Smartstore's schema; optional here so one odd row cannot fail a page.
    order_number: Text | None = None
    order_guid: Text | None = None
    store_id: int = 0
    customer_id: int = 0
    billing_address_id: int = 0
    shipping_address_id: int | None = None
    payment_method_system_name: Text | None = None
    customer_currency_code: Text | None = None
    currency_rate: Decimal = Decimal(1)
    order_subtotal_incl_tax: Decimal = Decimal(0)
    order_subtotal_excl_tax: Decimal = Decimal(0)
    order_sub_total_discount_incl_tax: Decimal = Decimal(0)
    order_sub_total_discount_excl_tax: Decimal = Decimal(0)
    order_shipping_incl_tax: Decimal = Decimal(0)
    order_shipping_excl_tax: Decimal = Decimal(0)
    order_shipping_tax_rate: Decimal = Decimal(0)
    payment_method_additional_fee_incl_tax: Decimal = Decimal(0)
    payment_method_additional_fee_excl_tax: Decimal = Decimal(0)
    payment_method_additional_fee_tax_rate: Decimal = Decimal(0)
    tax_rates: Text | None = None  # "19:3.99;7:0.5" (rate:tax amount)
    order_tax: Decimal = Decimal(0)
    order_discount: Decimal = Decimal(0)
    credit_balance: Decimal = Decimal(0)
    order_total_rounding: Decimal = Decimal(0)
    order_total: Decimal = Decimal(0)
    refunded_amount: Decimal = Decimal(0)
    customer_order_comment: Text | None = None
    vat_number: Text | None = None
    purchase_order_number: Text | None = None
    paid_date_utc: UtcDateTime | None = None
    shipping_method: Text | None = None
    shipping_rate_computation_method_system_name: Text | None = None
    order_status_id: int = 10
    payment_status_id: int = 10
    shipping_status_id: int = 20
    deleted: bool = False
    created_on_utc: UtcDateTime
    updated_on_utc: UtcDateTime
    # Navigations, present when expanded.
    order_items: Annotated[tuple[SsOrderItem, ...], msgspec.Meta(max_length=MAX_ORDER_ITEMS)] = ()
    billing_address: SsAddress | None = None
    shipping_address: SsAddress | None = None


class SsProduct(_Entity, frozen=True, kw_only=True):
    """A product; with `$select` only the selected fields arrive, the rest keep defaults."""

    id: int
    name: Text = ""
    sku: Text | None = None
    gtin: Text | None = None
    manufacturer_part_number: Text | None = None
    product_type_id: int = 5
    visibility: Text = "Full"  # Full | SearchResults | ProductPage | Hidden
    published: bool = True
    stock_quantity: int = 0
    manage_inventory_method_id: int = 0
    min_stock_quantity: int = 0
    low_stock_activity_id: int = 0
    backorder_mode_id: int = 0
    disable_buy_button: bool = False
    price: Decimal = Decimal(0)
    is_shipping_enabled: bool = True
    is_system_product: bool = False
    created_on_utc: UtcDateTime | None = None
    updated_on_utc: UtcDateTime | None = None


class SsCombination(_Entity, frozen=True, kw_only=True):
    """A `ProductVariantAttributeCombination`: a variant with its own SKU and stock."""

    id: int
    product_id: int
    sku: Text | None = None
    gtin: Text | None = None
    manufacturer_part_number: Text | None = None
    price: Decimal | None = None
    stock_quantity: int = 0
    allow_out_of_stock_orders: bool = False
    is_active: bool = True
    raw_attributes: Text | None = None


class ShipmentInfo(_Entity, frozen=True, kw_only=True):
    """`GET Orders/GetShipmentInfo(id=N)`."""

    has_items_to_dispatch: bool
    has_items_to_deliver: bool
    can_add_items_to_shipment: bool


T = TypeVar("T")


class ODataPage(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """A collection answer: `value` plus `@odata.nextLink` when the server cut the page."""

    value: Annotated[tuple[T, ...], msgspec.Meta(max_length=MAX_PAGE_ROWS)] = ()
    next_link: str | None = msgspec.field(default=None, name="@odata.nextLink")
    count: int | None = msgspec.field(default=None, name="@odata.count")


# Concrete page types (msgspec decoders need them spelled out; aliases keep call sites short).
OrdersPageBody = ODataPage[SsOrder]
RawPageBody = ODataPage[msgspec.Raw]
ProductsPageBody = ODataPage[SsProduct]
CombinationsPageBody = ODataPage[SsCombination]
ShipmentsPage = ODataPage[SsShipment]
OrderNotesPage = ODataPage[SsOrderNote]


class ODataErrorDetail(msgspec.Struct, frozen=True, kw_only=True):
    code: str = ""
    message: str = ""
    target: str | None = None


class ODataError(msgspec.Struct, frozen=True, kw_only=True):
    """The `error` object of §10: `code` is the status as a string."""

    code: str = ""
    message: str = ""
    details: tuple[ODataErrorDetail, ...] = ()


class ODataErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    error: ODataError


# Page results as the client hands them on (with the headers that came with the page).
class RejectedRow(msgspec.Struct, frozen=True, kw_only=True):
    """A row of a page that is not a readable order (absurd sizes, wrong types): reported, so
    the poller records it as a rejected intake and moves on instead of failing the page."""

    id: int | None
    updated_on_utc: datetime | None
    reason: str


class RowKey(msgspec.Struct, frozen=True, kw_only=True, rename="pascal"):
    """The keyset position of a row, read leniently from rows that fail full decoding."""

    id: int | None = None
    updated_on_utc: datetime | None = None


class OrdersPage(msgspec.Struct, frozen=True, kw_only=True):
    orders: tuple[SsOrder, ...]
    server_date: datetime | None  # Smartstore-Api-Date of this answer
    max_top: int | None
    has_more: bool  # the server said there is more (nextLink, or a full page)
    rejected: tuple[RejectedRow, ...] = ()
    # (UpdatedOnUtc, Id) of the page's last row, rejected rows included: continue after it.
    last_key: tuple[datetime, int] | None = None


class ProductsPage(msgspec.Struct, frozen=True, kw_only=True):
    products: tuple[SsProduct, ...]
    has_more: bool
    last_id: int  # keyset cursor for the next call (`after_id`)


class CombinationsPage(msgspec.Struct, frozen=True, kw_only=True):
    combinations: tuple[SsCombination, ...]
    has_more: bool
    last_id: int

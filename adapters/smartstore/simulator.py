"""`SmartstoreSimulator`: a Smartstore Web API (OData v4) shop on loopback, with knobs for trouble.

Serve `sim` (an ASGI app) with `somsd.http`; paths are `/odata/v1/<EntitySet>...`
as on a real shop. Implemented server rules (reference sections in `PROTOCOL.md`):

- Basic auth with the API key pair; failures answer 401 (421 for plain http when
  `knobs.require_https`) with `Smartstore-Api-AuthResultId/Desc` and an OData error body;
- the headers of every answer (`Smartstore-Api-AppVersion/Version/MaxTop/Date`, and
  `Smartstore-Api-CustomerId` on success), the date skewed by `knobs.clock_skew`;
- queries: `$filter` (`eq ne gt ge lt le`, `and or not`, parentheses; on any property of the
  entity set), `$orderby` (several keys, `desc`), `$select`, `$expand` (nested, with
  `$select`/`$expand` inside), `$top` (refused with 400 above MaxTop), `$skip`; without `$top`
  the page is MaxTop rows and `@odata.nextLink` points at the next `$skip`. Keyset filters on
  `Id gt N` over Products and combinations start from a bisect of the sorted ids, so paging
  through 100,000 products costs a page per request, not a scan;
- order actions with the server-side rules: not-allowed = 200 with the unchanged order,
  `AddShipment` ships everything remaining and answers 204 (null) when nothing is left, `Ship`
  on a shipped shipment is a 422 business error, `CheckOrderStatus` auto-completes paid orders
  whose shipping is done; `UpdatedOnUtc` stamped on every order/product change;
- PATCH Products/combinations: 204, or 200 + entity with `Prefer: return=representation`; the
  ProductHook low-stock rule (LowStockActivity DisableBuyButton / Unpublish at or below
  MinStockQuantity, undone when stock rises above it);
- `POST OrderNotes` answers 201; errors in the §10 envelope.

Faults (`SmartstoreKnobs`, mutable while serving): `latency`, `error_rate` (5xx before
anything happens), `fail_next` (exact statuses for the next requests, with `retry_after`),
`lost_response_rate` / `lose_next` (a POST/PATCH is applied, then the connection is dropped:
the client sees `RemoteProtocolError`), `auth_failure` (every request refused with that
reason, e.g. flipped mid-run), `api_enabled`, `require_https`, `max_top`, `clock_skew`.

Run standalone for the demo: `python -m adapters.smartstore --port 0 --products 3000 --rate 2
--credentials-dir DIR --url-file FILE` writes `public_key` and `secret_key` (0600) to DIR and
the bound base url to FILE (`python -m adapters.smartstore.simulator` works too).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import bisect
import math
import operator
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import parse_qs, urlencode

import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from adapters.faults import DroppedResponse, start_simulator
from adapters.smartstore.errors import AccessDeniedReason
from adapters.smartstore.wire import (
    ENCODER,
    ShipmentInfo,
    SsAddress,
    SsCombination,
    SsCountry,
    SsOrder,
    SsOrderItem,
    SsOrderNote,
    SsProduct,
    SsShipment,
)
from adapters.webhookshop.people import CITIES as DE_CITIES
from adapters.webhookshop.people import (
    COMPANIES,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    STREETS,
    ascii_fold,
)

__all__ = [
    "API_VERSION",
    "APP_VERSION",
    "RecordedRequest",
    "SeededCatalogue",
    "SmartstoreKnobs",
    "SmartstoreSimulator",
]

# The shop's version: 6.x takes the `carrier` parameter of AddShipment, 5.x refuses it.
APP_VERSION: Final = "6.4.0.0"
API_VERSION: Final = "1 6.4"
DEFAULT_MAX_TOP: Final = 120
ODATA_PREFIX: Final = "/odata/v1/"

# Enum values of reference §7, as the simulator needs them (the mapping has the IntEnums).
PENDING, PROCESSING, COMPLETE, CANCELLED = 10, 20, 30, 40
PAY_PENDING, PAY_AUTHORIZED, PAY_PAID, PAY_PART_REFUNDED, PAY_REFUNDED, PAY_VOIDED = (
    10, 20, 30, 35, 40, 50,
)  # fmt: skip
SHIP_NOT_REQUIRED, NOT_YET_SHIPPED, PARTIALLY_SHIPPED, SHIPPED, DELIVERED = 10, 20, 25, 30, 40

Kind = Literal[
    "Order", "OrderItem", "Address", "Country", "Product", "Combination", "Shipment", "OrderNote"
]
_TYPES: Final[dict[str, type[msgspec.Struct]]] = {
    "Order": SsOrder,
    "OrderItem": SsOrderItem,
    "Address": SsAddress,
    "Country": SsCountry,
    "Product": SsProduct,
    "Combination": SsCombination,
    "Shipment": SsShipment,
    "OrderNote": SsOrderNote,
}
_SMARTSTORE_TYPES: Final = {
    "Order": "Smartstore.Core.Checkout.Orders.Order",
    "OrderItem": "Smartstore.Core.Checkout.Orders.OrderItem",
    "Address": "Smartstore.Core.Common.Address",
    "Country": "Smartstore.Core.Common.Country",
    "Product": "Smartstore.Core.Catalog.Products.Product",
    "Combination": "Smartstore.Core.Catalog.Attributes.ProductVariantAttributeCombination",
    "Shipment": "Smartstore.Core.Checkout.Shipping.Shipment",
    "OrderNote": "Smartstore.Core.Checkout.Orders.OrderNote",
}
# Navigation properties per kind: name -> (target kind, many?).
_NAV: Final[dict[str, dict[str, tuple[str, bool]]]] = {
    "Order": {
        "OrderItems": ("OrderItem", True),
        "BillingAddress": ("Address", False),
        "ShippingAddress": ("Address", False),
        "Shipments": ("Shipment", True),
        "OrderNotes": ("OrderNote", True),
    },
    "OrderItem": {"Product": ("Product", False), "Order": ("Order", False)},
    "Address": {"Country": ("Country", False)},
    "Product": {"ProductVariantAttributeCombinations": ("Combination", True)},
    "Combination": {"Product": ("Product", False)},
    "Shipment": {"Order": ("Order", False)},
    "OrderNote": {"Order": ("Order", False)},
    "Country": {},
}
_ENTITY_SETS: Final = {
    "orders": "Order",
    "orderitems": "OrderItem",
    "addresses": "Address",
    "countries": "Country",
    "products": "Product",
    "productvariantattributecombinations": "Combination",
    "shipments": "Shipment",
    "ordernotes": "OrderNote",
}
# encoded (lowercase) name -> attribute, per kind; for $filter/$orderby/$select and PATCH.
_FIELDS: Final[dict[str, dict[str, msgspec.structs.FieldInfo]]] = {
    kind: {info.encode_name.lower(): info for info in msgspec.structs.fields(struct)}
    for kind, struct in _TYPES.items()
}

COUNTRIES: Final = (
    SsCountry(id=81, name="Deutschland", two_letter_iso_code="DE", three_letter_iso_code="DEU"),
    SsCountry(id=14, name="Österreich", two_letter_iso_code="AT", three_letter_iso_code="AUT"),
    SsCountry(id=204, name="Schweiz", two_letter_iso_code="CH", three_letter_iso_code="CHE"),
)
AT_CITIES: Final = (("1010", "Wien"), ("8010", "Graz"), ("5020", "Salzburg"), ("6020", "Innsbruck"))
CH_CITIES: Final = (("8001", "Zürich"), ("3011", "Bern"), ("4051", "Basel"), ("6003", "Luzern"))

# (system name, weight, paid at checkout): Smartstore's offline and PayPal/Stripe providers.
PAYMENT_PROVIDERS: Final = (
    ("Payments.Prepayment", 20, False),
    ("Payments.PayPalStandard", 30, True),
    ("Payments.Invoice", 15, False),
    ("Smartstore.StripeElements", 15, True),
    ("Payments.DirectDebit", 10, False),
    ("Payments.CashOnDelivery", 5, False),
    ("Payments.PayPalPayLater", 5, True),
)
COD_FEE: Final = Decimal("2.00")
SHIPPING_STANDARD: Final = ("Standardversand", Decimal("4.90"), "Shipping.FixedRate")
SHIPPING_EXPRESS: Final = ("Expressversand", Decimal("9.90"), "Shipping.FixedRate")
PICKUP_METHOD: Final = "Abholung im Laden"
FREE_SHIPPING_FROM: Final = Decimal("50.00")

_NOUNS: Final = (
    ("Tasse", "19"), ("Teekanne", "19"), ("Schneidebrett", "19"), ("Kochtopf", "19"),
    ("Pfanne", "19"), ("Schreibtischlampe", "19"), ("Kissenbezug", "19"), ("Wolldecke", "19"),
    ("Rucksack", "19"), ("Brotdose", "19"), ("Trinkflasche", "19"), ("Notizbuch", "19"),
    ("Kochbuch", "7"), ("Kaffeebohnen 500 g", "7"), ("Kräutertee 100 g", "7"),
    ("Honig 250 g", "7"), ("Olivenöl 500 ml", "7"), ("Bilderbuch", "7"),
)  # fmt: skip
_ADJECTIVES: Final = (
    "Steingut", "Bio", "Eiche", "Edelstahl", "Leinen", "Handgemacht", "Klassik", "Nordisch",
    "Regional", "Premium", "Vintage", "Alpen",
)  # fmt: skip
_VISIBILITIES: Final = ("Full", "SearchResults", "ProductPage", "Hidden")
_COLOURS: Final = ("blau", "grün", "rot", "anthrazit", "sand", "weiß")
_SIZES: Final = ("S", "M", "L", "XL")
_SHIRTS: Final = ("T-Shirt Bio-Baumwolle", "Kapuzenpullover", "Strickjacke", "Sweatshirt")


@dataclass
class SmartstoreKnobs:
    """What can go wrong and how the shop is configured; see the module docstring."""

    max_top: int = DEFAULT_MAX_TOP
    app_version: str = APP_VERSION  # "5.1.0.0" for a 5.x shop
    require_https: bool = False
    api_enabled: bool = True
    auth_failure: AccessDeniedReason | None = None
    clock_skew: float = 0.0  # seconds added to Smartstore-Api-Date (and to every stamp)
    latency: float = 0.0
    error_rate: float = 0.0
    error_status: int = 500
    retry_after: float | None = None  # Retry-After on injected errors
    fail_next: deque[int] = field(default_factory=deque)  # statuses for the next requests
    lost_response_rate: float = 0.0
    lose_next: int = 0  # drop the answers of the next N successful writes
    adjust_inventory: bool = True  # placing/cancelling orders moves stock, as Smartstore does
    # Permissions the API user's role lacks (403): order.read, order.update,
    # order.editshipment, catalog.product.read, catalog.product.update,
    # catalog.product.editvariant.
    denied_permissions: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator saw it; `status` None means the connection was dropped."""

    method: str
    path: str
    query: str
    status: int | None
    body: bytes = b""

    def param(self, name: str) -> str | None:
        values = parse_qs(self.query).get(name)
        return values[0] if values else None


@dataclass(frozen=True)
class SeededCatalogue:
    """What `seed_catalogue` created, so reconciliation tests compare counts exactly.

    `truth` is the stock somsd should hold per SKU (what a test reports into somsd); the shop
    agrees with it except for the listed drift. `parent_skus` are products managed by
    attributes, whose stock lives in their combinations (not in `truth`).
    """

    truth: dict[str, int]
    wrongly_unpublished: frozenset[str]
    wrongly_shown: frozenset[str]
    stock_drift: dict[str, tuple[int, int]]  # sku -> (shop's StockQuantity, truth)
    unknown_in_shop: frozenset[str]
    missing_in_shop: frozenset[str]
    parent_skus: frozenset[str]
    combination_skus: frozenset[str]


class _ODataFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- query language ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<lp>\()|(?P<rp>\))|(?P<str>'(?:[^']|'')*')"
    r"|(?P<dt>\d{4}-\d\d-\d\dT\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?)"
    r"|(?P<num>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*))"
)
_OPS: Final = {"eq", "ne", "gt", "ge", "lt", "le"}
Ast = tuple[Any, ...]


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    text = text.rstrip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise _ODataFailure(400, f"Syntax error at position {position} in '{text}'.")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        position = match.end()
    return tokens


def parse_filter(text: str) -> Ast:
    """`$filter` into a tuple tree: ("or"|"and", a, b), ("not", a), ("cmp", field, op, value)."""
    tokens = _tokens(text)
    position = 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take() -> tuple[str, str]:
        nonlocal position
        if position >= len(tokens):
            raise _ODataFailure(400, f"Unexpected end of $filter '{text}'.")
        position += 1
        return tokens[position - 1]

    def keyword(word: str) -> bool:
        token = peek()
        return token is not None and token[0] == "name" and token[1].lower() == word

    def or_expr() -> Ast:
        left = and_expr()
        while keyword("or"):
            take()
            left = ("or", left, and_expr())
        return left

    def and_expr() -> Ast:
        left = unary()
        while keyword("and"):
            take()
            left = ("and", left, unary())
        return left

    def unary() -> Ast:
        if keyword("not"):
            take()
            return ("not", unary())
        token = peek()
        if token is not None and token[0] == "lp":
            take()
            inner = or_expr()
            if take()[0] != "rp":
                raise _ODataFailure(400, f"')' expected in $filter '{text}'.")
            return inner
        name = take()
        if name[0] != "name":
            raise _ODataFailure(400, f"Property name expected in $filter, got '{name[1]}'.")
        op = take()
        if op[0] != "name" or op[1].lower() not in _OPS:
            raise _ODataFailure(400, f"Comparison operator expected after '{name[1]}'.")
        return ("cmp", name[1], op[1].lower(), literal(take()))

    def literal(token: tuple[str, str]) -> object:
        kind, value = token
        if kind == "str":
            return value[1:-1].replace("''", "'")
        if kind == "dt":
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if kind == "num":
            return Decimal(value) if "." in value else int(value)
        if kind == "name" and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if kind == "name" and value.lower() == "null":
            return None
        raise _ODataFailure(400, f"Literal expected in $filter, got '{value}'.")

    tree = or_expr()
    if position != len(tokens):
        raise _ODataFailure(400, f"Unexpected '{tokens[position][1]}' in $filter '{text}'.")
    return tree


_ORDERINGS: Final[dict[str, Callable[[Any, Any], Any]]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}


def _compare(left: object, op: str, right: object) -> bool:
    if op == "eq":
        return left == right
    if op == "ne":
        return left != right
    if left is None or right is None:
        return False
    try:
        return bool(_ORDERINGS[op](left, right))
    except TypeError as exc:
        raise _ODataFailure(400, f"Cannot compare {left!r} with {right!r}.") from exc


def _bind(tree: Ast, kind: str) -> Callable[[Any], bool]:
    """A predicate over entities of `kind`; unknown properties are a 400 as on the server."""
    match tree:
        case ("or", a, b):
            left, right = _bind(a, kind), _bind(b, kind)
            return lambda row: left(row) or right(row)
        case ("and", a, b):
            left, right = _bind(a, kind), _bind(b, kind)
            return lambda row: left(row) and right(row)
        case ("not", a):
            inner = _bind(a, kind)
            return lambda row: not inner(row)
        case ("cmp", name, op, value):
            attr = _attribute(kind, name)
            if isinstance(value, str) and name.lower() == "visibility":
                value = value.rsplit("'", 1)[-1] if "'" in value else value
            return lambda row: _compare(getattr(row, attr), op, value)
    raise AssertionError(f"unknown filter node {tree!r}")


def _attribute(kind: str, name: str) -> str:
    info = _FIELDS[kind].get(name.lower())
    if info is None or name in _NAV[kind]:
        raise _ODataFailure(
            400, f"Could not find a property named '{name}' on type '{_SMARTSTORE_TYPES[kind]}'."
        )
    return info.name


def _id_floor(tree: Ast) -> int | None:
    """N when the filter requires `Id gt N` (or `ge N+1`) at its top level: the keyset."""
    match tree:
        case ("cmp", name, "gt", int(value)) if name.lower() == "id":
            return value
        case ("cmp", name, "ge", int(value)) if name.lower() == "id":
            return value - 1
        case ("and", a, b):
            floors = [f for f in (_id_floor(a), _id_floor(b)) if f is not None]
            return max(floors) if floors else None
    return None


def _stamp_floor(tree: Ast) -> datetime | None:
    """The earliest UpdatedOnUtc the filter can match, when it says (`ge`/`gt`/`eq` under
    `and`, or under both arms of an `or`)."""
    match tree:
        case ("cmp", name, "ge" | "gt" | "eq", datetime() as value) if (
            name.lower() == "updatedonutc"
        ):
            return value
        case ("and", a, b):
            floors = [f for f in (_stamp_floor(a), _stamp_floor(b)) if f is not None]
            return max(floors) if floors else None
        case ("or", a, b):  # the keyset continuation: both arms start at the last row's stamp
            left, right = _stamp_floor(a), _stamp_floor(b)
            return min(left, right) if left is not None and right is not None else None
    return None


@dataclass
class _Options:
    select: list[str] | None = None
    expand: dict[str, _Options] = field(default_factory=dict)


def _split_top(text: str, separator: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise _ODataFailure(400, f"Unbalanced parentheses in '{text}'.")
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth:
        raise _ODataFailure(400, f"Unbalanced parentheses in '{text}'.")
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


def parse_expand(text: str, kind: str, depth: int = 1) -> dict[str, _Options]:
    if depth > 8:
        raise _ODataFailure(400, "The $expand depth exceeds the maximum of 8.")
    result: dict[str, _Options] = {}
    for item in _split_top(text, ","):
        name, _, rest = item.partition("(")
        name = name.strip()
        nav = {key.lower(): key for key in _NAV[kind]}.get(name.lower())
        if nav is None:
            raise _ODataFailure(
                400,
                f"Could not find a property named '{name}' on type '{_SMARTSTORE_TYPES[kind]}'.",
            )
        target = _NAV[kind][nav][0]
        options = _Options()
        if rest:
            inner = rest[:-1] if rest.endswith(")") else rest
            for option in _split_top(inner, ";"):
                key, _, value = option.partition("=")
                if key.strip().lower() == "$select":
                    options.select = _parse_select(value, target)
                elif key.strip().lower() == "$expand":
                    options.expand = parse_expand(value, target, depth + 1)
        result[nav] = options
    return result


def _parse_select(text: str, kind: str) -> list[str]:
    return [_FIELDS[kind][_attribute_key(kind, name)].encode_name for name in text.split(",")]


def _attribute_key(kind: str, name: str) -> str:
    _attribute(kind, name.strip())
    return name.strip().lower()


# -- the shop ----------------------------------------------------------------------------------


class SmartstoreSimulator:
    """A Smartstore shop speaking the Web API; serve `sim` (ASGI) and optionally run a shopper."""

    def __init__(
        self,
        *,
        knobs: SmartstoreKnobs | None = None,
        public_key: str = "sim-public-key",
        secret_key: str = "sim-secret-key",  # noqa: S107  # the simulator's published test key
        customer_id: int = 1,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
        first_order_id: int = 1,  # a fresh shop per run into one somsd data dir starts higher
    ) -> None:
        self.knobs = knobs or SmartstoreKnobs()
        # public key -> (secret key, customer id, enabled)
        self.users: dict[str, tuple[str, int, bool]] = {public_key: (secret_key, customer_id, True)}
        self.public_key, self.secret_key = public_key, secret_key
        self.requests: list[RecordedRequest] = []
        # Seconds spent answering (without the latency knob): the simulator's own share of a
        # benchmark, to subtract from what a client measures.
        self.busy_seconds = 0.0
        self._clock = clock
        self._rng = random.Random(seed)
        self.countries: dict[int, SsCountry] = {country.id: country for country in COUNTRIES}
        self.products: dict[int, SsProduct] = {}
        self._product_ids: list[int] = []  # ascending: ids are handed out in order
        self.product_tax: dict[int, Decimal] = {}
        self.combinations: dict[int, SsCombination] = {}
        self._combination_ids: list[int] = []
        self._product_combinations: dict[int, list[int]] = {}
        self._sku_products: dict[str, int] = {}
        self._sku_combinations: dict[str, int] = {}
        self.orders: dict[int, SsOrder] = {}
        # (UpdatedOnUtc, Id) index: every save appends (stamps only grow), stale rows are
        # skipped on read; a poll page then costs a bisect and a page, not a sort.
        self._order_stamps: list[datetime] = []
        self._order_stamp_ids: list[int] = []
        self._stamps_sorted = True
        self.order_items: dict[int, list[SsOrderItem]] = {}
        self.addresses: dict[int, SsAddress] = {}
        self.shipments: dict[int, SsShipment] = {}
        self._order_shipments: dict[int, list[int]] = {}
        self.shipment_items: dict[int, dict[int, int]] = {}  # shipment -> order item -> qty
        self.shipment_carriers: dict[int, str] = {}  # the "Carrier" generic attribute
        self.notes: dict[int, list[SsOrderNote]] = {}
        self.seeded: SeededCatalogue | None = None
        self._next_id: dict[str, int] = {"Order": first_order_id - 1}
        self._last_stamp = datetime.min.replace(tzinfo=UTC)
        self.app = Starlette(
            routes=[
                Route(
                    ODATA_PREFIX + "{path:path}",
                    self._endpoint,
                    methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
                )
            ]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- time and ids --------------------------------------------------------------------

    def now(self) -> datetime:
        """The shop's clock (skewed by the knob), strictly increasing between stamps."""
        moment = datetime.fromtimestamp(self._clock() + self.knobs.clock_skew, UTC)
        if moment <= self._last_stamp:
            moment = self._last_stamp + timedelta(microseconds=1)
        self._last_stamp = moment
        return moment

    def _id(self, kind: str) -> int:
        value = self._next_id.get(kind, 0) + 1
        self._next_id[kind] = value
        return value

    # -- catalogue -----------------------------------------------------------------------

    def add_product(
        self,
        sku: str,
        *,
        name: str | None = None,
        stock: int = 10,
        price: Decimal = Decimal("19.90"),
        tax_rate: Decimal = Decimal(19),
        published: bool = True,
        manage_inventory: int = 1,
        low_stock_activity: int = 0,
        min_stock: int = 0,
        visibility: str = "Full",
        gtin: str | None = None,
    ) -> SsProduct:
        product_id = self._id("Product")
        stamp = self.now()
        product = SsProduct(
            id=product_id,
            name=name or sku,
            sku=sku,
            gtin=gtin,
            stock_quantity=stock,
            manage_inventory_method_id=manage_inventory,
            low_stock_activity_id=low_stock_activity,
            min_stock_quantity=min_stock,
            published=published,
            visibility=visibility,
            price=price,
            created_on_utc=stamp,
            updated_on_utc=stamp,
        )
        self.products[product_id] = product
        self._product_ids.append(product_id)
        self.product_tax[product_id] = tax_rate
        self._sku_products[sku] = product_id
        return product

    def add_combination(
        self, product_id: int, sku: str, *, stock: int = 5, price: Decimal | None = None
    ) -> SsCombination:
        combination_id = self._id("Combination")
        combination = SsCombination(
            id=combination_id, product_id=product_id, sku=sku, stock_quantity=stock, price=price
        )
        self.combinations[combination_id] = combination
        self._combination_ids.append(combination_id)
        self._product_combinations.setdefault(product_id, []).append(combination_id)
        self._sku_combinations[sku] = combination_id
        return combination

    def product_by_sku(self, sku: str) -> SsProduct | None:
        product_id = self._sku_products.get(sku)
        return self.products[product_id] if product_id is not None else None

    def combination_by_sku(self, sku: str) -> SsCombination | None:
        combination_id = self._sku_combinations.get(sku)
        return self.combinations[combination_id] if combination_id is not None else None

    def stock_of(self, sku: str) -> int | None:
        """The shop's StockQuantity for a product or combination SKU."""
        combination = self.combination_by_sku(sku)
        if combination is not None:
            return combination.stock_quantity
        product = self.product_by_sku(sku)
        return product.stock_quantity if product is not None else None

    def seed_catalogue(  # noqa: PLR0915  # one recipe, read top to bottom
        self,
        n_products: int,
        *,
        combination_share: float = 0.05,
        sold_out_share: float = 0.1,
        wrongly_unpublished: int = 0,
        wrongly_shown: int = 0,
        stock_drift: int = 0,
        unknown_in_shop: int = 0,
        missing_in_shop: int = 0,
        low_stock_unpublish_share: float = 0.0,
        sold_out_action: Literal["unpublish", "hide", "disable_buy"] = "unpublish",
        seed: int = 0,
    ) -> SeededCatalogue:
        """A realistic catalogue of `n_products` products; drift exactly as asked (disjoint).

        Products managed by attributes get 3-4 combinations (sizes) with their own SKUs, the
        first always in stock (so every parent is rightly shown); drift is chosen among simple
        products. Sold-out products are hidden the `sold_out_action` way (Published false,
        Visibility Hidden, or DisableBuyButton), and "wrongly" means against that rule.
        """
        rng = random.Random(seed)
        truth: dict[str, int] = {}
        simple: list[str] = []
        parents: set[str] = set()
        combination_skus: set[str] = set()
        for index in range(n_products):
            number = len(self.products) + 1
            if rng.random() < combination_share:
                sku = f"SS-{number:06d}"
                parent = self.add_product(
                    sku,
                    name=f"{rng.choice(_SHIRTS)} {rng.choice(_COLOURS)}",
                    stock=0,
                    price=_price(rng),
                    manage_inventory=2,
                    gtin=_gtin(number),
                )
                parents.add(sku)
                for position, size in enumerate(_SIZES[: rng.choice((3, 4))]):
                    # The first size is always in stock: a parent is rightly shown.
                    sold_out = position > 0 and rng.random() < sold_out_share
                    stock = 0 if sold_out else rng.randint(1, 40)
                    combination = self.add_combination(parent.id, f"{sku}-{size}", stock=stock)
                    assert combination.sku is not None
                    truth[combination.sku] = stock
                    combination_skus.add(combination.sku)
                continue
            noun, rate = rng.choice(_NOUNS)
            sku = f"SS-{number:06d}"
            stock = 0 if rng.random() < sold_out_share else rng.randint(1, 60)
            self.add_product(
                sku,
                name=f"{noun} {rng.choice(_ADJECTIVES)}",
                stock=stock,
                price=_price(rng),
                tax_rate=Decimal(rate),
                low_stock_activity=2 if rng.random() < low_stock_unpublish_share else 0,
                gtin=_gtin(number),
            )
            self._seed_set(sku, **_visibility(sold_out_action, shown=stock > 0))
            truth[sku] = stock
            simple.append(sku)
            del index
        wanted = wrongly_unpublished + wrongly_shown + stock_drift
        if wanted > len(simple):
            raise ValueError(f"{wanted} drifted products asked for, only {len(simple)} simple")
        chosen = rng.sample(simple, wanted)
        unpublished = chosen[:wrongly_unpublished]
        shown = chosen[wrongly_unpublished : wrongly_unpublished + wrongly_shown]
        drifted = chosen[wrongly_unpublished + wrongly_shown :]
        for sku in unpublished:
            if truth[sku] == 0:
                truth[sku] = rng.randint(1, 30)
            self._seed_set(
                sku, stock_quantity=truth[sku], **_visibility(sold_out_action, shown=False)
            )
        for sku in shown:
            truth[sku] = 0
            self._seed_set(sku, stock_quantity=0, **_visibility(sold_out_action, shown=True))
        drift: dict[str, tuple[int, int]] = {}
        for sku in drifted:
            if truth[sku] == 0:
                truth[sku] = rng.randint(1, 30)
            shop = truth[sku] + rng.choice((-1, 1)) * rng.randint(1, 5)
            shop = shop if shop > 0 and shop != truth[sku] else truth[sku] + rng.randint(1, 5)
            self._seed_set(sku, stock_quantity=shop, **_visibility(sold_out_action, shown=True))
            drift[sku] = (shop, truth[sku])
        unknown = set()
        for index in range(unknown_in_shop):
            sku = f"SS-UNKNOWN-{index + 1:04d}"
            self.add_product(sku, name=f"Altbestand {index + 1}", stock=rng.randint(1, 9))
            unknown.add(sku)
        missing = set()
        for index in range(missing_in_shop):
            sku = f"SS-MISSING-{index + 1:04d}"
            truth[sku] = rng.randint(1, 20)
            missing.add(sku)
        self.seeded = SeededCatalogue(
            truth=truth,
            wrongly_unpublished=frozenset(unpublished),
            wrongly_shown=frozenset(shown),
            stock_drift=drift,
            unknown_in_shop=frozenset(unknown),
            missing_in_shop=frozenset(missing),
            parent_skus=frozenset(parents),
            combination_skus=frozenset(combination_skus),
        )
        return self.seeded

    def _seed_set(self, sku: str, **changes: Any) -> None:
        product_id = self._sku_products[sku]
        self.products[product_id] = msgspec.structs.replace(self.products[product_id], **changes)

    # -- orders placed in the shop ----------------------------------------------------------

    def place_order(  # noqa: PLR0915  # one checkout, read top to bottom
        self,
        lines: Sequence[tuple[str, int]] | None = None,
        *,
        payment_method: str | None = None,
        paid: bool | None = None,
        shipping: Literal["standard", "express", "pickup"] | None = None,
        country: str | None = None,
        rng: random.Random | None = None,
        item_overrides: Sequence[Mapping[str, Any]] | None = None,
        order_overrides: Mapping[str, Any] | None = None,
    ) -> SsOrder:
        """A checkout as Smartstore records it: consistent totals, tax per rate, addresses.

        `lines` are (SKU, quantity) of products or combinations; None picks 1-4 random
        published products. `item_overrides`/`order_overrides` replace fields afterwards, to
        produce bad shop data in tests (zero quantity, totals off, no country).
        """
        rng = rng or self._rng
        if lines is None:
            lines = self._random_lines(rng)
        if payment_method is None:
            names = [name for name, _, _ in PAYMENT_PROVIDERS]
            weights = [weight for _, weight, _ in PAYMENT_PROVIDERS]
            payment_method = rng.choices(names, weights)[0]
        if paid is None:
            paid = next((p for name, _, p in PAYMENT_PROVIDERS if name == payment_method), False)
        if shipping is None:
            shipping = rng.choices(("standard", "express", "pickup"), (80, 12, 8))[0]
        if country is None:
            country = rng.choices(("DE", "AT", "CH"), (85, 10, 5))[0]
        order_id = self._id("Order")
        stamp = self.now()
        items: list[SsOrderItem] = []
        tax: dict[Decimal, Decimal] = {}
        subtotal_gross = subtotal_net = Decimal(0)
        for sku, quantity in lines:
            product, combination = self._resolve_sku(sku)
            unit = combination.price if combination and combination.price else product.price
            rate = self.product_tax.get(product.id, Decimal(19))
            gross = unit * quantity
            net = _net(gross, rate)
            unit_net = _net(unit, rate)
            tax[rate] = tax.get(rate, Decimal(0)) + gross - net
            subtotal_gross += gross
            subtotal_net += net
            items.append(
                SsOrderItem(
                    id=self._id("OrderItem"),
                    order_item_guid=_guid(rng),
                    order_id=order_id,
                    product_id=product.id,
                    sku=sku,
                    quantity=quantity,
                    unit_price_incl_tax=unit,
                    unit_price_excl_tax=unit_net,
                    price_incl_tax=gross,
                    price_excl_tax=net,
                    tax_rate=rate,
                    attribute_description=(
                        f"Größe: {sku.rsplit('-', 1)[-1]}" if combination is not None else None
                    ),
                )
            )
            if self.knobs.adjust_inventory:
                self._adjust_stock(product, combination, -quantity)
        if shipping == "pickup":
            method, ship_gross, rate_method = PICKUP_METHOD, Decimal(0), "Shipping.FixedRate"
        elif shipping == "express":
            method, ship_gross, rate_method = SHIPPING_EXPRESS
        else:
            method, ship_gross, rate_method = SHIPPING_STANDARD
            if subtotal_gross >= FREE_SHIPPING_FROM:
                ship_gross = Decimal("0.00")
        fee_gross = COD_FEE if payment_method == "Payments.CashOnDelivery" else Decimal(0)
        standard = Decimal(19)
        ship_net, fee_net = _net(ship_gross, standard), _net(fee_gross, standard)
        for gross, net in ((ship_gross, ship_net), (fee_gross, fee_net)):
            if gross:
                tax[standard] = tax.get(standard, Decimal(0)) + gross - net
        billing = self._address(rng, country)
        shipping_address = billing if shipping != "pickup" else None
        total = subtotal_gross + ship_gross + fee_gross
        order = SsOrder(
            id=order_id,
            order_number=str(1000 + order_id),
            order_guid=_guid(rng),
            store_id=1,
            customer_id=1000 + rng.randrange(5000),
            billing_address_id=billing.id,
            shipping_address_id=shipping_address.id if shipping_address else None,
            payment_method_system_name=payment_method,
            customer_currency_code="EUR",
            order_subtotal_incl_tax=subtotal_gross,
            order_subtotal_excl_tax=subtotal_net,
            order_shipping_incl_tax=ship_gross,
            order_shipping_excl_tax=ship_net,
            order_shipping_tax_rate=standard,
            payment_method_additional_fee_incl_tax=fee_gross,
            payment_method_additional_fee_excl_tax=fee_net,
            payment_method_additional_fee_tax_rate=standard if fee_gross else Decimal(0),
            tax_rates=";".join(f"{_plain(rate)}:{_plain(amount)}" for rate, amount in tax.items()),
            order_tax=sum(tax.values(), Decimal(0)),
            order_total=total,
            paid_date_utc=stamp if paid else None,
            shipping_method=method,
            shipping_rate_computation_method_system_name=rate_method,
            order_status_id=PROCESSING if paid else PENDING,
            payment_status_id=PAY_PAID if paid else PAY_PENDING,
            shipping_status_id=NOT_YET_SHIPPED,
            created_on_utc=stamp,
            updated_on_utc=stamp,
        )
        if item_overrides:
            items = [
                msgspec.structs.replace(item, **dict(change))
                for item, change in zip(items, item_overrides, strict=False)
            ] + items[len(item_overrides) :]
        if order_overrides:
            order = msgspec.structs.replace(order, **dict(order_overrides))
        self.order_items[order_id] = items
        self._store_order(order)
        self.notes[order_id] = []
        return order

    def _random_lines(self, rng: random.Random) -> list[tuple[str, int]]:
        if not self._product_ids:
            raise ValueError("the shop has no products; seed_catalogue first")
        lines: dict[str, int] = {}
        for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
            product = self.products[rng.choice(self._product_ids)]
            if product.manage_inventory_method_id == 2:
                variants = [
                    self.combinations[c] for c in self._product_combinations.get(product.id, [])
                ]
                if not variants:
                    continue
                sku = rng.choice(variants).sku
            else:
                sku = product.sku
            if sku:
                lines[sku] = lines.get(sku, 0) + rng.choice((1, 1, 1, 1, 2, 3))
        if not lines:
            product = self.products[self._product_ids[0]]
            lines[product.sku or ""] = 1
        return list(lines.items())

    def _resolve_sku(self, sku: str) -> tuple[SsProduct, SsCombination | None]:
        combination = self.combination_by_sku(sku)
        if combination is not None:
            return self.products[combination.product_id], combination
        product = self.product_by_sku(sku)
        if product is None:
            raise KeyError(f"no product or combination with SKU {sku!r}")
        return product, None

    def _address(self, rng: random.Random, country: str) -> SsAddress:
        first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
        cities = {"DE": DE_CITIES, "AT": AT_CITIES, "CH": CH_CITIES}.get(country, DE_CITIES)
        zip_code, city = rng.choice(cities)
        country_row = next(
            (c for c in self.countries.values() if c.two_letter_iso_code == country), None
        )
        address = SsAddress(
            id=self._id("Address"),
            first_name=first,
            last_name=last,
            email=f"{ascii_fold(first).lower()}.{ascii_fold(last).lower()}@"
            f"{rng.choice(EMAIL_DOMAINS)}",
            company=rng.choice(COMPANIES) if rng.random() < 0.1 else None,
            country_id=country_row.id if country_row else None,
            city=city,
            address1=f"{rng.choice(STREETS)} {rng.randint(1, 120)}",
            zip_postal_code=zip_code,
        )
        self.addresses[address.id] = address
        return address

    async def run_shopper(
        self,
        rate: float = 1.0,
        count: int | None = None,
        *,
        seed: int = 1,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Place `rate` orders per second (forever, or `count` of them), trio-timed.

        `await nursery.start(sim.run_shopper, 5.0)` or `partial(sim.run_shopper, rate=5.0)`.
        """
        rng = random.Random(seed)
        interval = 1.0 / rate if rate > 0 else math.inf
        task_status.started()
        placed = 0
        next_at = trio.current_time()
        while count is None or placed < count:
            next_at += interval
            await trio.sleep_until(next_at)
            self.place_order(rng=rng)
            placed += 1

    # -- merchant actions in the shop back office ---------------------------------------------

    def update_order(self, order_id: int, **changes: Any) -> SsOrder:
        """Change an order as the back office would (stamps UpdatedOnUtc)."""
        order = msgspec.structs.replace(self.orders[order_id], **changes)
        return self._save_order(order)

    def cancel_in_shop(self, order_id: int) -> SsOrder:
        return self._cancel(order_id)

    def mark_paid_in_shop(self, order_id: int) -> SsOrder:
        return self._payment_paid(order_id)

    # -- order rules (reference §8) -----------------------------------------------------------

    def _save_order(self, order: SsOrder) -> SsOrder:
        order = msgspec.structs.replace(order, updated_on_utc=self.now())
        self._store_order(order)
        return order

    def _store_order(self, order: SsOrder) -> None:
        if self._order_stamps and order.updated_on_utc <= self._order_stamps[-1]:
            self._stamps_sorted = False  # a test override set an older stamp
        self.orders[order.id] = order
        self._order_stamps.append(order.updated_on_utc)
        self._order_stamp_ids.append(order.id)

    def _orders_from(self, floor: datetime | None) -> Iterator[SsOrder]:
        """Current orders in (UpdatedOnUtc, Id) order from `floor` on."""
        stamps, ids = self._order_stamps, self._order_stamp_ids
        start = bisect.bisect_left(stamps, floor) if floor is not None else 0
        for index in range(start, len(stamps)):
            order = self.orders.get(ids[index])
            if order is not None and order.updated_on_utc == stamps[index]:
                yield order

    def _note(self, order_id: int, text: str, *, display_to_customer: bool = False) -> SsOrderNote:
        note = SsOrderNote(
            id=self._id("OrderNote"),
            order_id=order_id,
            note=text,
            display_to_customer=display_to_customer,
            created_on_utc=self.now(),
        )
        self.notes.setdefault(order_id, []).append(note)
        return note

    def _check_order_status(self, order: SsOrder) -> SsOrder:
        """`CheckOrderStatusAsync`: Pending -> Processing, Processing -> Complete."""
        status = order.order_status_id
        if status == PENDING and (
            order.payment_status_id in (PAY_AUTHORIZED, PAY_PAID)
            or order.shipping_status_id in (PARTIALLY_SHIPPED, SHIPPED, DELIVERED)
        ):
            status = PROCESSING
        if (
            status not in (CANCELLED, COMPLETE)
            and order.payment_status_id == PAY_PAID
            and order.shipping_status_id in (SHIP_NOT_REQUIRED, DELIVERED)
        ):
            status = COMPLETE
        if status != order.order_status_id:
            order = msgspec.structs.replace(order, order_status_id=status)
        return order

    def _payment_paid(self, order_id: int) -> SsOrder:
        order = self.orders[order_id]
        if order.order_status_id == CANCELLED or order.payment_status_id in (
            PAY_PAID,
            PAY_REFUNDED,
            PAY_VOIDED,
        ):
            return order  # CanMarkOrderAsPaid() is false: no-op, unchanged
        order = msgspec.structs.replace(order, payment_status_id=PAY_PAID, paid_date_utc=self.now())
        self._note(order_id, "Order has been marked as paid")
        return self._save_order(self._check_order_status(order))

    def _cancel(self, order_id: int) -> SsOrder:
        order = self.orders[order_id]
        if order.order_status_id == CANCELLED:
            return order
        if self.knobs.adjust_inventory:
            for item in self.order_items.get(order_id, []):
                if item.sku is not None and item.sku in self._sku_combinations:
                    product, combination = self._resolve_sku(item.sku)
                else:
                    product, combination = self.products.get(item.product_id), None  # type: ignore[assignment]
                if product is not None:
                    self._adjust_stock(product, combination, item.quantity)
        self._note(order_id, "Order has been cancelled")
        return self._save_order(msgspec.structs.replace(order, order_status_id=CANCELLED))

    def _complete(self, order_id: int) -> SsOrder:
        order = self.orders[order_id]
        if order.order_status_id in (COMPLETE, CANCELLED):
            return order
        self._note(order_id, "Order has been marked as complete")
        return self._save_order(msgspec.structs.replace(order, order_status_id=COMPLETE))

    def _remaining(self, order_id: int) -> dict[int, int]:
        """Order item id -> quantity not yet in any shipment."""
        remaining = {item.id: item.quantity for item in self.order_items.get(order_id, [])}
        for shipment in self.shipments_of(order_id):
            for item_id, quantity in self.shipment_items[shipment.id].items():
                remaining[item_id] = remaining.get(item_id, 0) - quantity
        return {item_id: qty for item_id, qty in remaining.items() if qty > 0}

    def _add_shipment(
        self,
        order_id: int,
        *,
        tracking_number: str,
        tracking_url: str,
        carrier: str | None,
        is_shipped: bool,
    ) -> SsShipment | None:
        order = self.orders[order_id]
        if order.shipping_status_id == SHIP_NOT_REQUIRED:
            return None
        remaining = self._remaining(order_id)
        if not remaining:
            return None
        shipment = SsShipment(
            id=self._id("Shipment"),
            order_id=order_id,
            tracking_number=tracking_number or None,
            tracking_url=tracking_url or None,
            created_on_utc=self.now(),
        )
        self.shipments[shipment.id] = shipment
        self._order_shipments.setdefault(order_id, []).append(shipment.id)
        self.shipment_items[shipment.id] = remaining
        if carrier:
            self.shipment_carriers[shipment.id] = carrier
        self._note(order_id, f"Shipment #{shipment.id} has been added")
        if is_shipped:
            return self._ship(shipment.id)
        self._save_order(order)
        return shipment

    def _ship(self, shipment_id: int) -> SsShipment:
        shipment = self.shipments[shipment_id]
        if shipment.shipped_date_utc is not None:
            raise _ODataFailure(422, "This shipment is already shipped.")
        shipment = msgspec.structs.replace(shipment, shipped_date_utc=self.now())
        self.shipments[shipment_id] = shipment
        order = self.orders[shipment.order_id]
        status = SHIPPED if self._all_shipped(order.id) else PARTIALLY_SHIPPED
        self._note(order.id, f"Shipment #{shipment_id} has been sent")
        order = msgspec.structs.replace(order, shipping_status_id=status)
        self._save_order(self._check_order_status(order))
        return shipment

    def _deliver(self, shipment_id: int) -> SsShipment:
        shipment = self.shipments[shipment_id]
        if shipment.shipped_date_utc is None:
            raise _ODataFailure(422, "This shipment has not been shipped yet.")
        if shipment.delivery_date_utc is not None:
            raise _ODataFailure(422, "This shipment is already delivered.")
        shipment = msgspec.structs.replace(shipment, delivery_date_utc=self.now())
        self.shipments[shipment_id] = shipment
        order = self.orders[shipment.order_id]
        delivered = self._all_shipped(order.id) and all(
            s.delivery_date_utc is not None for s in self.shipments_of(order.id)
        )
        self._note(order.id, f"Shipment #{shipment_id} has been delivered")
        if delivered:
            order = msgspec.structs.replace(order, shipping_status_id=DELIVERED)
        self._save_order(self._check_order_status(order))
        return shipment

    def _all_shipped(self, order_id: int) -> bool:
        if self._remaining(order_id):
            return False
        return all(s.shipped_date_utc is not None for s in self.shipments_of(order_id))

    def shipments_of(self, order_id: int) -> list[SsShipment]:
        return [self.shipments[s] for s in self._order_shipments.get(order_id, [])]

    # -- stock rules (reference §9) -------------------------------------------------------------

    def _adjust_stock(
        self, product: SsProduct, combination: SsCombination | None, delta: int
    ) -> None:
        if combination is not None and product.manage_inventory_method_id == 2:
            self.combinations[combination.id] = msgspec.structs.replace(
                combination, stock_quantity=combination.stock_quantity + delta
            )
        elif product.manage_inventory_method_id == 1:
            changed = msgspec.structs.replace(
                product, stock_quantity=product.stock_quantity + delta
            )
            self._store_product(self._low_stock_hook(product, changed))

    def _low_stock_hook(self, old: SsProduct, new: SsProduct) -> SsProduct:
        """ProductHook -> AdjustInventory: the shop hides or shows by itself at MinStock."""
        if new.manage_inventory_method_id != 1 or old.stock_quantity == new.stock_quantity:
            return new
        floor = new.min_stock_quantity
        low_now = new.stock_quantity <= floor
        low_before = old.stock_quantity <= floor
        if low_now and not low_before:
            if new.low_stock_activity_id == 1:
                return msgspec.structs.replace(new, disable_buy_button=True)
            if new.low_stock_activity_id == 2:
                return msgspec.structs.replace(new, published=False)
        if low_before and not low_now:
            if new.low_stock_activity_id == 1:
                return msgspec.structs.replace(new, disable_buy_button=False)
            if new.low_stock_activity_id == 2:
                return msgspec.structs.replace(new, published=True)
        return new

    def _store_product(self, product: SsProduct) -> SsProduct:
        product = msgspec.structs.replace(product, updated_on_utc=self.now())
        self.products[product.id] = product
        return product

    # -- HTTP ---------------------------------------------------------------------------------

    def _headers(self, customer_id: int | None) -> dict[str, str]:
        date = datetime.fromtimestamp(self._clock() + self.knobs.clock_skew, UTC)
        headers = {
            "Smartstore-Api-AppVersion": self.knobs.app_version,
            "Smartstore-Api-Version": "1 " + ".".join(self.knobs.app_version.split(".")[:2]),
            "Smartstore-Api-MaxTop": str(self.knobs.max_top),
            # Seven fractional digits, as .NET writes them.
            "Smartstore-Api-Date": date.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z",
        }
        if customer_id is not None:
            headers["Smartstore-Api-CustomerId"] = str(customer_id)
            headers["Cache-Control"] = "no-cache"
        return headers

    def _error(
        self,
        status: int,
        message: str,
        *,
        customer_id: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Response:
        body = ENCODER.encode({"error": {"code": str(status), "message": message}})
        headers = self._headers(customer_id) | dict(extra or {})
        return Response(body, status, headers=headers, media_type="application/json")

    def _authenticate(self, request: Request) -> tuple[int | None, Response | None]:
        """(customer id, None) or (None, the refusal)."""
        reason = self.knobs.auth_failure
        customer_id: int | None = None
        if reason is None and self.knobs.require_https and request.url.scheme != "https":
            reason = AccessDeniedReason.SSL_REQUIRED
        if reason is None and not self.knobs.api_enabled:
            reason = AccessDeniedReason.API_DISABLED
        if reason is None:
            public_key, secret = _basic_credentials(request.headers.get("authorization", ""))
            user = self.users.get(public_key) if public_key is not None else None
            if public_key is None or secret is None:
                reason = AccessDeniedReason.INVALID_AUTHORIZATION_HEADER
            elif user is None:
                reason = AccessDeniedReason.USER_UNKNOWN
            elif not user[2]:
                reason = AccessDeniedReason.USER_DISABLED
            elif f"{public_key}:{user[0]}" != f"{public_key}:{secret}":
                reason = AccessDeniedReason.INVALID_CREDENTIALS
            else:
                customer_id = user[1]
        if reason is None:
            return customer_id, None
        name = _reason_name(reason)
        status = 421 if reason is AccessDeniedReason.SSL_REQUIRED else 401
        message = f"Access to the Web API was denied ({name})."
        return None, self._error(
            status,
            message,
            extra={
                "WWW-Authenticate": 'Basic realm="Smartstore.WebApi", charset="UTF-8"',
                "Smartstore-Api-AuthResultId": str(int(reason)),
                "Smartstore-Api-AuthResultDesc": name,
            },
        )

    async def _endpoint(self, request: Request) -> Response:
        body = await request.body()
        started = time.perf_counter()
        response = await self._answer(request, body)
        self.busy_seconds += time.perf_counter() - started - max(0.0, self.knobs.latency)
        status = None if isinstance(response, DroppedResponse) else response.status_code
        self.requests.append(
            RecordedRequest(
                method=request.method,
                path=request.url.path,
                query=request.url.query,
                status=status,
                body=body if request.method != "GET" else b"",
            )
        )
        return response

    async def _answer(self, request: Request, body: bytes) -> Response:
        knobs = self.knobs
        if knobs.latency > 0:
            await trio.sleep(knobs.latency)
        injected = knobs.fail_next.popleft() if knobs.fail_next else None
        if injected is None and knobs.error_rate and self._rng.random() < knobs.error_rate:
            injected = knobs.error_status
        if injected is not None:
            extra = {"Retry-After": f"{knobs.retry_after:g}"} if knobs.retry_after else None
            return self._error(injected, "Simulated failure.", extra=extra)
        customer_id, refusal = self._authenticate(request)
        if refusal is not None:
            return refusal
        permission = _permission(request.method, request.path_params["path"])
        if permission in knobs.denied_permissions:
            return self._error(
                403,
                f"Access denied: the permission '{permission}' is required.",
                customer_id=customer_id,
            )
        try:
            response = self._route(request, body, customer_id)
        except _ODataFailure as exc:
            return self._error(exc.status, exc.message, customer_id=customer_id)
        if request.method != "GET" and response.status_code < 300:
            if knobs.lose_next > 0:
                knobs.lose_next -= 1
                return DroppedResponse()
            if knobs.lost_response_rate and self._rng.random() < knobs.lost_response_rate:
                return DroppedResponse()
        return response

    def _json(self, payload: object, customer_id: int | None, status: int = 200) -> Response:
        return Response(
            ENCODER.encode(payload),
            status,
            headers=self._headers(customer_id),
            media_type="application/json",
        )

    _PATH = re.compile(
        r"^(?P<set>[A-Za-z]+)(?:\((?P<key>[^)]*)\))?"
        r"(?:/(?P<sub>[A-Za-z]+)(?:\((?P<args>[^)]*)\))?)?/?$"
    )

    def _route(self, request: Request, body: bytes, customer_id: int | None) -> Response:
        path = request.path_params["path"]
        match = self._PATH.match(path)
        kind = _ENTITY_SETS.get(match.group("set").lower()) if match else None
        if match is None or kind is None:
            raise _ODataFailure(404, f"No route for '{path}'.")
        key_text, sub, args = match.group("key"), match.group("sub"), match.group("args")
        method = request.method
        params = request.query_params
        if key_text is None and sub is None:
            if method == "GET":
                return self._json(self._collection(request, kind), customer_id)
            if method == "POST" and kind == "OrderNote":
                return self._json(self._post_note(body, params), customer_id, 201)
            raise _ODataFailure(405, f"{method} is not supported on this entity set.")
        if key_text is None and kind == "Order" and sub == "GetShipmentInfo":
            order_id = _int_arg(args or "", "id")
            return self._json(self._shipment_info(self._require(kind, order_id)), customer_id)
        if key_text is None or not key_text.strip().isdigit():
            raise _ODataFailure(400, f"Invalid key '{key_text}'.")
        key = int(key_text)
        entity = self._require(kind, key)
        if sub is None:
            if method == "GET":
                options = _Options(
                    select=_parse_select(params["$select"], kind) if "$select" in params else None,
                    expand=parse_expand(params["$expand"], kind) if "$expand" in params else {},
                )
                return self._json(self._render(kind, entity, options), customer_id)
            if method in ("PATCH", "PUT") and kind in ("Product", "Combination"):
                updated = self._patch(kind, key, body)
                if "return=representation" in request.headers.get("prefer", ""):
                    return self._json(self._render(kind, updated, _Options()), customer_id)
                return Response(status_code=204, headers=self._headers(customer_id))
            raise _ODataFailure(405, f"{method} is not supported here.")
        if method == "GET" and sub in _NAV[kind] and _NAV[kind][sub][1]:
            children = self._navigate(kind, entity, sub)
            target = _NAV[kind][sub][0]
            return self._json(
                {"value": [self._render(target, child, _Options()) for child in children]},
                customer_id,
            )
        if method == "POST":
            arguments = _action_body(body)
            result = self._action(kind, key, sub, arguments)
            if result is None:
                return Response(status_code=204, headers=self._headers(customer_id))
            result_kind = "Shipment" if isinstance(result, SsShipment) else "Order"
            return self._json(self._render(result_kind, result, _Options()), customer_id)
        raise _ODataFailure(404, f"No route for '{path}'.")

    def _require(self, kind: str, key: int) -> Any:
        table = self._table(kind)
        entity = table.get(key) if table is not None else None
        if entity is None:
            raise _ODataFailure(404, f"Cannot find {kind} entity with identifier {key}.")
        return entity

    def _table(self, kind: str) -> Mapping[int, Any] | None:
        tables: dict[str, Mapping[int, Any]] = {
            "Order": self.orders,
            "Product": self.products,
            "Combination": self.combinations,
            "Shipment": self.shipments,
            "Address": self.addresses,
            "Country": self.countries,
        }
        return tables.get(kind)

    def _action(self, kind: str, key: int, action: str, arguments: Mapping[str, Any]) -> Any:
        lowered = action.lower()
        if kind == "Order":
            if lowered == "paymentpaid":
                return self._payment_paid(key)
            if lowered == "cancel":
                return self._cancel(key)
            if lowered == "completeorder":
                return self._complete(key)
            if lowered == "addshipment":
                if "carrier" in arguments and self.knobs.app_version.startswith("5."):
                    raise _ODataFailure(
                        400, "The parameter 'carrier' is not in the action's parameter list."
                    )
                return self._add_shipment(
                    key,
                    tracking_number=str(arguments.get("trackingnumber") or ""),
                    tracking_url=str(arguments.get("trackingurl") or ""),
                    carrier=str(arguments["carrier"]) if arguments.get("carrier") else None,
                    is_shipped=bool(arguments.get("isshipped", False)),
                )
        if kind == "Shipment":
            if lowered == "ship":
                return self._ship(key)
            if lowered == "deliver":
                return self._deliver(key)
        raise _ODataFailure(404, f"No action '{action}' on {kind}.")

    def _shipment_info(self, order: SsOrder) -> dict[str, bool]:
        shipments = self.shipments_of(order.id)
        info = ShipmentInfo(
            has_items_to_dispatch=any(s.shipped_date_utc is None for s in shipments),
            has_items_to_deliver=any(
                s.shipped_date_utc is not None and s.delivery_date_utc is None for s in shipments
            ),
            can_add_items_to_shipment=bool(self._remaining(order.id)),
        )
        return msgspec.to_builtins(info)  # type: ignore[no-any-return]

    def _post_note(self, body: bytes, params: Mapping[str, str]) -> dict[str, Any]:
        try:
            note = msgspec.json.decode(body, type=SsOrderNote)
        except msgspec.DecodeError as exc:
            raise _ODataFailure(400, f"Invalid OrderNote: {exc}") from exc
        self._require("Order", note.order_id)
        created = self._note(note.order_id, note.note, display_to_customer=note.display_to_customer)
        return self._render("OrderNote", created, _Options())

    def _patch(self, kind: str, key: int, body: bytes) -> Any:
        try:
            changes = msgspec.json.decode(body)
        except msgspec.DecodeError as exc:
            raise _ODataFailure(400, f"The request body is not valid JSON: {exc}") from exc
        if not isinstance(changes, dict):
            raise _ODataFailure(400, "The request body must be a JSON object.")
        old = self._require(kind, key)
        current = msgspec.to_builtins(old, builtin_types=(Decimal, datetime))
        for name, value in changes.items():
            info = _FIELDS[kind].get(str(name).lower())
            if info is None or info.encode_name == "Id":
                raise _ODataFailure(
                    400,
                    f"The property '{name}' does not exist on type '{_SMARTSTORE_TYPES[kind]}'.",
                )
            current[info.encode_name] = value
        visibility = current.get("Visibility")
        if kind == "Product" and visibility not in _VISIBILITIES:
            raise _ODataFailure(
                400,
                f"The value '{visibility}' is not valid for ProductVisibility; "
                f"use one of {', '.join(_VISIBILITIES)}.",
            )
        try:
            new = msgspec.convert(current, type=_TYPES[kind], strict=False)
        except msgspec.ValidationError as exc:
            raise _ODataFailure(400, f"Invalid value: {exc}") from exc
        if isinstance(new, SsProduct):
            return self._store_product(self._low_stock_hook(old, new))
        assert isinstance(new, SsCombination)
        self.combinations[key] = new
        product = self.products.get(new.product_id)
        if product is not None:
            self._store_product(product)
        return new

    # -- queries ------------------------------------------------------------------------------

    def _collection(self, request: Request, kind: str) -> dict[str, Any]:
        params = request.query_params
        max_top = self.knobs.max_top
        top_text, skip_text = params.get("$top"), params.get("$skip", "0")
        if top_text is not None and (not top_text.isdigit() or int(top_text) > max_top):
            raise _ODataFailure(
                400,
                f"The limit of '{max_top}' for Top query has been exceeded. The value from the "
                f"incoming request is '{top_text}'.",
            )
        if not skip_text.isdigit():
            raise _ODataFailure(400, f"Invalid $skip '{skip_text}'.")
        top = int(top_text) if top_text is not None else max_top
        skip = int(skip_text)
        tree = parse_filter(params["$filter"]) if params.get("$filter") else None
        predicate = _bind(tree, kind) if tree is not None else None
        order_keys = self._order_keys(kind, params.get("$orderby", "Id"))
        options = _Options(
            select=_parse_select(params["$select"], kind) if "$select" in params else None,
            expand=parse_expand(params["$expand"], kind) if "$expand" in params else {},
        )
        by_stamp = (
            kind == "Order"
            and self._stamps_sorted
            and order_keys == [("updated_on_utc", False), ("id", False)]
        )
        if by_stamp:
            rows: Iterator[Any] = self._orders_from(_stamp_floor(tree) if tree else None)
        else:
            rows = self._candidates(kind, tree, order_keys)
        if predicate is not None:
            rows = (row for row in rows if predicate(row))
        if not by_stamp and order_keys != [("id", False)]:
            rows = iter(_sorted(list(rows), order_keys))
        page: list[Any] = []
        seen = 0
        more = False
        for row in rows:
            if seen < skip:
                seen += 1
                continue
            if len(page) == top:
                more = True
                break
            page.append(row)
        payload: dict[str, Any] = {
            "@odata.context": f"{request.base_url}odata/v1/$metadata#{request.path_params['path']}",
            "value": [self._render(kind, row, options) for row in page],
        }
        # The server pages by itself when the client did not ask for a size [inferred].
        if more and top_text is None:
            query = dict(params) | {"$skip": str(skip + top)}
            payload["@odata.nextLink"] = f"{request.url.replace(query=urlencode(query))}"
        return payload

    def _order_keys(self, kind: str, text: str) -> list[tuple[str, bool]]:
        keys = []
        for part in text.split(","):
            words = part.split()
            if not words:
                continue
            keys.append((_attribute(kind, words[0]), len(words) > 1 and words[1].lower() == "desc"))
        return keys or [("id", False)]

    def _candidates(
        self, kind: str, tree: Ast | None, order_keys: list[tuple[str, bool]]
    ) -> Iterator[Any]:
        """Rows in Id order; from the keyset floor by bisect where the ids are kept sorted."""
        ids = {"Product": self._product_ids, "Combination": self._combination_ids}.get(kind)
        if ids is not None:
            table = self._table(kind)
            assert table is not None
            floor = _id_floor(tree) if tree is not None else None
            start = bisect.bisect_right(ids, floor) if floor is not None else 0
            return (table[ids[index]] for index in range(start, len(ids)))
        if kind == "OrderItem":
            return (item for items in self.order_items.values() for item in items)
        if kind == "OrderNote":
            return (note for notes in self.notes.values() for note in notes)
        table = self._table(kind)
        assert table is not None
        return iter(sorted(table.values(), key=lambda row: row.id))

    def _navigate(self, kind: str, entity: Any, nav: str) -> list[Any]:
        if kind == "Order":
            if nav == "OrderItems":
                return list(self.order_items.get(entity.id, []))
            if nav == "BillingAddress":
                return _one(self.addresses.get(entity.billing_address_id))
            if nav == "ShippingAddress":
                return _one(
                    self.addresses.get(entity.shipping_address_id)
                    if entity.shipping_address_id
                    else None
                )
            if nav == "Shipments":
                return self.shipments_of(entity.id)
            if nav == "OrderNotes":
                return list(self.notes.get(entity.id, []))
        if kind == "OrderItem" and nav == "Product":
            return _one(self.products.get(entity.product_id))
        if kind in ("OrderItem", "Shipment", "OrderNote") and nav == "Order":
            return _one(self.orders.get(entity.order_id))
        if kind == "Address" and nav == "Country":
            return _one(self.countries.get(entity.country_id) if entity.country_id else None)
        if kind == "Product" and nav == "ProductVariantAttributeCombinations":
            return [self.combinations[c] for c in self._product_combinations.get(entity.id, [])]
        if kind == "Combination" and nav == "Product":
            return _one(self.products.get(entity.product_id))
        return []

    def _render(self, kind: str, entity: Any, options: _Options) -> dict[str, Any]:
        row: dict[str, Any] = msgspec.to_builtins(entity, builtin_types=(Decimal, datetime))
        for nav in _NAV[kind]:
            row.pop(nav, None)
        if options.select is not None:
            row = {name: row[name] for name in options.select if name in row}
        for nav, inner in options.expand.items():
            target, many = _NAV[kind][nav]
            children = self._navigate(kind, entity, nav)
            rendered = [self._render(target, child, inner) for child in children]
            row[nav] = rendered if many else (rendered[0] if rendered else None)
        return row


def _visibility(action: str, *, shown: bool) -> dict[str, Any]:
    """The product fields that show or hide it under a `sold_out_action`."""
    if shown:
        return {"published": True, "visibility": "Full", "disable_buy_button": False}
    if action == "hide":
        return {"published": True, "visibility": "Hidden", "disable_buy_button": False}
    if action == "disable_buy":
        return {"published": True, "visibility": "Full", "disable_buy_button": True}
    return {"published": False, "visibility": "Full", "disable_buy_button": False}


def _permission(method: str, path: str) -> str:
    """The permission Smartstore checks for a call (`Permissions.Checkout/Catalog`)."""
    lowered = path.lower()
    if lowered.startswith(("products", "productvariantattributecombinations")):
        if method == "GET":
            return "catalog.product.read"
        if lowered.startswith("productvariantattributecombinations"):
            return "catalog.product.editvariant"
        return "catalog.product.update"
    if method == "GET":
        return "order.read"
    if any(word in lowered for word in ("shipment", "/ship", "/deliver")):
        return "order.editshipment"
    return "order.update"


def _sorted(rows: list[Any], keys: list[tuple[str, bool]]) -> list[Any]:
    for attr, descending in reversed(keys):
        rows.sort(key=lambda row, attr=attr: _sort_key(getattr(row, attr)), reverse=descending)  # type: ignore[misc]
    return rows


def _sort_key(value: object) -> tuple[int, Any]:
    return (0, None) if value is None else (1, value)


def _one(entity: Any) -> list[Any]:
    return [entity] if entity is not None else []


def _basic_credentials(header: str) -> tuple[str | None, str | None]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None, None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    public_key, separator, secret = decoded.partition(":")
    if not separator or not public_key:
        return None, None
    return public_key, secret


def _reason_name(reason: AccessDeniedReason) -> str:
    return "".join(part.capitalize() for part in reason.name.split("_"))


def _action_body(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise _ODataFailure(400, f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(decoded, dict):
        raise _ODataFailure(400, "Action parameters must be a JSON object.")
    return {str(key).lower(): value for key, value in decoded.items()}


def _int_arg(args: str, name: str) -> int:
    for part in args.split(","):
        key, _, value = part.partition("=")
        if key.strip().lower() == name and value.strip().isdigit():
            return int(value.strip())
    raise _ODataFailure(400, f"Parameter '{name}' missing.")


def _net(gross: Decimal, rate: Decimal) -> Decimal:
    return (gross * 100 / (100 + rate)).quantize(Decimal("0.01"))


def _plain(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text


def _price(rng: random.Random) -> Decimal:
    euros = rng.choice((4, 6, 8, 9, 12, 14, 19, 24, 29, 34, 39, 49, 59, 79, 99, 129, 199))
    cents = rng.choice(("99", "90", "50", "95"))
    return Decimal(f"{euros}.{cents}")


def _gtin(number: int) -> str:
    """An EAN-13 in the German GS1 range (400-440) with a valid check digit."""
    body = f"400{number:09d}"[-12:]
    total = sum(int(digit) * (3 if index % 2 else 1) for index, digit in enumerate(body))
    return body + str((10 - total % 10) % 10)


def _guid(rng: random.Random) -> str:
    hexits = f"{rng.getrandbits(128):032x}"
    return f"{hexits[:8]}-{hexits[8:12]}-4{hexits[13:16]}-a{hexits[17:20]}-{hexits[20:]}"


def write_credentials(directory: Path, sim: SmartstoreSimulator) -> tuple[Path, Path]:
    """`public_key` and `secret_key` files (the secret 0600) for a config to point at."""
    directory.mkdir(parents=True, exist_ok=True)
    public, secret = directory / "public_key", directory / "secret_key"
    public.write_text(sim.public_key + "\n")
    secret.touch(mode=0o600)
    secret.write_text(sim.secret_key + "\n")
    return public, secret


async def _main(args: argparse.Namespace) -> None:

    sim = SmartstoreSimulator(
        knobs=SmartstoreKnobs(
            max_top=args.max_top,
            error_rate=args.error_rate,
            lost_response_rate=args.lost_response_rate,
            latency=args.latency,
        ),
        public_key=args.public_key,
        secret_key=args.secret_key,
        seed=args.seed,
    )
    seeded = sim.seed_catalogue(
        args.products,
        wrongly_unpublished=min(args.wrongly_unpublished, args.products // 4),
        seed=args.seed,
    )
    if args.credentials_dir:
        write_credentials(Path(args.credentials_dir), sim)
    print(f"smartstore simulator: {len(sim.products)} products, {len(seeded.truth)} stock SKUs")
    async with trio.open_nursery() as nursery:
        url = await start_simulator(
            nursery, sim, port=args.port, name="smartstore-sim", url_file=args.url_file
        )
        print(f"serving {url}{ODATA_PREFIX}", flush=True)
        if args.rate > 0:
            nursery.start_soon(lambda: sim.run_shopper(rate=args.rate, count=args.count))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Smartstore Web API simulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--rate", type=float, default=0.0, help="orders per second")
    parser.add_argument("--count", type=int, default=None, help="stop after this many orders")
    parser.add_argument("--max-top", type=int, default=DEFAULT_MAX_TOP)
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--lost-response-rate", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--wrongly-unpublished", type=int, default=0)
    parser.add_argument("--public-key", default="sim-public-key")
    parser.add_argument("--secret-key", default="sim-secret-key")
    parser.add_argument("--credentials-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url-file", default=None, help="write the bound base url here")
    trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    main()

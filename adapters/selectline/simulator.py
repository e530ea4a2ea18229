"""`SelectLineSimulator`: the SelectLine API on loopback, built from the Swagger models.

Serve `sim` (ASGI) with `somsd.http`; paths as on an install (`/Login`, `/Documents/...`).
Server rules implemented (reference sections of `selectline-api.md`):

- `POST /Login` (§2): user/password/AppKey checked (400 on a wrong one, with an ApiResponse),
  a licence seat per login (`seats`; 402 when none is free), 503 while `knobs.unreachable`;
  tokens are `LoginId <token>`; a stale or logged-out token answers 403 on every Wawi route and
  401 on `/Accounting/*` (§3). `POST /Logout` frees the seat (204). `expire_sessions()` makes
  every token stale, as a server restart or timeout would.
- `GET /Info` without login, with `ServerTimeInUtc` (skewed by `knobs.clock_skew`).
- lists (§4): bare and prefixed params (`page`/`items` or `articleListFilter.page`), `items=0`
  for all; `filter` with `(Property EQ 'value')` joined by AND (on the read model's top level
  and `BusinessPartner.*`).
- articles, warehouses, `Warehouses/Stocks` (§5); customers (§11, created with the next number
  from 10001).
- documents (§6-9): keys are KindFlag + number (`FAU000001`); article and shipping positions;
  totals (`GrossAmount`, `NetAmount`, `TaxAmount`) from gross unit prices to the cent;
  successors with the empty-positions rule (`[]` transfers every position with quantity 0),
  partial transfers tracked in `QuantityTakenOverByDocumentSuccessor` and `StatusFlag` (1
  partial, 2 taken over), more than is left refused with 400; `PUT .../Status`, DELETE.
- purchase-side documents (`B` purchase order, `S` goods receipt "Wareneingang", `E` supplier
  invoice, `N`): the address is a supplier
  (`add_supplier`); a missing or unknown one is refused with 400, as the Wawi refuses a
  customer number there. Net unit prices unless `PriceKindFlag` says otherwise (`E`, EU
  inbound, only on these), totals per tax rate to the cent. `GET /Documents` selects by
  `selectAddressKind` (All, Customer, Supplier, Prospect, None) with
  `selectBusinessPartnerNumber`, and by `selectToDate`. A `B` passes on (successors) only to
  `S` or `E`, an `S` or `E` to nothing, a sales document never to a purchase-side kind; the
  successor's positions name their `B` position (`PredecessorIdentifier`).
- an invoice (`R`) or credit note (`G`) opens an open item (`/Accounting/OpenItems`, OData
  `top`/`skip`); `pay(invoice_key, amount)` books a payment against it as the bookkeeper would.

Faults (`SelectLineKnobs`, mutable while serving): `latency`, `fail_next` (statuses for the
next calls, ApiResponse bodies), `unreachable` (503 everywhere but /Info), `lose_next_creates` /
`lost_response_rate` (a POST is applied, then the connection dropped), `clock_skew`, `seats`.

Run standalone: `python -m adapters.selectline --port 0 --articles 200 --url-file FILE
--password-file FILE`.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import random
import re
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Final

import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from adapters.faults import DroppedResponse, start_simulator
from adapters.selectline.wire import (
    ENCODER,
    AccessTokenModel,
    ApiInfo,
    ApiResponse,
    Article,
    ArticlePositionItem,
    AttachmentInfo,
    Credentials,
    Customer,
    CustomerCreated,
    DocumentCreated,
    DocumentCreateModel,
    DocumentDetailBusinessPartner,
    DocumentPositionCreated,
    DocumentPositionReadModel,
    DocumentPositionWithShippingItemCreateModel,
    DocumentReadModel,
    DocumentUpdateModel,
    EnumerationValue,
    JournalAttachmentCreated,
    JournalCreated,
    JournalCreateModel,
    JournalModelRead,
    OpenItemAmount,
    OpenItemDto,
    OpenItemPage,
    Stock,
    SuccessorsDocumentData,
    Warehouse,
)

__all__ = ["SelectLineKnobs", "SelectLineSimulator", "main"]

CENT: Final = Decimal("0.01")
STATUS_NAMES: Final = {
    "EditingCompleted": 0,
    "StartedAtWorkOrders": 1,
    "Completed": 2,
    "CompletedManually": 3,
    "CancelledInReceipts": 4,
    "InProcess": 5,
    "Parked": 6,
}
# The journal label under which the warehouse notes a parcel's tracking number.
TRACKING_LABEL: Final = "Sendungsnummer"
# `selectDocumentState` of `GET /Documents` -> the StatusFlags it selects.
_DOCUMENT_STATES: Final = {
    "Open": frozenset({"0"}),
    "InProgress": frozenset({"1", "5", "6"}),
    "Done": frozenset({"2", "3"}),
}
_NUMBER_PREFIX: Final = {
    "F": "AU",
    "L": "LS",
    "R": "RE",
    "G": "GU",
    "A": "AN",
    "B": "BE",
    "E": "ER",
    "N": "AF",
    "S": "WE",
}
# Purchase-side kinds: their address is a supplier (Bestellung, Wareneingang, Eingangsrechnung,
# Anfrage).
SUPPLIER_KINDS: Final = frozenset("BSEN")
# Belegübergabe: what each kind may pass on to (a purchase order to its goods receipt or the
# supplier's invoice; the sales chain as before).
_SUCCESSOR_KINDS: Final = {"B": "SE", "S": "", "E": "", "N": "B"}
_SALES_SUCCESSORS: Final = "LRGP"
_ADDRESS_KINDS: Final = frozenset({"All", "Customer", "Supplier", "Prospect", "None"})
_FILTER = re.compile(r"\(\s*([A-Za-z0-9.]+)\s+EQ\s+'((?:[^']|'')*)'\s*\)")
_HTTP_NAMES: Final = {
    400: "BadRequest",
    401: "Unauthorized",
    402: "PaymentRequired",
    403: "Forbidden",
    404: "NotFound",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


@dataclass
class SelectLineKnobs:
    seats: int = 2
    latency: float = 0.0
    unreachable: bool = False
    fail_next: list[int] = field(default_factory=list)
    lose_next_creates: int = 0
    lost_response_rate: float = 0.0
    clock_skew: float = 0.0
    # Seconds a session may idle before the server drops it (and frees its seat): how the
    # seat of a client that died without logging out comes back. None: never.
    session_timeout: float | None = None
    # Demo convenience: an article position for an unknown article number creates the article
    # (as the shop's article import would have) instead of the real server's 400.
    open_catalogue: bool = False
    # A delivery note takes its units out of stock, as the Wawi books it.
    book_out_deliveries: bool = True


@dataclass
class _Position:
    identifier: str
    kind: str  # A article, E shipping
    number: int
    article: str
    name: str
    quantity: Decimal
    unit_price: Decimal  # gross
    tax_rate: Decimal
    predecessor: str | None = None
    taken_over: Decimal = Decimal(0)
    price_unit: Decimal = Decimal(1)  # PriceUnitFactor: the quantity the unit price is for

    def total(self) -> Decimal:
        return (self.quantity * self.unit_price / self.price_unit).quantize(CENT, ROUND_HALF_UP)

    def read_model(self, document: _Document) -> DocumentPositionReadModel:
        if self.taken_over <= 0:
            status = "0"
        elif self.taken_over < self.quantity:
            status = "1"
        else:
            status = "2"
        return DocumentPositionReadModel(
            Identifier=self.identifier,
            PositionKind=self.kind,
            PositionNumber=self.number,
            PredecessorIdentifier=self.predecessor,
            ArticleNumber=self.article,
            Name=self.name,
            Quantity=self.quantity,
            CalculatedQuantityValue=self.quantity,
            UnitPrice=self.unit_price,
            TotalPrice=self.total(),
            TaxRate=self.tax_rate,
            StatusFlag=status,
            QuantityTakenOverByDocumentSuccessor=self.taken_over,
        )


@dataclass
class _Document:
    kind: str
    number: str
    date: str
    partner: DocumentDetailBusinessPartner | None
    currency: str
    status: str = "0"
    positions: list[_Position] = field(default_factory=list)
    successors: list[str] = field(default_factory=list)
    predecessor: str | None = None
    journals: list[JournalModelRead] = field(default_factory=list)
    address_kind: str = "Customer"  # Supplier for the purchase-side kinds
    price_kind: str = "B"  # B gross unit prices, N net (the default of a supplier invoice)

    @property
    def key(self) -> str:
        return self.kind + self.number

    def totals(self) -> tuple[Decimal, Decimal, Decimal]:
        if self.price_kind != "B":
            return self._net_totals()
        gross = tax = Decimal(0)
        for position in self.positions:
            line = position.total()
            net = (line * 100 / (100 + position.tax_rate)).quantize(CENT, ROUND_HALF_UP)
            gross += line
            tax += line - net
        return gross, gross - tax, tax

    def _net_totals(self) -> tuple[Decimal, Decimal, Decimal]:
        """Net unit prices: the tax of each rate on that rate's net sum, to the cent."""
        by_rate: dict[Decimal, Decimal] = {}
        for position in self.positions:
            line = position.total()
            by_rate[position.tax_rate] = by_rate.get(position.tax_rate, Decimal(0)) + line
        net = sum(by_rate.values(), Decimal(0))
        tax = sum(
            ((n * r / 100).quantize(CENT, ROUND_HALF_UP) for r, n in by_rate.items()), Decimal(0)
        )
        return net + tax, net, tax

    def read_model(self) -> DocumentReadModel:
        gross, net, tax = self.totals()
        return DocumentReadModel(
            Number=self.number,
            KindFlag=self.kind,
            Date=self.date,
            GrossAmount=gross,
            NetAmount=net,
            TaxAmount=tax,
            StatusFlag=self.status,
            CurrencyCode=self.currency,
            PriceKindFlag=self.price_kind,
            BusinessPartner=self.partner,
        )


class _Failure(Exception):
    def __init__(self, status: int, message: str, response_id: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.response_id = response_id


def _json(value: object, status: int = 200) -> Response:
    return Response(ENCODER.encode(value), status_code=status, media_type="application/json")


class SelectLineSimulator:
    """A SelectLine API install; see the module docstring for the rules and the knobs."""

    def __init__(
        self,
        *,
        knobs: SelectLineKnobs | None = None,
        user: str = "somsd",
        password: str = "sim-password",  # noqa: S107  # the simulator's published test password
        app_key: str | None = None,
        seed: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.knobs = knobs or SelectLineKnobs()
        self.user, self.password, self.app_key = user, password, app_key
        self._clock = clock
        self._rng = random.Random(seed)
        self.sessions: dict[str, str] = {}  # token -> user
        self._last_used: dict[str, float] = {}  # token -> when it was last used (monotonic)
        self.login_attempts = 0
        self.logins = 0
        self.logouts = 0
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.articles: dict[str, Article] = {}
        self.warehouses: dict[str, Warehouse] = {}
        self.stock: dict[tuple[str, str], Decimal] = {}  # (article, warehouse) -> available
        self.extra_stock_rows: list[Stock] = []  # rows as they are, for bad-data tests
        self.customers: dict[str, Customer] = {}
        self.suppliers: dict[str, str] = {}  # supplier number -> name (the creditor master)
        self.documents: dict[str, _Document] = {}
        self.open_items: dict[int, OpenItemDto] = {}
        # journal id -> its attachments: (info, bytes, content type)
        self.attachments: dict[str, list[tuple[AttachmentInfo, bytes, str]]] = {}
        self._counters: dict[str, int] = {}
        routes = [
            Route("/Info", self._info, methods=["GET"]),
            Route("/Login", self._login, methods=["POST"]),
            Route("/Logout", self._logout, methods=["POST"]),
            Route("/Articles", self._articles, methods=["GET"]),
            Route("/Warehouses", self._warehouses, methods=["GET"]),
            Route("/Warehouses/Stocks", self._stocks, methods=["GET"]),
            Route("/Customers", self._customers, methods=["GET", "POST"]),
            Route("/Documents", self._documents, methods=["GET", "POST"]),
            Route("/Documents/{key}", self._document, methods=["GET", "PUT", "DELETE"]),
            Route("/Documents/{key}/ArticleItem", self._article_item, methods=["POST"]),
            Route("/Documents/{key}/ShippingItemPosition", self._shipping_item, methods=["POST"]),
            Route("/Documents/{key}/Positions", self._positions, methods=["GET"]),
            Route("/Documents/{key}/Successors", self._successors, methods=["GET", "POST"]),
            Route("/Documents/{key}/Status", self._status, methods=["PUT"]),
            Route("/Documents/{key}/Journals", self._journals, methods=["GET", "POST"]),
            Route("/Journals/{journal}/Attachments", self._attachments, methods=["GET", "POST"]),
            Route("/Accounting/OpenItems", self._open_items, methods=["GET"]),
        ]
        self.app = Starlette(routes=routes, exception_handlers={_Failure: _failure_handler})
        self.app.add_middleware(_Guard, sim=self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    # -- seeding and the bookkeeper's side -------------------------------------------------

    def add_warehouse(self, number: str, name: str | None = None) -> None:
        self.warehouses[number] = Warehouse(Number=number, Name=name or f"Lager {number}")

    def add_article(
        self,
        number: str,
        *,
        gtin: str | None = None,
        name: str | None = None,
        shop_active: bool = True,
        inactive: bool = False,
        stock: dict[str, int] | None = None,
    ) -> None:
        self.articles[number] = Article(
            Number=number,
            EuropeanArticleNumber=gtin,
            Name=name or f"Artikel {number}",
            IsWarehouseArtikel=True,
            ArticleKind="Default",
            IsShopActive=shop_active,
            IsInactive=inactive,
        )
        for warehouse, quantity in (stock or {}).items():
            self.stock[(number, warehouse)] = Decimal(quantity)

    def add_supplier(self, number: str, name: str | None = None) -> None:
        self.suppliers[number] = name or f"Lieferant {number}"

    def set_stock(self, article: str, warehouse: str, available: int) -> None:
        self.stock[(article, warehouse)] = Decimal(available)

    def seed(self, articles: int, *, warehouses: Sequence[str] = ("200", "400")) -> None:
        """`articles` articles `100001...` with GTINs, stock 0-40 in each warehouse."""
        for number in warehouses:
            self.add_warehouse(number)
        for index in range(articles):
            number = str(100001 + index)
            self.add_article(
                number,
                gtin=f"4000000{index:06d}",
                stock={w: self._rng.randint(0, 40) for w in warehouses},
            )

    def expire_sessions(self) -> None:
        """Every token goes stale (a server restart or a timeout); seats are freed."""
        self.sessions.clear()

    def pay(self, invoice_key: str, amount: Decimal) -> None:
        """Book a payment against the open item of invoice `invoice_key`."""
        for number, item in self.open_items.items():
            if item.OpenItemDocument == invoice_key and item.Amount is not None:
                outstanding = max(Decimal(0), item.Amount.Outstanding - amount)
                self.open_items[number] = msgspec.structs.replace(
                    item,
                    Amount=msgspec.structs.replace(item.Amount, Outstanding=outstanding),
                    Status="Bezahlt" if outstanding == 0 else "Teilbezahlt",
                )
                return
        raise KeyError(invoice_key)

    def ship_delivery(
        self, key: str, tracking_number: str | None = None, *, carrier: str | None = None
    ) -> None:
        """The warehouse shipped delivery note `key`: it is done (status 2, "Completed") and,
        with a tracking number, a journal "Sendungsnummer" carries it (reference §11)."""
        document = self._get(key)
        if document.kind != "L":
            raise ValueError(f"{key} is not a delivery note")
        if tracking_number is not None:
            document.journals.append(
                JournalModelRead(
                    Identifier=str(uuid.UUID(int=self._rng.getrandbits(128))),
                    Date=self.now().isoformat(),
                    StatusId=1,
                    Label=TRACKING_LABEL,
                    Text=tracking_number,
                    CategoryLabel=carrier,
                )
            )
        document.status = "2"

    def documents_of(self, kind: str, contract: str | None = None) -> list[_Document]:
        return [
            d
            for d in self.documents.values()
            if d.kind == kind
            and (contract is None or (d.partner and d.partner.BusinessPartnerContract) == contract)
        ]

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._clock() + self.knobs.clock_skew, UTC)

    def _next(self, kind: str) -> int:
        self._counters[kind] = self._counters.get(kind, 0) + 1
        return self._counters[kind]

    # -- session -------------------------------------------------------------------------

    async def _info(self, request: Request) -> Response:
        return _json(
            ApiInfo(
                Company="SelectLine Software AG",
                Product="SelectLine API (somsd simulator)",
                Version="25.1.0",
                IsBackendManagerRunning=True,
                ServerTimeInUtc=self.now().isoformat().replace("+00:00", "Z"),
            )
        )

    async def _login(self, request: Request) -> Response:
        self.login_attempts += 1
        try:
            credentials = msgspec.json.decode(await request.body(), type=Credentials)
        except msgspec.DecodeError as exc:
            raise _Failure(400, f"invalid credentials body: {exc}") from exc
        if credentials.UserName.casefold() != self.user.casefold() or (
            credentials.Password != self.password
        ):
            raise _Failure(400, "Benutzername oder Passwort ist falsch", 1001)
        if self.app_key is not None and credentials.AppKey != self.app_key:
            raise _Failure(403, "AppKey ist nicht lizenziert", 1002)
        self._drop_idle_sessions()
        if len(self.sessions) >= self.knobs.seats:
            raise _Failure(402, "Keine freie Lizenz verfügbar", 1003)
        token = secrets.token_hex(16)
        self.sessions[token] = credentials.UserName
        self._last_used[token] = time.monotonic()
        self.logins += 1
        return _json(AccessTokenModel(AccessToken=token, TokenType="LoginId"))

    async def _logout(self, request: Request) -> Response:
        token = self._token(request)
        if self.sessions.pop(token or "", None) is not None:
            self.logouts += 1
        return Response(status_code=204)

    @staticmethod
    def _token(request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        return token.strip() if kind == "LoginId" else None

    def admit(self, request: Request) -> None:
        """Injected failures first, then the login check (not for /Info, /Login, /Logout)."""
        path = request.url.path
        if path != "/Info":
            if self.knobs.fail_next:
                raise _Failure(self.knobs.fail_next.pop(0), "injected failure", 9001)
            if self.knobs.unreachable:
                raise _Failure(503, "SelectLine-Server nicht erreichbar", 9002)
        if path not in ("/Info", "/Login", "/Logout"):
            self.authorise(request)

    def _drop_idle_sessions(self) -> None:
        timeout = self.knobs.session_timeout
        if timeout is None:
            return
        now = time.monotonic()
        for token in [t for t, used in self._last_used.items() if now - used > timeout]:
            self.sessions.pop(token, None)
            del self._last_used[token]

    def authorise(self, request: Request) -> None:
        self._drop_idle_sessions()
        token = self._token(request)
        if token is None or token not in self.sessions:
            accounting = request.url.path.startswith("/Accounting/")
            raise _Failure(401 if accounting else 403, "LoginId ungültig oder abgelaufen", 2001)
        self._last_used[token] = time.monotonic()

    # -- lists ---------------------------------------------------------------------------

    @staticmethod
    def _param(request: Request, name: str) -> str | None:
        for key, value in request.query_params.items():
            if key == name or key.endswith("." + name):
                return value
        return None

    def _page(self, request: Request, rows: list[Any]) -> list[Any]:
        page = int(self._param(request, "page") or 0)
        items = int(self._param(request, "items") or 10)
        if items == 0:
            return rows
        return rows[page * items : (page + 1) * items]

    def _filtered(self, request: Request, rows: list[Any]) -> list[Any]:
        text = self._param(request, "filter")
        if not text:
            return rows
        conditions = [(p, v.replace("''", "'")) for p, v in _FILTER.findall(text)]
        if not conditions:
            raise _Failure(400, f"filter not understood: {text}")

        def matches(row: Any) -> bool:
            for path, value in conditions:
                current: Any = row
                for part in path.split("."):
                    current = getattr(current, part, None)
                if current is None and hasattr(row, "BusinessPartner") and "." not in path:
                    current = getattr(row.BusinessPartner, path, None)
                if current is None and hasattr(row, "Contact") and "." not in path:
                    current = getattr(row.Contact, path, None)
                if str(current) != value:
                    return False
            return True

        return [row for row in rows if matches(row)]

    async def _articles(self, request: Request) -> Response:
        rows = sorted(self.articles.values(), key=lambda a: a.Number)
        return _json(self._page(request, self._filtered(request, rows)))

    async def _warehouses(self, request: Request) -> Response:
        rows = sorted(self.warehouses.values(), key=lambda w: w.Number)
        return _json(self._page(request, rows))

    def stock_rows(self) -> list[Stock]:
        rows = [
            Stock(
                ArticleNumber=article,
                Number=warehouse,
                WarehouseName=self.warehouses[warehouse].Name
                if warehouse in self.warehouses
                else None,
                Quantity=available,
                AvailableStock=available,
            )
            for (article, warehouse), available in sorted(self.stock.items())
        ]
        return rows + self.extra_stock_rows

    async def _stocks(self, request: Request) -> Response:
        if self._param(request, "filter"):
            return _json(self._page(request, self._filtered(request, self.stock_rows())))
        # Unfiltered pages are built from their slice only: reading 500,000 rows page by page
        # must not build all of them for every page.
        keys = sorted(self.stock)
        rows = self._page(request, [*keys, *range(len(self.extra_stock_rows))])
        return _json([self._stock_row(key) for key in rows])

    def _stock_row(self, key: tuple[str, str] | int) -> Stock:
        if isinstance(key, int):
            return self.extra_stock_rows[key]
        article, warehouse = key
        available = self.stock[key]
        known = self.warehouses.get(warehouse)
        return Stock(
            ArticleNumber=article,
            Number=warehouse,
            WarehouseName=known.Name if known else None,
            Quantity=available,
            AvailableStock=available,
        )

    async def _customers(self, request: Request) -> Response:
        if request.method == "GET":
            rows = sorted(self.customers.values(), key=lambda c: c.Number or "")
            return _json(self._page(request, self._filtered(request, rows)))
        customer = self._body(await request.body(), Customer)
        number = str(10000 + self._next("customer"))
        self.customers[number] = msgspec.structs.replace(customer, Number=number)
        return self._created(CustomerCreated(CustomerNumber=number))

    # -- documents -----------------------------------------------------------------------

    @staticmethod
    def _body(raw: bytes, kind: type[Any]) -> Any:
        try:
            return msgspec.json.decode(raw or b"{}", type=kind)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise _Failure(400, f"Ungültiger Inhalt: {exc}") from exc

    def _created(self, value: object) -> Response:
        knobs = self.knobs
        if knobs.lose_next_creates > 0:
            knobs.lose_next_creates -= 1
            return DroppedResponse(201)
        if knobs.lost_response_rate and self._rng.random() < knobs.lost_response_rate:
            return DroppedResponse(201)
        return _json(value, 201)

    def _get(self, key: str) -> _Document:
        document = self.documents.get(key)
        if document is None:
            raise _Failure(404, f"Beleg {key} nicht gefunden", 3001)
        return document

    def _new_document(
        self,
        kind: str,
        partner: DocumentDetailBusinessPartner | None,
        currency: str,
        number: str | None = None,
    ) -> _Document:
        if number is None:
            number = f"{_NUMBER_PREFIX.get(kind, kind)}{self._next(kind):06d}"
        if kind + number in self.documents:
            raise _Failure(400, f"Belegnummer {kind}{number} ist schon vergeben", 3002)
        document = _Document(
            kind=kind,
            number=number,
            date=self.now().date().isoformat(),
            partner=partner,
            currency=currency,
        )
        self.documents[document.key] = document
        return document

    def _partner_documents(self, request: Request) -> list[_Document]:
        """`selectAddressKind` and `selectBusinessPartnerNumber`: a partner's documents."""
        documents = list(self.documents.values())
        address_kind = self._param(request, "selectAddressKind")
        if address_kind and address_kind not in _ADDRESS_KINDS:
            raise _Failure(400, f"selectAddressKind {address_kind!r} unbekannt", 3006)
        if address_kind and address_kind != "All":
            documents = [
                d
                for d in documents
                if (d.address_kind if _address_number(d) else "None") == address_kind
            ]
        partner = self._param(request, "selectBusinessPartnerNumber")
        if partner:
            documents = [d for d in documents if _address_number(d) == partner]
        return documents

    async def _documents(self, request: Request) -> Response:
        if request.method == "GET":
            rows = [d.read_model() for d in self._partner_documents(request)]
            kind = self._param(request, "selectDocumentKindFlag")
            if kind:
                rows = [r for r in rows if r.KindFlag == kind]
            state = self._param(request, "selectDocumentState")
            if state and state != "All":
                if state not in _DOCUMENT_STATES:
                    raise _Failure(400, f"selectDocumentState {state!r} unbekannt", 3005)
                rows = [r for r in rows if r.StatusFlag in _DOCUMENT_STATES[state]]
            since = self._param(request, "selectFromDate")
            if since:
                rows = [r for r in rows if (r.Date or "") >= since[:10]]
            until = self._param(request, "selectToDate")
            if until:
                rows = [r for r in rows if (r.Date or "") <= until[:10]]
            return _json(self._page(request, self._filtered(request, rows)))
        model = self._body(await request.body(), DocumentCreateModel)
        if len(model.KindFlag) != 1 or model.KindFlag not in "ABEFGILNPRS":
            raise _Failure(400, f"KindFlag {model.KindFlag!r} ist keine Belegart", 3003)
        price_kind = self._price_kind(model)
        document = self._new_document(
            model.KindFlag, model.BusinessPartner, model.CurrencyCode or "EUR", model.Number
        )
        document.price_kind = price_kind
        if model.Date:
            document.date = model.Date[:10]
        if document.kind in SUPPLIER_KINDS:
            document.address_kind = "Supplier"
        if document.kind in "RG":
            self._open_item(document)
        return self._created(
            DocumentCreated(
                DocumentKey=document.key, DocumentKind=document.kind, DocumentNumber=document.number
            )
        )

    def _price_kind(self, model: DocumentCreateModel) -> str:
        """The purchase-side kinds need a known supplier (their address is one; a customer
        number there is refused as the Wawi would); `E` prices (EU inbound) only on them."""
        inbound = model.KindFlag in SUPPLIER_KINDS
        if inbound:
            partner = model.BusinessPartner
            number = partner.Address.Number if partner and partner.Address else None
            if not number:
                raise _Failure(400, f"Belegart {model.KindFlag} braucht einen Lieferanten", 3007)
            if number not in self.suppliers:
                raise _Failure(400, f"Lieferant {number} nicht gefunden", 3008)
        flag = model.PriceKindFlag or ("N" if inbound else "B")
        if flag not in "NBSE" or len(flag) != 1 or (flag == "E" and not inbound):
            raise _Failure(400, f"PriceKindFlag {flag!r} ist für {model.KindFlag} unzulässig", 3009)
        return flag

    async def _document(self, request: Request) -> Response:
        document = self._get(request.path_params["key"])
        if request.method == "GET":
            return _json(document.read_model())
        if request.method == "DELETE":
            if document.successors:
                raise _Failure(400, f"Beleg {document.key} hat Folgebelege", 3004)
            del self.documents[document.key]
            return Response(status_code=204)
        update = self._body(await request.body(), DocumentUpdateModel)
        if update.BusinessPartner is not None:
            document.partner = update.BusinessPartner
        return Response(status_code=204)

    def _add_position(  # noqa: PLR0917  # a position's fields, in the model's order
        self,
        document: _Document,
        kind: str,
        article: str,
        quantity: Decimal,
        price: Decimal,
        tax: Decimal,
        name: str,
    ) -> _Position:
        position = _Position(
            identifier=f"{self._rng.getrandbits(128):032x}",
            kind=kind,
            number=len(document.positions) + 1,
            article=article,
            name=name,
            quantity=quantity,
            unit_price=price,
            tax_rate=tax,
        )
        document.positions.append(position)
        if document.kind in "RG":
            self._open_item(document)
        return position

    async def _article_item(self, request: Request) -> Response:
        document = self._get(request.path_params["key"])
        item = self._body(await request.body(), ArticlePositionItem)
        article = self.articles.get(item.ArticleNumber)
        if article is None and self.knobs.open_catalogue:
            self.add_article(item.ArticleNumber, name=item.Name)
            article = self.articles[item.ArticleNumber]
        if article is None:
            raise _Failure(400, f"Artikel {item.ArticleNumber} nicht gefunden", 4001)
        if item.CalculatedQuantityValue <= 0:
            raise _Failure(400, "Menge muss größer 0 sein", 4002)
        if item.PriceUnitFactor is not None and item.PriceUnitFactor <= 0:
            raise _Failure(400, "Preiseinheit muss größer 0 sein", 4003)
        position = self._add_position(
            document,
            "A",
            item.ArticleNumber,
            item.CalculatedQuantityValue,
            item.UnitPrice or Decimal(0),
            item.TaxRate if item.TaxRate is not None else Decimal(19),
            item.Name or article.Name or item.ArticleNumber,
        )
        position.price_unit = item.PriceUnitFactor or Decimal(1)
        if document.kind in "RG":
            self._open_item(document)
        return self._created(
            DocumentPositionCreated(
                DocumentKey=document.key,
                DocumentKind=document.kind,
                DocumentNumber=document.number,
                PositionIdentifier=position.identifier,
            )
        )

    async def _shipping_item(self, request: Request) -> Response:
        document = self._get(request.path_params["key"])
        item = self._body(await request.body(), DocumentPositionWithShippingItemCreateModel)
        position = self._add_position(
            document,
            "E",
            item.ArticleNumber,
            Decimal(1),
            item.UnitPrice,
            Decimal(19),
            item.AlternativePositionDescription or "Versand",
        )
        return self._created(
            DocumentPositionCreated(
                DocumentKey=document.key,
                DocumentKind=document.kind,
                DocumentNumber=document.number,
                PositionIdentifier=position.identifier,
            )
        )

    async def _positions(self, request: Request) -> Response:
        document = self._get(request.path_params["key"])
        return _json([p.read_model(document) for p in document.positions])

    async def _successors(self, request: Request) -> Response:
        source = self._get(request.path_params["key"])
        if request.method == "GET":
            return _json(
                [self.documents[k].read_model() for k in source.successors if k in self.documents]
            )
        data = self._body(await request.body(), SuccessorsDocumentData)
        kind = data.DocumentKindDestination
        if len(kind) != 1 or kind not in _SUCCESSOR_KINDS.get(source.kind, _SALES_SUCCESSORS):
            raise _Failure(400, f"Belegübergabe {source.kind} -> {kind} nicht erlaubt", 5001)
        by_id = {p.identifier: p for p in source.positions}
        wanted: list[tuple[_Position, Decimal]] = []
        if not data.Positions:  # the spec's rule: every position, quantity 0
            wanted = [(p, Decimal(0)) for p in source.positions]
        for info in data.Positions:
            position = by_id.get(info.Identifier or "")
            if position is None:
                raise _Failure(400, f"Position {info.Identifier} nicht in {source.key}", 5002)
            quantity = info.Quantity if info.Quantity is not None else Decimal(0)
            if quantity < 0 or quantity > position.quantity - position.taken_over:
                raise _Failure(
                    400,
                    f"Menge {quantity} für Position {position.number} übersteigt die offene "
                    f"Menge {position.quantity - position.taken_over}",
                    5003,
                )
            wanted.append((position, quantity))
        target = self._new_document(kind, source.partner, source.currency)
        target.predecessor = source.key
        if kind in SUPPLIER_KINDS:
            target.address_kind, target.price_kind = source.address_kind, source.price_kind
        for position, quantity in wanted:
            position.taken_over += quantity
            copy = self._add_position(
                target,
                position.kind,
                position.article,
                quantity,
                position.unit_price,
                position.tax_rate,
                position.name,
            )
            copy.predecessor = position.identifier
            copy.price_unit = position.price_unit
        source.successors.append(target.key)
        if target.kind == "L" and self.knobs.book_out_deliveries:
            self._book_out(target)
        if target.kind in "RG":
            self._open_item(target)
        return self._created(
            DocumentCreated(
                DocumentKey=target.key, DocumentKind=target.kind, DocumentNumber=target.number
            )
        )

    async def _status(self, request: Request) -> Response:
        document = self._get(request.path_params["key"])
        value = self._body(await request.body(), EnumerationValue)
        if value.Name is not None:
            if value.Name not in STATUS_NAMES:
                raise _Failure(400, f"Status {value.Name!r} unbekannt", 6001)
            document.status = str(STATUS_NAMES[value.Name])
        elif value.Value is not None and value.Value in STATUS_NAMES.values():
            document.status = str(value.Value)
        else:
            raise _Failure(400, "Status fehlt", 6002)
        return Response(status_code=204)

    async def _journals(self, request: Request) -> Response:
        document = self._get(request.path_params["key"])
        if request.method == "GET":
            return _json(self._page(request, list(document.journals)))
        model = self._body(await request.body(), JournalCreateModel)
        journal = JournalModelRead(
            Identifier=str(uuid.UUID(int=self._rng.getrandbits(128))),
            Date=model.Date,
            StatusId=model.StatusId,
            Label=model.Label,
            Text=model.Text,
            ContactKind=model.ContactKind,
            CategoryLabel=model.CategoryLabel,
        )
        document.journals.append(journal)
        assert journal.Identifier is not None
        self.attachments[journal.Identifier] = []
        return self._created(JournalCreated(JournalIdentifier=journal.Identifier))

    def journal_of(self, journal: str) -> tuple[_Document, JournalModelRead]:
        for document in self.documents.values():
            for entry in document.journals:
                if entry.Identifier == journal:
                    return document, entry
        raise _Failure(404, f"Journal {journal} nicht gefunden", 7001)

    async def _attachments(self, request: Request) -> Response:
        journal = request.path_params["journal"]
        self.journal_of(journal)
        files = self.attachments.setdefault(journal, [])
        if request.method == "GET":
            return _json(self._page(request, [info for info, _, _ in files]))
        created: JournalAttachmentCreated | None = None
        for filename, content, media_type in _multipart_files(request, await request.body()):
            info = AttachmentInfo(
                AttachmentIdentifier=self._next("attachment"),
                AttachmentType=1,  # stored in the database, the only place the API writes
                JournalIdentifier=journal,
                Filename=filename,
            )
            files.append((info, content, media_type))
            created = JournalAttachmentCreated(
                JournalIdentifier=journal, AttachmentId=info.AttachmentIdentifier
            )
        if created is None:
            raise _Failure(400, "Kein Anhang im multipart/form-data-Inhalt", 7002)
        return self._created(created)

    def _book_out(self, delivery: _Document) -> None:
        """A delivery note takes its units out of stock: from the warehouse holding most."""
        for position in delivery.positions:
            if position.kind != "A" or position.quantity <= 0:
                continue
            held = [(q, w) for (a, w), q in self.stock.items() if a == position.article]
            if held:
                _, warehouse = max(held)
                key = (position.article, warehouse)
                self.stock[key] -= position.quantity

    # -- accounting ----------------------------------------------------------------------

    def _open_item(self, document: _Document) -> None:
        """The open item of an invoice or credit note, kept in step with its positions."""
        gross, _, _ = document.totals()
        sign = Decimal(-1) if document.kind == "G" else Decimal(1)
        existing = next(
            (n for n, i in self.open_items.items() if i.OpenItemDocument == document.key), None
        )
        number = existing if existing is not None else len(self.open_items) + 1
        paid = Decimal(0)
        if existing is not None:
            old = self.open_items[existing].Amount
            if old is not None:
                paid = old.Sum - old.Outstanding
        self.open_items[number] = OpenItemDto(
            OpenItemNumber=number,
            Date=document.date,
            CustomerSupplierNumber=(
                document.partner.Address.Number
                if document.partner and document.partner.Address
                else None
            ),
            OpenItemDocument=document.key,
            YourOrder=document.partner.BusinessPartnerContract if document.partner else None,
            Status="Offen",
            Amount=OpenItemAmount(
                Currency=document.currency, Sum=sign * gross, Outstanding=sign * gross - paid
            ),
        )

    async def _open_items(self, request: Request) -> Response:
        rows = [self.open_items[n] for n in sorted(self.open_items)]
        skip = int(request.query_params.get("skip", "0"))
        top = request.query_params.get("top")
        page = rows[skip : skip + int(top)] if top else rows[skip:]
        return _json(OpenItemPage(Value=tuple(page)))


class _Guard:
    """Latency, injected failures, login checks and ApiResponse errors around every route."""

    def __init__(self, app: Any, sim: SelectLineSimulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sim = self.sim
        request = Request(scope, receive)
        path, method = request.url.path, request.method
        if sim.knobs.latency:
            await trio.sleep(sim.knobs.latency)
        try:
            sim.admit(request)
        except _Failure as failure:
            sim.requests.append((method, path, failure.status))
            await _error(failure)(scope, receive, send)
            return

        async def record(message: Any) -> None:
            # Recorded before the answer goes out: a test reading `requests` after its call
            # returned must see the call.
            if message["type"] == "http.response.start":
                sim.requests.append((method, path, message["status"]))
            await send(message)

        await self.app(scope, receive, record)


def _multipart_files(request: Request, body: bytes) -> list[tuple[str, bytes, str]]:
    """The parts of a multipart/form-data body that are files: each needs a file name (the
    spec: `ContentDisposition.FileName`) and has its own Content-Type."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise _Failure(400, "Der Inhalt muss multipart/form-data sein", 7003)
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
    )
    if not message.is_multipart():
        raise _Failure(400, "multipart/form-data ohne Teile", 7003)
    files: list[tuple[str, bytes, str]] = []
    for part in message.iter_parts():
        filename = part.get_filename()
        if not filename:
            raise _Failure(400, "Jeder Anhang braucht einen Dateinamen", 7004)
        payload = part.get_payload(decode=True)
        content = payload if isinstance(payload, bytes) else b""
        files.append((filename, content, part.get_content_type()))
    return files


def _address_number(document: _Document) -> str | None:
    partner = document.partner
    return partner.Address.Number if partner and partner.Address else None


async def _failure_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Failure)
    return _error(exc)


def _error(failure: _Failure) -> Response:
    return _json(
        ApiResponse(
            StatusCode=_HTTP_NAMES.get(failure.status, str(failure.status)),
            ResponseCode=str(failure.status),
            ResponseId=failure.response_id,
            ResponseIdDescription=failure.message,
            Message=failure.message,
        ),
        failure.status,
    )


async def _main(args: argparse.Namespace) -> None:

    sim = SelectLineSimulator(
        knobs=SelectLineKnobs(
            seats=args.seats, latency=args.latency, lost_response_rate=args.lost_response_rate
        ),
        password=args.password,
        seed=args.seed,
    )
    sim.seed(args.articles, warehouses=tuple(args.warehouses.split(",")))
    if args.password_file:
        path = trio.Path(args.password_file)
        await path.touch(mode=0o600)
        await path.write_text(args.password + "\n")
    async with trio.open_nursery() as nursery:
        url = await start_simulator(
            nursery, sim, port=args.port, name="selectline-sim", url_file=args.url_file
        )
        print(f"serving {url} ({len(sim.articles)} articles)", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SelectLine API simulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--articles", type=int, default=200)
    parser.add_argument("--warehouses", default="200,400")
    parser.add_argument("--seats", type=int, default=2)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--lost-response-rate", type=float, default=0.0)
    parser.add_argument("--password", default="sim-password")
    parser.add_argument("--password-file", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--url-file", default=None, help="write the bound base url here")
    trio.run(_main, parser.parse_args(argv))


if __name__ == "__main__":
    main()

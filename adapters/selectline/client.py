"""`SelectLineClient`: one logged-in session to the SelectLine API over an injected httpx client.

The session (reference §2): `POST /Login` with user, password and AppKey answers a token that
goes on every call as `Authorization: LoginId <token>`. A login holds a licence seat, so a
daemon keeps exactly one: concurrent callers share it (a lock around login), a 401/403 on a
call means the token went stale and costs exactly one re-login and one repeat of the call, and
`logout()` gives the seat back on shutdown. A refused login is remembered: until its backoff
ends (30 s, doubling to 15 min) every call fails at once with the same clear error instead of
asking the server again, so a wrong password never turns into a login storm.

Errors are translated once here (`adapters.errors`): 402 -> `SelectLineNoLicence`, 503 ->
`SelectLineUnreachable`, other non-2xx -> transient or permanent by status with the
`ApiResponse` body's `Message` (and `ResponseIdDescription`) in the text.

Lists (§4) are bare JSON arrays: `page` (from 0) and `items`, read until a page comes back
shorter than `items`. `/Accounting/OpenItems` is OData-style (`top`/`skip`, `{"Value": [...]}`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any, Final, TypeVar

import httpx
import msgspec
import trio

from adapters.errors import TransientUpstreamError, status_error, translate_http_error
from adapters.selectline.errors import (
    SelectLineLoginRefused,
    SelectLineNoLicence,
    SelectLineRejected,
    SelectLineUnreachable,
)
from adapters.selectline.wire import (
    DECODERS,
    ENCODER,
    AccessTokenModel,
    ApiInfo,
    Article,
    ArticlePositionItem,
    AttachmentInfo,
    Credentials,
    Customer,
    CustomerCreated,
    DocumentCreated,
    DocumentCreateModel,
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
    OpenItemDto,
    Stock,
    SuccessorsDocumentData,
    Warehouse,
)

__all__ = ["DEFAULT_PAGE_SIZE", "SelectLineClient", "filter_eq"]

T = TypeVar("T")

DEFAULT_PAGE_SIZE: Final = 500
# 10,000 pages of 500 rows is five million stock rows: far beyond any install, and a bound on
# a server that ignores `page` and answers the same full page forever.
MAX_PAGES: Final = 10_000
LOGIN_BACKOFF_START: Final = 30.0
LOGIN_BACKOFF_MAX: Final = 900.0


def filter_eq(**conditions: str) -> str:
    """The filter language's conjunction of equalities: `(KindFlag EQ 'F') AND (...)`."""
    return " AND ".join(
        f"({name} EQ '{value.replace(chr(39), chr(39) * 2)}')" for name, value in conditions.items()
    )


class SelectLineClient:
    """The SelectLine API for one `[[erp]]` section; `system` names it in every error."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        system: str,
        user: str,
        password: str,
        app_key: str | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.http = http
        self.system = system
        self._credentials = Credentials(UserName=user, Password=password, AppKey=app_key)
        self.page_size = page_size
        self._clock = clock
        self._token: str | None = None
        self._login_lock = trio.Lock()
        self._refused: SelectLineLoginRefused | None = None
        self._refused_until = 0.0
        self._login_backoff = LOGIN_BACKOFF_START
        self.logins = 0  # successful logins of this client, re-logins included

    # -- session -------------------------------------------------------------------------

    @property
    def logged_in(self) -> bool:
        return self._token is not None

    async def login(self) -> str:
        """The current token, logging in first when there is none (one login at a time)."""
        async with self._login_lock:
            if self._token is not None:
                return self._token
            if self._refused is not None and self._clock() < self._refused_until:
                raise self._refused
            response = await self._send(
                "POST", "/Login", operation="POST /Login", content=ENCODER.encode(self._credentials)
            )
            if response.status_code != 200:
                raise self._login_error(response)
            token = _decode(DECODERS.token, response, system=self.system, operation="POST /Login")
            assert isinstance(token, AccessTokenModel)
            self._token = f"{token.TokenType or 'LoginId'} {token.AccessToken}"
            self._refused = None
            self._login_backoff = LOGIN_BACKOFF_START
            self.logins += 1
            return self._token

    async def logout(self) -> None:
        """Give the licence seat back; a failure only loses a seat the server frees later."""
        token, self._token = self._token, None
        if token is None:
            return
        with contextlib.suppress(httpx.HTTPError, TransientUpstreamError):
            await self._send(
                "POST", "/Logout", operation="POST /Logout", headers={"Authorization": token}
            )

    def _login_error(self, response: httpx.Response) -> Exception:
        detail = _api_message(response)
        operation = "POST /Login"
        suffix = f": {detail}" if detail else ""
        if response.status_code == 402:
            return SelectLineNoLicence(
                self.system,
                f"{self.system}: no free SelectLine licence (402 on {operation}){suffix}; "
                "another client holds every seat; will retry",
                operation=operation,
                status_code=402,
            )
        if response.status_code == 503:
            return SelectLineUnreachable(
                self.system,
                f"{self.system}: the SelectLine server is unreachable (503 on {operation})"
                f"{suffix}; will retry",
                operation=operation,
                status_code=503,
            )
        if response.status_code in (400, 401, 403, 409):
            wait = self._login_backoff
            self._login_backoff = min(wait * 2, LOGIN_BACKOFF_MAX)
            error = SelectLineLoginRefused(
                self.system,
                f"{self.system}: login refused ({response.status_code} on {operation}){suffix}; "
                "check the user, the password file and the AppKey of this [[erp]] section; "
                f"not trying again for {wait:.0f} s",
                operation=operation,
                status_code=response.status_code,
                retry_after=wait,
            )
            self._refused, self._refused_until = error, self._clock() + wait
            return error
        return self._status_error(response, operation)

    # -- one call --------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> httpx.Response:
        all_headers = {"Accept": "application/json"}
        if content is not None:
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        try:
            if files is not None:  # multipart/form-data: httpx sets the boundary's header
                return await self.http.request(
                    method, path, params=params, files=files, headers=all_headers
                )
            return await self.http.request(
                method, path, params=params, content=content, headers=all_headers
            )
        except httpx.HTTPError as exc:
            raise translate_http_error(exc, system=self.system, operation=operation) from exc

    async def call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
        body: object = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> httpx.Response:
        """One authorised call; a stale token costs one re-login and one repeat, no more."""
        content = None if body is None else ENCODER.encode(body)
        token = await self.login()
        response = await self._send(
            method,
            path,
            operation=operation,
            params=params,
            content=content,
            headers={"Authorization": token},
            files=files,
        )
        if response.status_code in (401, 403):
            await self._forget(token)
            token = await self.login()
            response = await self._send(
                method,
                path,
                operation=operation,
                params=params,
                content=content,
                headers={"Authorization": token},
                files=files,
            )
        if response.status_code >= 300:
            raise self._status_error(response, operation)
        return response

    async def _forget(self, token: str) -> None:
        async with self._login_lock:
            if self._token == token:  # another caller may have logged in again already
                self._token = None

    def _status_error(self, response: httpx.Response, operation: str) -> Exception:
        detail = _api_message(response)
        if response.status_code == 503:
            suffix = f": {detail}" if detail else ""
            return SelectLineUnreachable(
                self.system,
                f"{self.system}: the SelectLine server is unreachable (503 on {operation})"
                f"{suffix}; will retry",
                operation=operation,
                status_code=503,
            )
        error = status_error(response, system=self.system, operation=operation, detail=detail)
        if isinstance(error, TransientUpstreamError):
            return error
        rejected = SelectLineRejected(
            self.system, error.message, operation=operation, status_code=response.status_code
        )
        rejected.response_id = _api_response_id(response)
        return rejected

    async def _list(
        self,
        path: str,
        decoder: msgspec.json.Decoder[list[T]],
        *,
        operation: str,
        params: Mapping[str, str | int] | None = None,
    ) -> list[T]:
        rows: list[T] = []
        for page in range(MAX_PAGES):
            query: dict[str, str | int] = {**(params or {}), "page": page, "items": self.page_size}
            response = await self.call("GET", path, operation=operation, params=query)
            batch = _decode(decoder, response, system=self.system, operation=operation)
            rows.extend(batch)
            if len(batch) < self.page_size:
                return rows
        raise SelectLineRejected(
            self.system,
            f"{self.system}: {operation} kept returning full pages after {MAX_PAGES} pages",
            operation=operation,
        )

    # -- reads -----------------------------------------------------------------------------

    async def info(self) -> ApiInfo:
        """`GET /Info` (no login): the health probe, with the server's clock."""
        response = await self._send("GET", "/Info", operation="GET /Info")
        if response.status_code != 200:
            raise self._status_error(response, "GET /Info")
        return _decode(DECODERS.info, response, system=self.system, operation="GET /Info")

    async def warehouses(self) -> list[Warehouse]:
        return await self._list("/Warehouses", DECODERS.warehouses, operation="GET /Warehouses")

    async def stocks(self) -> list[Stock]:
        return await self._list(
            "/Warehouses/Stocks", DECODERS.stocks, operation="GET /Warehouses/Stocks"
        )

    async def articles(self) -> list[Article]:
        return await self._list(
            "/Articles",
            DECODERS.articles,
            operation="GET /Articles",
            params={"includeInactiveArticles": "true"},
        )

    async def articles_by_gtin(self, gtin: str) -> list[Article]:
        return await self._list(
            "/Articles",
            DECODERS.articles,
            operation="GET /Articles",
            params={"filter": filter_eq(EuropeanArticleNumber=gtin)},
        )

    async def documents(self, **conditions: str) -> list[DocumentReadModel]:
        """Documents matching every `Property = value` (e.g. KindFlag, BusinessPartnerContract)."""
        params = {"filter": filter_eq(**conditions)} if conditions else {}
        return await self._list(
            "/Documents", DECODERS.documents, operation="GET /Documents", params=params
        )

    async def partner_documents(
        self, kind: str, address_kind: str, partner: str, **conditions: str
    ) -> list[DocumentReadModel]:
        """Documents of `kind` of one business partner: `selectAddressKind` (Customer,
        Supplier, ...) with `selectBusinessPartnerNumber`, as the spec asks (customer and
        supplier numbers may be the same), plus `Property = value` conditions. The spec names
        the parameters `documentListFilter.<name>`; like every list call here they go bare
        (as the SLA demos send them), never mixed with prefixed ones."""
        params: dict[str, str | int] = {
            "selectDocumentKindFlag": kind,
            "selectAddressKind": address_kind,
            "selectBusinessPartnerNumber": partner,
        }
        if conditions:
            params["filter"] = filter_eq(**conditions)
        return await self._list(
            "/Documents", DECODERS.documents, operation="GET /Documents", params=params
        )

    async def supplier_documents(self, kind: str, since: date) -> list[DocumentReadModel]:
        """Every supplier's documents of `kind` dated `since` or later (`selectAddressKind`
        Supplier with `selectFromDate`, the list endpoint's own filters), paged."""
        params: dict[str, str | int] = {
            "selectDocumentKindFlag": kind,
            "selectAddressKind": "Supplier",
            "selectFromDate": since.isoformat(),
        }
        return await self._list(
            "/Documents", DECODERS.documents, operation="GET /Documents", params=params
        )

    async def document(self, key: str) -> DocumentReadModel:
        operation = "GET /Documents/{key}"
        response = await self.call("GET", f"/Documents/{key}", operation=operation)
        return _decode(DECODERS.document, response, system=self.system, operation=operation)

    async def positions(self, key: str) -> list[DocumentPositionReadModel]:
        operation = "GET /Documents/{key}/Positions"
        response = await self.call("GET", f"/Documents/{key}/Positions", operation=operation)
        return _decode(DECODERS.positions, response, system=self.system, operation=operation)

    async def successors(self, key: str) -> list[DocumentReadModel]:
        operation = "GET /Documents/{key}/Successors"
        response = await self.call("GET", f"/Documents/{key}/Successors", operation=operation)
        return _decode(DECODERS.documents, response, system=self.system, operation=operation)

    async def finished_documents(self, kind: str, since: date) -> list[DocumentReadModel]:
        """Documents of `kind` dated `since` or later that the ERP has done (`Done`: status 2
        or 3), e.g. the delivery notes the warehouse shipped."""
        return await self.documents_in_state(kind, "Done", since=since)

    async def documents_in_state(
        self, kind: str, state: str, *, since: date | None = None
    ) -> list[DocumentReadModel]:
        """Documents of `kind` in `selectDocumentState` (All, Done, InProgress, Open)."""
        params = {"selectDocumentKindFlag": kind, "selectDocumentState": state}
        if since is not None:
            params["selectFromDate"] = since.isoformat()
        return await self._list(
            "/Documents", DECODERS.documents, operation="GET /Documents", params=params
        )

    async def journals(self, key: str) -> list[JournalModelRead]:
        return await self._list(
            f"/Documents/{key}/Journals",
            DECODERS.journals,
            operation="GET /Documents/{key}/Journals",
        )

    async def attachments(self, journal: str) -> list[AttachmentInfo]:
        return await self._list(
            f"/Journals/{journal}/Attachments",
            DECODERS.attachments,
            operation="GET /Journals/{id}/Attachments",
        )

    async def customers(self, **conditions: str) -> list[Customer]:
        params = {"filter": filter_eq(**conditions)} if conditions else {}
        return await self._list(
            "/Customers", DECODERS.customers, operation="GET /Customers", params=params
        )

    async def open_items(self) -> list[OpenItemDto]:
        """Every open item ("OP"), `top`/`skip` pages until a short one."""
        operation = "GET /Accounting/OpenItems"
        items: list[OpenItemDto] = []
        for page in range(MAX_PAGES):
            params = {"top": self.page_size, "skip": page * self.page_size}
            response = await self.call(
                "GET", "/Accounting/OpenItems", operation=operation, params=params
            )
            batch = _decode(DECODERS.open_items, response, system=self.system, operation=operation)
            items.extend(batch.Value)
            if len(batch.Value) < self.page_size:
                break
        return items

    # -- writes ----------------------------------------------------------------------------

    async def create_document(self, model: DocumentCreateModel) -> DocumentCreated:
        response = await self.call("POST", "/Documents", operation="POST /Documents", body=model)
        return _decode(DECODERS.created, response, system=self.system, operation="POST /Documents")

    async def update_document(self, key: str, model: DocumentUpdateModel) -> None:
        await self.call("PUT", f"/Documents/{key}", operation="PUT /Documents/{key}", body=model)

    async def delete_document(self, key: str) -> None:
        await self.call("DELETE", f"/Documents/{key}", operation="DELETE /Documents/{key}")

    async def add_article(self, key: str, item: ArticlePositionItem) -> DocumentPositionCreated:
        operation = "POST /Documents/{key}/ArticleItem"
        response = await self.call(
            "POST", f"/Documents/{key}/ArticleItem", operation=operation, body=item
        )
        return _decode(DECODERS.position_created, response, system=self.system, operation=operation)

    async def add_shipping(
        self, key: str, item: DocumentPositionWithShippingItemCreateModel
    ) -> DocumentPositionCreated:
        operation = "POST /Documents/{key}/ShippingItemPosition"
        response = await self.call(
            "POST", f"/Documents/{key}/ShippingItemPosition", operation=operation, body=item
        )
        return _decode(DECODERS.position_created, response, system=self.system, operation=operation)

    async def create_successor(self, key: str, data: SuccessorsDocumentData) -> DocumentCreated:
        if not data.Positions:
            # The API would transfer every position with quantity 0 (reference §8).
            raise ValueError("a successor needs the positions it transfers; [] would mean 0 each")
        operation = "POST /Documents/{key}/Successors"
        response = await self.call(
            "POST", f"/Documents/{key}/Successors", operation=operation, body=data
        )
        return _decode(DECODERS.created, response, system=self.system, operation=operation)

    async def set_status(self, key: str, status: EnumerationValue) -> None:
        await self.call(
            "PUT", f"/Documents/{key}/Status", operation="PUT /Documents/{key}/Status", body=status
        )

    async def add_journal(self, key: str, journal: JournalCreateModel) -> JournalCreated:
        operation = "POST /Documents/{key}/Journals"
        response = await self.call(
            "POST", f"/Documents/{key}/Journals", operation=operation, body=journal
        )
        return _decode(DECODERS.journal_created, response, system=self.system, operation=operation)

    async def add_attachment(
        self, journal: str, filename: str, content: bytes, media_type: str
    ) -> JournalAttachmentCreated:
        """One file to a journal, as the spec asks: multipart/form-data, a part per file with
        its own Content-Type and a file name."""
        operation = "POST /Journals/{id}/Attachments"
        response = await self.call(
            "POST",
            f"/Journals/{journal}/Attachments",
            operation=operation,
            files={"file": (filename, content, media_type)},
        )
        return _decode(
            DECODERS.attachment_created, response, system=self.system, operation=operation
        )

    async def create_customer(self, customer: Customer) -> CustomerCreated:
        response = await self.call("POST", "/Customers", operation="POST /Customers", body=customer)
        return _decode(
            DECODERS.customer_created, response, system=self.system, operation="POST /Customers"
        )


def _api_response(response: httpx.Response) -> Any:
    try:
        return DECODERS.error.decode(response.content)
    except msgspec.DecodeError:
        return None


def _api_message(response: httpx.Response) -> str:
    """The ApiResponse's own words, secret-free: its Message and ResponseIdDescription."""
    body = _api_response(response)
    if body is None:
        return ""
    parts = [part for part in (body.Message, body.ResponseIdDescription) if part]
    return " - ".join(dict.fromkeys(parts))[:300]


def _api_response_id(response: httpx.Response) -> int | None:
    body = _api_response(response)
    return None if body is None else body.ResponseId


def _decode(
    decoder: msgspec.json.Decoder[T], response: httpx.Response, *, system: str, operation: str
) -> T:
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:
        raise SelectLineRejected(
            system,
            f"{system}: {operation} answered what is not its model: {exc}",
            operation=operation,
        ) from exc

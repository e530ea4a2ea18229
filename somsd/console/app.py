"""The operator and store console at `/console`: server-rendered pages over the operator API.

Every read and action goes through the existing JSON API routes, called in-process over ASGI
(no socket) with the admin token: the console adds sessions, pages and a location scope for
store staff, and no business logic of its own, so what the console does is exactly what
`curl` and `somsd` do, validation and history included. The person logged in is passed as
`X-Somsd-User`, which the API writes into the events ("who").

Store staff log in with a token from their location's `staff_token_file` and get only that
location's fulfilments; any other page or another location's fulfilment is 403.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qs, quote, urlencode

import httpx
import jinja2
import trio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from somsd.api import ApiError, read_limited_body
from somsd.console.i18n import LANGUAGES, choose_language, translations
from somsd.console.session import SESSION_SECONDS, Role, Session, SessionKeeper
from somsd.console.supplier_invoices import supplier_invoice_routes
from somsd.projections.fulfilments import FULFILMENT_STREAM_PREFIX
from somsd.secrets import Secret

__all__ = ["ConsoleDeps", "build_console", "with_console"]

PREFIX: Final = "/console"
SESSION_COOKIE: Final = "somsd_console"
LOGIN_COOKIE: Final = "somsd_console_login"
LANG_COOKIE: Final = "somsd_console_lang"
PAGE_SIZE: Final = 50
# Live updates: the event log is read this often per open page; a connection ends after
# LIVE_SECONDS and the browser's EventSource reconnects from its Last-Event-ID.
LIVE_POLL_SECONDS: Final = 1.0
LIVE_SECONDS: Final = 300.0
LIVE_BATCH: Final = 200
# Fields of a form the console accepts; a longer value is someone else's data, not a form.
MAX_FIELD: Final = 2000
MAX_FORM_BYTES: Final = 64 * 1024

_HERE = Path(__file__).resolve().parent

# No inline script or style: what an injected string could smuggle in has nothing to run.
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}


@dataclass
class ConsoleDeps:
    """What the console needs from the daemon, as plain callables."""

    api: ASGIApp  # the API listener's app, called in-process
    admin_tokens: Callable[[], Sequence[Secret]]
    staff_tokens: Callable[[], Mapping[str, Sequence[Secret]]]  # location -> tokens
    outbox_counts: Callable[[], Awaitable[tuple[Mapping[str, int], Mapping[str, int]]]]
    # (after seq, limit) -> new event-log rows as (seq, stream, type, recorded_at)
    events_after: Callable[[int, int], Awaitable[Sequence[tuple[int, str, str, str]]]]
    head_seq: Callable[[], Awaitable[int]]
    # location -> its `label_printer` (only locations that have one); for the pack step
    label_printers: Callable[[], Mapping[str, str]] = lambda: {}
    # every configured channel's name: the stock page asks each for its last reconciliation
    channels: Callable[[], Sequence[str]] = lambda: ()


class Forbidden(Exception):
    pass


class ApiFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,  # every {{ }} is HTML-escaped: customer data is text, never markup
        # a field the API omits renders empty rather than failing the page
        undefined=jinja2.Undefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pretty"] = lambda value: json.dumps(value, indent=2, ensure_ascii=False)
    env.filters["urlq"] = lambda value: quote(str(value), safe="")
    return env


class Console:
    def __init__(self, deps: ConsoleDeps, keeper: SessionKeeper | None = None) -> None:
        self.deps = deps
        self.keeper = keeper or SessionKeeper()
        self.env = _environment()
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=deps.api), base_url="http://somsd.console"
        )

    # -- plumbing ---------------------------------------------------------------------

    def _tokens(self, session: Session) -> list[Secret]:
        """The tokens that still make `session` valid: its location's, or the admin tokens."""
        if session.role == "staff":
            return list(self.deps.staff_tokens().get(session.location or "", ()))
        return list(self.deps.admin_tokens())

    def session(self, request: Request) -> Session | None:
        return self.keeper.read(request.cookies.get(SESSION_COOKIE), self._tokens)

    def language(self, request: Request) -> str:
        return choose_language(
            request.cookies.get(LANG_COOKIE), request.headers.get("accept-language", "")
        )

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> HTMLResponse:
        language = self.language(request)
        html = self.env.get_template(template).render(
            t=translations(language),
            lang=language,
            languages=LANGUAGES,
            session=session,
            csrf=self.keeper.csrf_token(session) if session else "",
            here=_here(request),
            prefix=PREFIX,
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def api(
        self,
        method: str,
        path: str,
        session: Session,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
    ) -> Any:
        tokens = self.deps.admin_tokens()
        if not tokens:
            raise ApiFailure(403, "admin API is disabled; set api.token_file")
        headers = {
            "Authorization": f"Bearer {tokens[0].reveal()}",
            "X-Somsd-User": session.user,
        }
        response = await self.client.request(
            method,
            path,
            params={k: v for k, v in (params or {}).items() if v},
            json=body,
            headers=headers,
        )
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ApiFailure(response.status_code, str(message))
        return response.json()

    async def api_file(self, path: str, session: Session, accept: str) -> httpx.Response:
        """A file the API serves (a PDF, a label), fetched with the admin token in-process so
        the browser only ever holds its session cookie."""
        tokens = self.deps.admin_tokens()
        if not tokens:
            raise ApiFailure(403, "admin API is disabled; set api.token_file")
        response = await self.client.get(
            path,
            headers={
                "Authorization": f"Bearer {tokens[0].reveal()}",
                "X-Somsd-User": session.user,
                "Accept": accept,
            },
        )
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise ApiFailure(response.status_code, str(message))
        return response

    async def _form(self, request: Request) -> dict[str, str]:
        """An url-encoded form (the only kind the console's pages send), size-limited.

        Parsed with the standard library: the console's forms are a few short fields, which
        does not warrant a multipart dependency."""
        try:
            raw = await read_limited_body(request, MAX_FORM_BYTES, limit_name="the form limit")
        except ApiError as exc:
            raise ApiFailure(exc.status, exc.message) from None
        fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=50)
        return {key: values[0][:MAX_FIELD] for key, values in fields.items()}

    # -- route wrappers ---------------------------------------------------------------

    def page(
        self,
        handler: Callable[[Request, Session], Awaitable[Response]],
        *,
        staff: bool = False,
    ) -> Callable[[Request], Awaitable[Response]]:
        """A page or action behind a session (and, for POST, the CSRF token)."""

        async def endpoint(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                if request.method == "GET":
                    target = f"{PREFIX}/login?{urlencode({'next': request.url.path})}"
                    return RedirectResponse(target, 303)
                return self.render(request, "error.html", None, 403, message="no session")
            if session.role == "staff" and not staff:
                t = translations(self.language(request))
                return self.render(request, "error.html", session, 403, message=t["forbidden"])
            try:
                if request.method == "POST":
                    form = await self._form(request)
                    if not self.keeper.csrf_ok(session, form.get("csrf")):
                        return self.render(
                            request, "error.html", session, 403, message="CSRF token missing"
                        )
                    request.state.form = form
                return await handler(request, session)
            except Forbidden:
                t = translations(self.language(request))
                return self.render(request, "error.html", session, 403, message=t["forbidden"])
            except ApiFailure as failure:
                status = failure.status if 400 <= failure.status < 500 else 502
                return self.render(request, "error.html", session, status, message=failure.message)

        return endpoint

    # -- login ------------------------------------------------------------------------

    async def login_form(self, request: Request, failed: bool = False) -> Response:
        pre = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
        nxt = request.query_params.get("next", "")
        response = self.render(
            request,
            "login.html",
            None,
            401 if failed else 200,
            login_csrf=self.keeper.login_csrf(pre),
            failed=failed,
            next=nxt if _safe_next(nxt) else "",
            console_off=not self.deps.admin_tokens(),
        )
        login_path = PREFIX + "/login"
        self._cookie(response, request, name=LOGIN_COOKIE, value=pre, max_age=900, path=login_path)
        return response

    async def login(self, request: Request) -> Response:
        try:
            form = await self._form(request)
        except ApiFailure as failure:
            return self.render(request, "error.html", None, failure.status, message=failure.message)
        if not self.keeper.login_csrf_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
            return self.render(request, "error.html", None, 403, message="CSRF token missing")
        given = form.get("token", "").strip()
        # the API records it as "user:<name>"
        user = form.get("user", "").strip()[:100] or "console"
        match = self._match_token(given)
        if match is None:
            return await self.login_form(request, failed=True)
        role, location, secret = match
        cookie = self.keeper.issue(role, location, user, secret)
        nxt = form.get("next", "")
        home = f"{PREFIX}/store" if role == "staff" else f"{PREFIX}/orders"
        response = RedirectResponse(nxt if _safe_next(nxt) and role == "admin" else home, 303)
        self._cookie(response, request, name=SESSION_COOKIE, value=cookie, max_age=SESSION_SECONDS)
        response.delete_cookie(LOGIN_COOKIE, path=PREFIX + "/login")
        return response

    def _match_token(self, given: str) -> tuple[Role, str | None, Secret] | None:
        if not given or not self.deps.admin_tokens():
            return None
        found: tuple[Role, str | None, Secret] | None = None
        for secret in self.deps.admin_tokens():
            if secret.matches(given) and found is None:
                found = ("admin", None, secret)
        for location, tokens in sorted(self.deps.staff_tokens().items()):
            for secret in tokens:
                if secret.matches(given) and found is None:
                    found = ("staff", location, secret)
        return found

    async def logout(self, request: Request, session: Session) -> Response:
        self.keeper.revoke(session)
        response = RedirectResponse(f"{PREFIX}/login", 303)
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    @staticmethod
    def _cookie(
        response: Response,
        request: Request,
        *,
        name: str,
        value: str,
        max_age: int,
        path: str = PREFIX,
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    async def switch_language(self, request: Request) -> Response:
        language = request.path_params["language"]
        nxt = request.query_params.get("next", "")
        response = RedirectResponse(nxt if _safe_next(nxt) else f"{PREFIX}/orders", 303)
        if language in LANGUAGES:
            self._cookie(response, request, name=LANG_COOKIE, value=language, max_age=365 * 86400)
        return response

    # -- operator pages ---------------------------------------------------------------

    async def home(self, request: Request, session: Session) -> Response:
        return RedirectResponse(
            f"{PREFIX}/store" if session.role == "staff" else f"{PREFIX}/orders", 303
        )

    async def orders(self, request: Request, session: Session) -> Response:
        q = request.query_params
        filters = {key: q.get(key, "")[:200] for key in ("q", "status", "channel", "cursor")}
        page = await self.api(
            "GET", "/v1/orders", session, params={**filters, "limit": str(PAGE_SIZE)}
        )
        next_query = urlencode({**filters, "cursor": page["next_cursor"] or ""})
        return self.render(
            request,
            "orders.html",
            session,
            orders=page["orders"],
            filters=filters,
            next_query=next_query if page["next_cursor"] is not None else None,
        )

    async def order(self, request: Request, session: Session) -> Response:
        order_id = request.path_params["order_id"]
        as_of = request.query_params.get("as_of", "").strip()[:64]
        path = f"/v1/orders/{quote(order_id, safe='')}"
        detail = await self.api("GET", path, session, params={"as_of": as_of})
        events = await self.api("GET", path + "/events", session)
        try:
            documents = (await self.api("GET", path + "/documents", session))["documents"]
        except ApiFailure as failure:
            if failure.status != 404:  # no documents module or no order: nothing to link
                raise
            documents = []
        if as_of:
            # the timeline up to that moment, as the state shown
            # (the API has checked as_of already: it is a valid time here)
            cut = _parse_time(as_of) or datetime.now(UTC)
            events = [e for e in events if (_parse_time(e["recorded_at"]) or cut) <= cut]
        return self.render(
            request,
            "order.html",
            session,
            o=detail,
            documents=documents,
            events=[_timeline_entry(e) for e in events],
            as_of=as_of,
            now=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        )

    async def release(self, request: Request, session: Session) -> Response:
        order_id = request.path_params["order_id"]
        reason = request.state.form.get("reason", "")
        await self.api(
            "POST",
            f"/v1/orders/{quote(order_id, safe='')}/release",
            session,
            body={"reason": reason},
        )
        nxt = request.state.form.get("next", "")
        return RedirectResponse(
            nxt if _safe_next(nxt) else f"{PREFIX}/orders/{quote(order_id, safe='')}", 303
        )

    async def holds(self, request: Request, session: Session) -> Response:
        page = await self.api(
            "GET", "/v1/orders", session, params={"status": "on-hold", "limit": "500"}
        )
        held = []
        for summary in page["orders"][:100]:
            path = f"/v1/orders/{quote(summary['order_id'], safe='')}"
            detail = await self.api("GET", path, session)
            held.append({**summary, "hold_reasons": detail.get("hold_reasons", [])})
        return self.render(request, "holds.html", session, orders=held)

    async def dead_letters(self, request: Request, session: Session) -> Response:
        target = request.query_params.get("target", "")[:200]
        page = await self.api("GET", "/v1/dead-letters", session, params={"target": target})
        done = request.query_params.get("done", "")[:100]
        return self.render(
            request,
            "dead_letters.html",
            session,
            letters=page["dead_letters"],
            target=target,
            done=done,
        )

    async def retry(self, request: Request, session: Session) -> Response:
        entry = request.path_params["entry"]
        await self.api("POST", f"/v1/dead-letters/{quote(entry, safe='')}/retry", session)
        return RedirectResponse(f"{PREFIX}/dead-letters?done=1", 303)

    async def retry_all(self, request: Request, session: Session) -> Response:
        target = request.state.form.get("target", "")
        if not target:
            raise ApiFailure(422, "target: name the target whose dead letters to retry")
        page = await self.api(
            "GET", "/v1/dead-letters", session, params={"target": target, "limit": "1000"}
        )
        for letter in page["dead_letters"]:
            await self.api("POST", f"/v1/dead-letters/{letter['id']}/retry", session)
        done = urlencode({"done": str(len(page["dead_letters"]))})
        return RedirectResponse(f"{PREFIX}/dead-letters?{done}", 303)

    async def system(self, request: Request, session: Session, result: Any = None) -> Response:
        report = await self.api("GET", "/v1/admin/actors", session)
        pending, dead = await self.deps.outbox_counts()
        targets = sorted({*pending, *dead})
        backlog = [(t, pending.get(t, 0), dead.get(t, 0)) for t in targets]
        return self.render(
            request, "system.html", session, report=report, backlog=backlog, result=result
        )

    async def reload(self, request: Request, session: Session) -> Response:
        try:
            result = await self.api("POST", "/v1/admin/reload", session)
        except ApiFailure as failure:
            result = {"applied": False, "error": failure.message}
        return await self.system(request, session, result=result)

    # -- work queues ------------------------------------------------------------------

    async def backorders(self, request: Request, session: Session) -> Response:
        """Orders waiting for stock, grouped by SKU, with that SKU's stock at every location
        (where it could come from) and since when each order waits."""
        sku = request.query_params.get("sku", "")[:200]
        page = await self.api(
            "GET", "/v1/backorders", session, params={"sku": sku, "limit": str(PAGE_SIZE * 10)}
        )
        by_sku: dict[str, list[dict[str, Any]]] = {}
        for backorder in page["backorders"]:
            for line in backorder["lines"]:
                if not sku or line["sku"] == sku:
                    by_sku.setdefault(line["sku"], []).append({**backorder, "waiting": line})
        groups = []
        for name in sorted(by_sku)[:PAGE_SIZE]:
            # by prefix, not /v1/inventory/{sku}: a SKU may hold a "/" that no path keeps
            found = await self.api(
                "GET", "/v1/stock", session, params={"sku": name, "limit": str(PAGE_SIZE)}
            )
            stock: dict[str, Any] = next(
                (i for i in found["items"] if i["sku"] == name), {"locations": {}}
            )
            orders = by_sku[name]
            groups.append(
                {
                    "sku": name,
                    "units": sum(o["waiting"]["quantity"] for o in orders),
                    "orders": orders,
                    "locations": stock["locations"],
                }
            )
        return self.render(request, "backorders.html", session, groups=groups, sku=sku)

    async def invalid_documents(self, request: Request, session: Session) -> Response:
        documents = await self.api("GET", "/v1/documents/invalid", session)
        for document in documents:
            # one entry per failed rule and message, however many places break it
            errors: dict[tuple[str, str], dict[str, Any]] = {}
            for finding in document["findings"]:
                if finding["severity"] == "error":
                    key = (finding["rule"], finding["message"])
                    entry = errors.setdefault(
                        key, {"rule": key[0], "message": key[1], "locations": []}
                    )
                    if finding.get("location"):
                        entry["locations"].append(finding["location"])
            document["errors"] = list(errors.values())
        return self.render(request, "documents_invalid.html", session, documents=documents)

    async def document_file(self, request: Request, session: Session) -> Response:
        """An invoice's or credit note's PDF (or e-invoice XML) through the session."""
        number, kind = request.path_params["number"], request.path_params["kind"]
        media = _DOCUMENT_MEDIA.get(kind)
        if media is None:
            raise ApiFailure(404, f"no {kind[:20]!r} file of a document; use pdf or xml")
        found = await self.api_file(f"/v1/documents/{quote(number, safe='')}", session, media)
        return _download(found, f"{_filename(number)}.{kind}", media)

    # -- stock ------------------------------------------------------------------------

    async def stock(self, request: Request, session: Session) -> Response:
        location = self._location(request, session)
        q = request.query_params
        filters = {"sku": q.get("sku", "")[:200], "cursor": q.get("cursor", "")[:200]}
        page = await self.api(
            "GET",
            "/v1/stock",
            session,
            params={**filters, "location": location, "limit": str(PAGE_SIZE)},
        )
        items = page["items"]
        if session.role == "staff":
            # a store sees its own shelf: other locations' numbers and the channels' totals
            # (which add up other stores) are not its business
            items = [
                {"sku": i["sku"], "locations": _only(i["locations"], location), "channels": {}}
                for i in items
            ]
        reports = []
        if session.role == "admin":
            for channel in self.deps.channels():
                path = f"/v1/channels/{quote(channel, safe='')}/reconciliation"
                try:
                    reports.append((channel, await self.api("GET", path, session)))
                except ApiFailure as failure:
                    if failure.status != 404:
                        raise
                    reports.append((channel, None))
        next_query = (
            urlencode({"sku": filters["sku"], "location": location, "cursor": page["next_cursor"]})
            if page["next_cursor"] is not None
            else None
        )
        return self.render(
            request,
            "stock.html",
            session,
            items=items,
            channels=page["channels"] if session.role == "admin" else [],
            reports=reports,
            location=location,
            filters=filters,
            next_query=next_query,
        )

    # -- live updates -----------------------------------------------------------------

    async def live(self, request: Request, session: Session) -> Response:
        """Server-sent events: one per new event-log row, naming its stream and type only
        (the page decides whether it cares and offers a reload). Store staff get only
        fulfilment streams, and of those only that something changed, not which."""
        start = request.headers.get("last-event-id") or request.query_params.get("after", "")
        after = int(start) if start.isascii() and start.isdigit() and len(start) < 19 else None
        if after is None:
            after = await self.deps.head_seq()
        return StreamingResponse(
            self._live_events(after, session),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _live_events(self, after: int, session: Session) -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        deadline = trio.current_time() + LIVE_SECONDS
        while trio.current_time() < deadline:
            rows = await self.deps.events_after(after, LIVE_BATCH)
            for seq, stream, type_, recorded_at in rows:
                after = seq
                if session.role == "staff":
                    if not stream.startswith(FULFILMENT_STREAM_PREFIX):
                        continue
                    data = {"seq": seq, "stream": "fulfilment", "type": "changed"}
                else:
                    data = {"seq": seq, "stream": stream, "type": type_, "at": recorded_at}
                yield f"id: {seq}\nevent: somsd\ndata: {json.dumps(data)}\n\n".encode()
            if len(rows) < LIVE_BATCH:
                await trio.sleep(LIVE_POLL_SECONDS)

    # -- store work -------------------------------------------------------------------

    def _location(self, request: Request, session: Session) -> str:
        """The location a page is about: a store worker's own (asking for another is a 403),
        or the operator's choice (empty: all)."""
        asked = request.query_params.get("location", "")[:100]
        if session.role == "staff":
            own = session.location or ""
            if asked and asked != own:
                raise Forbidden
            return own
        return asked

    async def store(self, request: Request, session: Session) -> Response:
        location = self._location(request, session)
        work = await self.api(
            "GET", "/v1/fulfillments", session, params={"location": location, "limit": "500"}
        )
        # the pickup code is the customer's proof: never on a list, whatever the API sends
        items = [{k: v for k, v in f.items() if k != "pickup_code"} for f in work["fulfillments"]]
        return self.render(request, "store.html", session, items=items, location=location)

    async def _own_fulfilment(self, request: Request, session: Session) -> dict[str, Any]:
        fid = request.path_params["fulfilment_id"]
        view: dict[str, Any] = await self.api(
            "GET", f"/v1/fulfillments/{quote(fid, safe='')}", session
        )
        if session.role == "staff" and view["location"] != session.location:
            raise Forbidden
        view.pop("pickup_code", None)
        return view

    async def fulfilment(self, request: Request, session: Session) -> Response:
        view = await self._own_fulfilment(request, session)
        printer = (
            self.deps.label_printers().get(view["location"]) if view["kind"] != "pickup" else None
        )
        return self.render(
            request,
            "fulfilment.html",
            session,
            f=view,
            printer=printer,
            label_ready=view["kind"] == "pickup" or view["state"] not in _BEFORE_LABEL,
        )

    async def label(self, request: Request, session: Session) -> Response:
        """The carrier label (or a pickup's slip) to download and print at the packing desk."""
        view = await self._own_fulfilment(request, session)
        fid = quote(view["id"], safe="")
        found = await self.api_file(f"/v1/fulfillments/{fid}/label", session, "*/*")
        media = found.headers.get("content-type", "application/octet-stream").split(";")[0]
        suffix = "zpl" if "zpl" in media else "pdf"
        return _download(found, f"label-{_filename(view['id'])}.{suffix}", media)

    async def delivery_note(self, request: Request, session: Session) -> Response:
        view = await self._own_fulfilment(request, session)
        fid = quote(view["id"], safe="")
        found = await self.api_file(
            f"/v1/fulfillments/{fid}/delivery-note", session, "application/pdf"
        )
        return _download(found, f"delivery-note-{_filename(view['id'])}.pdf", "application/pdf")

    async def transfers_in(self, request: Request, session: Session) -> Response:
        location = self._location(request, session)
        transfers: list[Any] = []
        if location:
            path = f"/v1/locations/{quote(location, safe='')}/transfers-in"
            found = await self.api("GET", path, session)
            transfers = [
                {k: v for k, v in f.items() if k != "pickup_code"} for f in found["transfers"]
            ]
        return self.render(
            request, "transfers_in.html", session, transfers=transfers, location=location
        )

    async def step(self, request: Request, session: Session) -> Response:
        view = await self._own_fulfilment(request, session)
        step = request.path_params["step"]
        form = request.state.form
        body: dict[str, Any] = {}
        if step == "ship":
            body = {"carrier": form.get("carrier", ""), "tracking_number": form.get("tracking", "")}
        elif step == "picked-up":
            body = {"pickup_code": form.get("pickup_code", "")}
        elif step == "reject":
            quantity = form.get("quantity", "")
            if not (quantity.isascii() and quantity.isdigit() and len(quantity) < 8):
                raise ApiFailure(422, "quantity: a whole number of units")
            line = {"sku": form.get("sku", ""), "quantity": int(quantity)}
            body = {"lines": [line], "reason": form.get("reason", "")}
        elif step not in ("accept", "pick", "pack", "ready"):
            raise ApiFailure(404, f"no step {step!r} in the console")
        fid = quote(view["id"], safe="")
        await self.api("POST", f"/v1/fulfillments/{fid}/{step}", session, body=body)
        return RedirectResponse(f"{PREFIX}/store/{fid}", 303)

    async def aclose(self) -> None:
        await self.client.aclose()


_DOCUMENT_MEDIA: Final = {"pdf": "application/pdf", "xml": "application/xml"}
# A carrier label is bought when the parcel is packed: before that there is none to fetch.
_BEFORE_LABEL: Final = frozenset({"requested", "accepted", "picked"})


def _only(locations: Mapping[str, Any], location: str) -> dict[str, Any]:
    return {name: stock for name, stock in locations.items() if name == location}


def _filename(text: str) -> str:
    """A download's name from a number or id: letters, digits, dash and dot only."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-.") else "_" for c in text)[:100]


def _download(found: httpx.Response, filename: str, media: str) -> Response:
    response = Response(found.content, media_type=media)
    response.headers.update(SECURITY_HEADERS)
    # attachment: a PDF or label opens in the viewer or printer tool, never as a console page
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _here(request: Request) -> str:
    """Where the language switch returns to: this page, or for a POST's answer (a GET there
    would be 405) the page the form was on."""
    if request.method == "GET":
        return request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return request.url.path.rsplit("/", 1)[0] or PREFIX + "/"


def _safe_next(target: str) -> bool:
    """Only a console path: `next` must not turn the login into an open redirect."""
    return target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target


def _parse_time(text: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(text)
        return value.astimezone(UTC) if value.tzinfo else None
    except (ValueError, OverflowError):
        return None


_QUIET_FIELDS: Final = frozenset({"type", "at", "actor", "reason", "order", "document"})


def _timeline_entry(record: Mapping[str, Any]) -> dict[str, Any]:
    event = record["event"]
    why = event.get("reason") or ""
    if not why and isinstance(event.get("reasons"), list):
        why = "; ".join(str(r.get("message", r)) for r in event["reasons"])
    return {
        "recorded_at": record["recorded_at"],
        "type": event.get("type", "?"),
        "actor": event.get("actor", ""),
        "why": why,
        "details": {k: v for k, v in event.items() if k not in _QUIET_FIELDS},
    }


def build_console(deps: ConsoleDeps, keeper: SessionKeeper | None = None) -> Starlette:
    console = Console(deps, keeper)
    p = console.page
    routes = [
        Route("/login", console.login_form, methods=["GET"]),
        Route("/login", console.login, methods=["POST"]),
        Route("/logout", p(console.logout, staff=True), methods=["POST"]),
        Route("/lang/{language}", console.switch_language, methods=["GET"]),
        Route("/", p(console.home, staff=True), methods=["GET"]),
        Route("/orders", p(console.orders), methods=["GET"]),
        Route("/orders/{order_id}", p(console.order), methods=["GET"]),
        Route("/orders/{order_id}/release", p(console.release), methods=["POST"]),
        Route("/holds", p(console.holds), methods=["GET"]),
        Route("/dead-letters", p(console.dead_letters), methods=["GET"]),
        Route("/dead-letters/retry-all", p(console.retry_all), methods=["POST"]),
        Route("/dead-letters/{entry}/retry", p(console.retry), methods=["POST"]),
        Route("/backorders", p(console.backorders), methods=["GET"]),
        Route("/documents/invalid", p(console.invalid_documents), methods=["GET"]),
        Route("/documents/{number}/{kind}", p(console.document_file), methods=["GET"]),
        Route("/stock", p(console.stock, staff=True), methods=["GET"]),
        Route("/system", p(console.system), methods=["GET"]),
        Route("/system/reload", p(console.reload), methods=["POST"]),
        Route("/live", p(console.live, staff=True), methods=["GET"]),
        Route("/store", p(console.store, staff=True), methods=["GET"]),
        Route("/store/transfers-in", p(console.transfers_in, staff=True), methods=["GET"]),
        Route("/store/{fulfilment_id}", p(console.fulfilment, staff=True), methods=["GET"]),
        Route("/store/{fulfilment_id}/label", p(console.label, staff=True), methods=["GET"]),
        Route(
            "/store/{fulfilment_id}/delivery-note",
            p(console.delivery_note, staff=True),
            methods=["GET"],
        ),
        Route("/store/{fulfilment_id}/{step}", p(console.step, staff=True), methods=["POST"]),
        *supplier_invoice_routes(console),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return console.render(
            request, "error.html", console.session(request), exc.status_code, message=exc.detail
        )

    return Starlette(routes=routes, exception_handlers={HTTPException: not_found})


def with_console(api: ASGIApp, console: ASGIApp) -> ASGIApp:
    """The API app with the console answering `/console` and everything under it."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path == PREFIX:
            await RedirectResponse(PREFIX + "/", 308)(scope, receive, send)
            return
        if scope["type"] == "http" and path.startswith(PREFIX + "/"):
            # Starlette routes on the path below root_path; request.url keeps the full path
            root = scope.get("root_path", "") + PREFIX
            await console({**scope, "root_path": root}, receive, send)
            return
        await api(scope, receive, send)

    return app

"""The API listener: health, readiness, OpenAPI, admin routes, and routes other parts add.

Every route is declared once as an `ApiRoute` carrying its summary, whether it needs the admin
token, and its request/response Struct types; the OpenAPI document is generated from those
declarations with msgspec's JSON Schema support, so it cannot drift from the code.

Errors are JSON `{"error": {"code", "message", "path"?}}` everywhere (contract). While the
daemon drains for shutdown every route but the probes answers 503, so a load balancer or a
webhook sender retries elsewhere or later instead of getting a half-processed request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from somsd.secrets import Secret
from somsd.store import StoreUnavailable

__all__ = [
    "ApiError",
    "ApiRoute",
    "ApiState",
    "ErrorBody",
    "FastHandler",
    "FastRequest",
    "build_api_app",
    "decode_body",
    "json_response",
    "query_int",
    "read_limited_body",
]

_encoder = msgspec.json.Encoder()


class Problem(msgspec.Struct, frozen=True):
    path: str
    message: str


class ErrorDetail(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    path: str | None = None
    problems: tuple[Problem, ...] = ()  # every problem, when there are several


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


class ApiError(Exception):
    """Raised by a handler to answer with a JSON error; `path` names the offending JSON path."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        path: str | None = None,
        *,
        problems: Sequence[Any] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.path = path
        # Anything with `path` and `message` (the domain's Problem) is listed.
        self.problems = tuple(Problem(p.path, p.message) for p in problems)


async def read_limited_body(request: Request, limit: int, *, limit_name: str) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes (before it is
    all in memory), and with 400 if the client hangs up half-way."""
    too_large = _too_large(limit, limit_name)
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the body ended early") from None
    return b"".join(chunks)


class FastRequest:
    """What a fast route sees of a request: its path parameters, headers and body stream.

    A fast route (`ApiRoute.fast`) is called straight from the ASGI app, without Starlette's
    routing, middleware and `Request`: for the one route every order goes through (webhook
    intake), whose per-request cost in Starlette was measured at about a sixth of the daemon's
    main thread (bench/intake.py, issue 11). It answers exactly as its Starlette twin.
    """

    __slots__ = ("params", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive, params: dict[str, str]) -> None:
        self.scope = scope
        self.receive = receive
        self.params = params

    def header(self, name: bytes) -> str | None:
        """The first header `name` (lower case), decoded as Latin-1 like Starlette does."""
        for key, value in self.scope["headers"]:
            if key == name:
                return str(value.decode("latin-1"))
        return None

    async def read_limited_body(self, limit: int, *, limit_name: str) -> bytes:
        """As `read_limited_body`: 413 past `limit` (declared or streamed), 400 on a hang-up."""
        declared = self.header(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, limit_name)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ApiError(400, "client_disconnected", "the body ended early")
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit, limit_name)
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int, limit_name: str) -> ApiError:
    return ApiError(413, "body_too_large", f"body exceeds {limit_name} ({limit} bytes)")


# A fast route answers (status, JSON body); errors are raised as for any route.
FastHandler = Callable[[FastRequest], Awaitable[tuple[int, bytes]]]


_body_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


def body_decoder(type_: Any) -> msgspec.json.Decoder[Any]:
    """One decoder per body type, built on first use and kept (building one is the slow part)."""
    decoder = _body_decoders.get(type_)
    if decoder is None:
        decoder = _body_decoders[type_] = msgspec.json.Decoder(type_)
    return decoder


def decode_body(raw: bytes, decoder: msgspec.json.Decoder[Any]) -> Any:
    """Decode a JSON request body: 400 `malformed_json` for what is not JSON (or nests too
    deep to decode), 422 `invalid_body` with the JSON path for what does not fit the type."""
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message, _, path = str(exc).partition(" - at `")
        raise ApiError(422, "invalid_body", message, path.rstrip("`") or "$") from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"not valid JSON: {exc}", "$") from None
    except RecursionError:
        # msgspec guards its recursion with the interpreter's limit; no body of ours nests
        # more than a few levels, so a body that reaches it is garbage, not a server fault.
        raise ApiError(
            400, "malformed_json", "JSON nested too deeply to decode; no somsd body nests so", "$"
        ) from None


def query_int(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high], or 422 naming it and the range."""
    text = params.get(name)
    if text is None:
        return default
    # ASCII digits only (`str.isdigit` accepts "²", which `int` refuses) and no longer than
    # the bound: converting thousands of digits is work a request must not cause.
    if not (text.isascii() and text.isdigit() and len(text) <= len(str(high))) or not (
        low <= int(text) <= high
    ):
        raise ApiError(
            422, "invalid_query", f"{name} must be a whole number from {low} to {high}", name
        )
    return int(text)


def json_response(body: object, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def error_response(
    status: int,
    code: str,
    message: str,
    path: str | None = None,
    problems: tuple[Problem, ...] = (),
) -> Response:
    return json_response(ErrorBody(ErrorDetail(code, message, path, problems)), status)


Handler = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class ApiRoute:
    path: str
    method: str
    handler: Handler
    summary: str
    admin: bool = False  # needs `Authorization: Bearer <token>`
    request: Any = None  # msgspec type of the JSON body, for the OpenAPI document
    responses: dict[int, Any] = field(default_factory=dict)  # status -> msgspec type or None
    tags: tuple[str, ...] = ()
    # (name, JSON schema type or a whole JSON schema with the real range, description)
    query: tuple[tuple[str, str | dict[str, Any], str], ...] = ()
    # The same route without Starlette (see `FastRequest`); not for admin routes. The
    # Starlette `handler` still serves it when the fast path does not apply.
    fast: FastHandler | None = None
    # With [cluster]: the leased duty that must run on the answering daemon, as a template of
    # the path parameters ("channel/{channel}"); a member that does not hold that lease answers
    # 503 naming the owner (actors/owned_elsewhere.py). None: any member answers.
    runs_on: str | None = None


@dataclass
class ApiState:
    """What the API needs from the daemon, as plain callables (no import of the daemon)."""

    is_ready: Callable[[], bool]
    admin_tokens: Callable[[], Sequence[Secret]]
    accepting: bool = True
    # Why the daemon is not ready, for /readyz (e.g. the store's disk is full); None: no reason.
    not_ready_reason: Callable[[], str | None] = lambda: None
    # Sentences `/readyz` adds as `detail` (e.g. sections without a driver); ready either way.
    readiness_notes: Callable[[], Sequence[str]] = tuple


class Health(msgspec.Struct, omit_defaults=True):
    status: str
    reason: str | None = None
    detail: tuple[str, ...] = ()


_PROBES = frozenset({"/healthz", "/readyz"})


class _DrainGate:
    """ASGI middleware: 503 on everything but the probes once the daemon is shutting down."""

    def __init__(self, app: ASGIApp, state: ApiState, fast: Sequence[_FastRoute] = ()) -> None:
        self.app = app
        self.state = state
        self.fast = tuple(fast)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not self.state.accepting and scope["path"] not in _PROBES:
                response = error_response(
                    503, "shutting_down", "somsd is shutting down; retry later"
                )
                response.headers["Retry-After"] = "5"
                await response(scope, receive, send)
                return
            for route in self.fast:
                if scope["method"] == route.method:
                    match = route.pattern.match(scope["path"])
                    if match is not None:
                        await route(scope, receive, send, match.groupdict())
                        return
        await self.app(scope, receive, send)


def _authorized(request: Request, tokens: Sequence[Secret]) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    # Compare against every token, not stopping at a match, so timing does not tell which
    # position matched.
    matched = False
    for secret in tokens:
        matched |= secret.matches(token.strip())
    return matched


def _error_of(exc: ApiError | StoreUnavailable) -> Response:
    """The answer to a route's refusal (ApiError) or to a store that cannot write."""
    if isinstance(exc, StoreUnavailable):
        # The store cannot write (a full disk): a state the client waits out, not a bug.
        response = error_response(503, "store_unavailable", str(exc))
        response.headers["Retry-After"] = "5"
        return response
    response = error_response(exc.status, exc.code, exc.message, exc.path, exc.problems)
    if exc.status == 413:
        # The rest of the refused body is never read, so the connection cannot carry
        # another request: say so, or a keep-alive client's next request fails.
        response.headers["Connection"] = "close"
    return response


def _wrap(route: ApiRoute, state: ApiState) -> Handler:
    async def endpoint(request: Request) -> Response:
        if route.admin:
            tokens = state.admin_tokens()
            if not tokens:
                return error_response(
                    403, "admin_disabled", "admin API is disabled; set api.token_file"
                )
            if not _authorized(request, tokens):
                response = error_response(401, "unauthorized", "missing or invalid bearer token")
                response.headers["WWW-Authenticate"] = 'Bearer realm="somsd"'
                return response
        try:
            return await route.handler(request)
        except (ApiError, StoreUnavailable) as exc:
            return _error_of(exc)

    return endpoint


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class _FastRoute:
    """One `ApiRoute.fast`: its path as a pattern (Starlette's `{name}` matches `[^/]+`)."""

    __slots__ = ("handler", "method", "pattern")

    def __init__(self, route: ApiRoute, handler: FastHandler) -> None:
        if route.admin:
            raise ValueError(f"{route.path}: a fast route can not be an admin route")
        parts = re.split(r"\{([^{}]+)\}", route.path)
        regex = "".join(
            f"(?P<{part}>[^/]+)" if odd else re.escape(part) for odd, part in _alternate(parts)
        )
        self.pattern = re.compile(regex + r"\Z")
        self.method = route.method.upper()
        self.handler = handler

    async def __call__(
        self, scope: Scope, receive: Receive, send: Send, params: dict[str, str]
    ) -> None:
        try:
            status, body = await self.handler(FastRequest(scope, receive, params))
        except (ApiError, StoreUnavailable) as exc:
            await _error_of(exc)(scope, receive, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", b"%d" % len(body)), _JSON_CONTENT_TYPE],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _alternate(parts: list[str]) -> list[tuple[bool, str]]:
    return [(index % 2 == 1, part) for index, part in enumerate(parts)]


def build_openapi(routes: Sequence[ApiRoute], *, version: str) -> dict[str, Any]:
    types: list[Any] = [ErrorBody]
    for route in routes:
        if route.request is not None:
            types.append(route.request)
        types.extend(t for t in route.responses.values() if t is not None)
    schemas, components = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    schema_of = dict(zip(map(id, types), schemas, strict=True))
    error_ref = schema_of[id(ErrorBody)]
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {"summary": route.summary, "responses": {}}
        if route.tags:
            operation["tags"] = list(route.tags)
        params = [
            {"name": part[1:-1], "in": "path", "required": True, "schema": {"type": "string"}}
            for part in route.path.split("/")
            if part.startswith("{")
        ]
        params += [
            {
                "name": name,
                "in": "query",
                "schema": {"type": kind} if isinstance(kind, str) else kind,
                "description": text,
            }
            for name, kind, text in route.query
        ]
        if params:
            operation["parameters"] = params
        if route.admin:
            operation["security"] = [{"bearer": []}]
        if route.request is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(route.request)]}},
            }
        for status, body in sorted(route.responses.items()):
            response: dict[str, Any] = {"description": _REASONS.get(status, str(status))}
            schema = schema_of[id(body)] if body is not None else None
            if schema is not None:
                response["content"] = {"application/json": {"schema": schema}}
            operation["responses"][str(status)] = response
        _document_errors(route, operation["responses"], error_ref)
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "somsd", "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _document_errors(route: ApiRoute, responses: dict[str, Any], error_ref: Any) -> None:
    """Add every error status the kernel itself may answer on `route`, so a generated client
    knows each status it can get: 401/403 from the admin check, 404 for a path naming nothing,
    400/422 for a body that is not JSON or does not fit, 503 while draining."""
    implied: set[int] = set()
    if route.path not in _PROBES:
        implied.add(503)
    if route.admin:
        implied |= {401, 403}
    if "{" in route.path:
        implied.add(404)
    if route.request is not None:
        implied |= {400, 422}
    for status in implied:
        responses.setdefault(str(status), {"description": _REASONS[status]})
    for code, response in responses.items():
        if code.startswith(("4", "5")):
            response.setdefault("content", {"application/json": {"schema": error_ref}})
    ordered = dict(sorted(responses.items()))
    responses.clear()
    responses.update(ordered)


_REASONS = {
    200: "OK",
    202: "Accepted",
    201: "Created",
    400: "Bad request",
    401: "Missing or invalid bearer token",
    403: "Admin API disabled",
    405: "Method not allowed",
    404: "Not found",
    409: "Conflict",
    413: "Body too large",
    422: "Invalid content",
    503: "Not ready or shutting down",
}


def _by_method(handlers: dict[str, Handler]) -> Handler:
    async def endpoint(request: Request) -> Response:
        # HEAD is answered as GET (Starlette adds it to a GET route's methods).
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return endpoint


def build_api_app(routes: Sequence[ApiRoute], state: ApiState, *, version: str) -> ASGIApp:
    """The API listener's ASGI app: the kernel's routes plus `routes`."""

    async def healthz(request: Request) -> Response:
        return json_response(Health("ok"))

    async def readyz(request: Request) -> Response:
        detail = tuple(state.readiness_notes())
        if state.accepting and state.is_ready():
            return json_response(Health("ready", detail=detail))
        return json_response(Health("not ready", state.not_ready_reason(), detail), 503)

    kernel = [
        ApiRoute(
            "/healthz", "GET", healthz, "Liveness: the process answers", responses={200: Health}
        ),
        ApiRoute(
            "/readyz",
            "GET",
            readyz,
            "Readiness: the event store is open and all permanent actors run",
            responses={200: Health, 503: Health},
        ),
    ]
    all_routes = [*kernel, *routes]
    document = _encoder.encode(build_openapi(all_routes, version=version))

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def not_found(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = "not_found" if exc.status_code == 404 else "method_not_allowed"
        response = error_response(exc.status_code, code, exc.detail)
        # Starlette names the path's methods in `Allow` on a 405 (RFC 9110 requires it).
        response.headers.update(exc.headers or {})
        return response

    # One Starlette route per path with every method it takes: with one route per method,
    # Starlette would answer a wrong method with the first route's `Allow` only.
    by_path: dict[str, dict[str, Handler]] = {}
    for r in all_routes:
        by_path.setdefault(r.path, {})[r.method.upper()] = _wrap(r, state)
    by_path.setdefault("/openapi.json", {})["GET"] = openapi
    starlette_routes = [
        Route(path, _by_method(handlers), methods=list(handlers))
        for path, handlers in by_path.items()
    ]
    app = Starlette(routes=starlette_routes, exception_handlers={HTTPException: not_found})
    # An id of "/" (`/v1/orders/%2F`) or an empty one names no resource: 404, not a 307 to
    # the list, which a client following redirects would take for the order it asked for.
    app.router.redirect_slashes = False
    fast = [_FastRoute(r, r.fast) for r in all_routes if r.fast is not None]
    return _DrainGate(app, state, fast)

"""HTTP/1.1 requests as a state machine with no I/O: bytes in, request events out.

llhttp (through httptools) does the parsing; this module adds what the parser leaves to its
caller: size limits, the request head as one object, and a queue of events so that pipelined
requests that arrive in one read come out one after the other, in order. Every violation is a
`ProtocolError` carrying the 4xx to answer and a reason; the runner turns it into a response
that closes the connection.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote

import httptools
import msgspec

__all__ = [
    "END",
    "Limits",
    "ProtocolError",
    "RequestHead",
    "RequestParser",
    "encode_error",
    "encode_head",
]


@dataclass(frozen=True)
class Limits:
    """What one connection may send and how long it may take; the defaults suit the API."""

    # Bytes of the request target alone; longer answers 414.
    max_target_bytes: int = 8 * 1024
    # Request line plus all headers; more answers 431.
    max_header_bytes: int = 16 * 1024
    max_header_count: int = 100
    # The server's own ceiling on a body (the config's largest `max_body_bytes`); routes
    # enforce their smaller limits themselves and answer 413 with the limit's name.
    max_body_bytes: int = 64 * 1024 * 1024
    # Waiting for the first byte of the next request on a kept-alive connection.
    idle_timeout: float = 10.0
    # From the first byte of a request until its headers are complete (slowloris).
    header_timeout: float = 10.0
    # From the end of the headers until the whole body is in, however it trickles.
    body_timeout: float = 30.0
    # Sending one response's bytes to a client that does not read.
    write_timeout: float = 10.0
    max_connections: int = 4096


class ProtocolError(Exception):
    """The request can not be served; answer `status` with `reason` and close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _End:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END = _End()
"""The event after a request's last body bytes."""


class RequestHead:
    """One request's line and headers, ready for an ASGI scope."""

    __slots__ = (
        "content_length",
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "raw_path",
    )

    def __init__(
        self,
        *,
        method: str,
        raw_path: bytes,
        path: str,
        query_string: bytes,
        http_version: str,
        headers: list[tuple[bytes, bytes]],
        keep_alive: bool,
        expect_continue: bool,
        content_length: int | None,
    ) -> None:
        self.method = method
        self.raw_path = raw_path
        self.path = path
        self.query_string = query_string
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.expect_continue = expect_continue
        self.content_length = content_length


Event = RequestHead | bytes | _End
# The method's str without a decode per request for the methods llhttp accepts most often.
_METHODS = {m.encode("ascii"): m for m in ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD")}


class RequestParser:
    """Feed bytes with `feed`; take events from `events` (heads, body chunks, `END`)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.events: deque[Event] = deque()
        self._parser = httptools.HttpRequestParser(self)
        self._error: ProtocolError | None = None
        self._pending: ProtocolError | None = None
        self._in_head = False
        self._target = b""
        self._has_host = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._body_bytes = 0
        self._expect_continue = False
        self._content_length: int | None = None
        self._chunked = False
        # Bytes fed since the current head began: a header value trickled across many reads
        # is buffered by the parser until it ends, so the limit is checked on raw bytes too.
        self._raw_head_bytes = 0
        self.messages_begun = 0
        self.messages_completed = 0

    def pending_error(self) -> ProtocolError | None:
        """The violation that stopped parsing, to answer once the events before it are served."""
        return self._pending

    @property
    def in_head(self) -> bool:
        """A request has begun and its headers are not complete yet."""
        return self._in_head

    def feed(self, data: bytes) -> None:
        """Parse `data`; a violation sets `pending_error()` (events before it stay to be served)."""
        if self._pending is not None:
            return
        try:
            self._feed(data)
        except ProtocolError as error:
            self._pending = error

    def _feed(self, data: bytes) -> None:
        if self._in_head or self.messages_begun == self.messages_completed:
            self._raw_head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade(data, upgrade)
        except httptools.HttpParserCallbackError:
            assert self._error is not None
            raise self._error from None
        except httptools.HttpParserInvalidMethodError:
            raise ProtocolError(400, "invalid request method") from None
        except httptools.HttpParserInvalidURLError:
            raise ProtocolError(400, "invalid request target") from None
        except httptools.HttpParserError as exc:
            raise ProtocolError(400, f"malformed request: {exc}") from None
        if self._in_head and self._raw_head_bytes > self.limits.max_header_bytes:
            raise ProtocolError(431, self._header_limit_reason())

    def _after_upgrade(self, data: bytes, upgrade: httptools.HttpParserUpgrade) -> None:
        # llhttp stops at a request asking to switch protocols. CONNECT can not be served;
        # an `Upgrade:` we ignore (RFC 9110 7.8 lets the server keep HTTP/1.1) and parse
        # what follows with a fresh parser.
        if self._error is not None:
            raise self._error from None
        if self.messages_completed != self.messages_begun:
            raise ProtocolError(400, "CONNECT and protocol upgrades are not supported")
        offset = upgrade.args[0] if upgrade.args and isinstance(upgrade.args[0], int) else None
        self._parser = httptools.HttpRequestParser(self)
        if offset is None:
            raise ProtocolError(400, "protocol upgrades are not supported")
        rest = data[offset:]
        if rest:
            self._raw_head_bytes = 0
            self._feed(rest)

    def _fail(self, status: int, reason: str) -> None:
        self._error = ProtocolError(status, reason)
        raise self._error

    def _header_limit_reason(self) -> str:
        return f"request line and headers exceed {self.limits.max_header_bytes} bytes"

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.messages_begun += 1
        self._in_head = True
        self._target = b""
        self._has_host = False
        self._headers = []
        self._head_bytes = 0
        self._body_bytes = 0
        self._expect_continue = False
        self._content_length = None
        self._chunked = False

    def on_url(self, url: bytes) -> None:
        # llhttp hands the target over in one piece unless it spans reads.
        self._target = self._target + url if self._target else url
        self._head_bytes += len(url)
        if len(self._target) > self.limits.max_target_bytes:
            self._fail(414, f"request target exceeds {self.limits.max_target_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value) + 4
        if self._head_bytes > self.limits.max_header_bytes:
            self._fail(431, self._header_limit_reason())
        if len(self._headers) >= self.limits.max_header_count:
            self._fail(431, f"more than {self.limits.max_header_count} header fields")
        name = name.lower()
        if name == b"content-length":
            if not value.isdigit() or (
                self._content_length is not None and self._content_length != int(value)
            ):
                self._fail(400, "invalid Content-Length")
            self._content_length = int(value)
            if self._content_length > self.limits.max_body_bytes:
                self._fail(413, f"body exceeds {self.limits.max_body_bytes} bytes")
        elif name == b"expect":
            if value.lower() != b"100-continue":
                self._fail(417, "only `Expect: 100-continue` is supported")
            self._expect_continue = True
        elif name == b"transfer-encoding":
            self._chunked = True
        elif name == b"host":
            self._has_host = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head_bytes = 0
        parser = self._parser
        version = parser.get_http_version()
        if version == "1.1" and not self._has_host:
            self._fail(400, "HTTP/1.1 request without a Host header")
        target = self._target
        raw_path, _, query_string = target.partition(b"?")
        if not raw_path.startswith(b"/"):
            raw_path = self._origin_path(raw_path, target)
        try:
            path = raw_path.decode("ascii")
        except UnicodeDecodeError:
            self._fail(400, "request target is not ASCII")
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        self.events.append(
            RequestHead(
                method=_METHODS.get(method) or method.decode("ascii"),
                raw_path=raw_path,
                path=path,
                query_string=query_string,
                http_version=version,
                headers=self._headers,
                keep_alive=parser.should_keep_alive(),
                expect_continue=self._expect_continue,
                content_length=self._content_length if not self._chunked else None,
            )
        )

    def _origin_path(self, raw_path: bytes, target: bytes) -> bytes:
        if raw_path == b"*":
            return raw_path
        try:
            url = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            self._fail(400, "invalid request target")
        if not url.schema or url.path is None:
            self._fail(400, "invalid request target")
        return bytes(url.path)

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self._fail(413, f"body exceeds {self.limits.max_body_bytes} bytes")
        self.events.append(body)

    def on_message_complete(self) -> None:
        self.messages_completed += 1
        self.events.append(END)


# -- responses ---------------------------------------------------------------------------

_REASONS = {status.value: status.phrase.encode("ascii") for status in HTTPStatus}
_STATUS_LINES: dict[int, bytes] = {}


class _DateCache:
    """The `date` header line, formatted once per second, not once per response."""

    second = 0
    line = b""


def _status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, b""))
        _STATUS_LINES[status] = line
    return line


def date_header() -> bytes:
    """`date: ...\\r\\n`, formatted once per second."""
    now = int(time.time())
    if now != _DateCache.second:
        _DateCache.second = now
        _DateCache.line = b"date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
    return _DateCache.line


def encode_head(status: int, headers: list[bytes], connection: bytes | None) -> bytes:
    """Status line and header block; `headers` are ready `name: value\\r\\n` lines."""
    parts = [_status_line(status), date_header(), *headers]
    if connection is not None:
        parts.append(b"connection: " + connection + b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _ErrorDetail(msgspec.Struct):
    code: str
    message: str


class _ErrorBody(msgspec.Struct):
    error: _ErrorDetail


_ERROR_CODES = {
    400: "bad_request",
    408: "request_timeout",
    413: "body_too_large",
    414: "target_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    503: "too_many_connections",
}


def encode_error(status: int, reason: str, *, extra: tuple[bytes, ...] = ()) -> bytes:
    """A whole response in the API's error shape that closes the connection."""
    body = msgspec.json.encode(_ErrorBody(_ErrorDetail(_ERROR_CODES.get(status, "error"), reason)))
    headers = [
        b"content-type: application/json\r\n",
        b"content-length: %d\r\n" % len(body),
        *extra,
    ]
    return encode_head(status, headers, b"close") + body

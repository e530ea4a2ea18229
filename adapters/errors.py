"""Upstream failures every adapter raises, split by what the caller should do about them.

```
Exception
 └── UpstreamError                  an external system did not do what we asked
      ├── TransientUpstreamError    retry later with the same idempotency key (outbox backoff)
      └── PermanentUpstreamError    retrying cannot help: park it in the dead letters
```

Why two kinds and no more: the outbox dispatcher must decide "retry or dead-letter" for a
delivery to any system without knowing which adapter raised. Adapters add subclasses where a
caller wants to branch on a specific answer (a 3PL's `FulfillmentNotFound`), but every subclass
is one of the two kinds, so `except TransientUpstreamError` stays the whole retry policy.

Translation happens once, at the adapter's boundary: the client catches `httpx.HTTPError`
around its one request call and raises `translate_http_error(...) from exc`; a non-2xx answer
becomes `status_error(...)`. Both look at the most specific case first (a `ConnectTimeout` is
a timeout before it is a network error) and chain the original with `from`, so the traceback
still shows what httpx saw.

Messages are written for an operator and never carry a secret: they name the system, the
operation as a route template (`POST /fulfillments`, no query string, no header) and the status,
plus the fix where one is known. Credentials live in the injected `httpx.AsyncClient`'s headers,
which no message repeats.
"""

from __future__ import annotations

from typing import TypeVar

import httpx
import msgspec

__all__ = [
    "PermanentUpstreamError",
    "TransientUpstreamError",
    "UpstreamError",
    "decode_answer",
    "is_transient_status",
    "somsd_error_detail",
    "status_error",
    "translate_http_error",
]

# Statuses worth retrying: the upstream is overloaded, restarting or timed out on its side.
# 408 Request Timeout and 425 Too Early say "the same request later will do"; 429 asks us to
# slow down. Every other 4xx means the request itself is wrong and will stay wrong.
_TRANSIENT_4XX = frozenset({408, 425, 429})

# Operator hints for the permanent statuses whose cause is almost always our configuration.
_STATUS_HINTS = {
    400: "the request does not match the upstream's protocol (a bug: report it)",
    401: "check the credentials file configured for this system",
    403: "check the credentials file and the upstream's permissions for this account",
    404: "check the configured url",
    405: "check the configured url",
    409: "the upstream holds a conflicting record",
    413: "the request is larger than the upstream accepts",
    422: "the upstream refused the content",
}


class UpstreamError(Exception):
    """An external system failed a request; `system` is its configured name.

    `operation` is the route template (`"GET /stock"`), `status_code` the HTTP status when one
    arrived, `retry_after` the seconds the upstream asked us to wait (429/503), if any.
    """

    def __init__(
        self,
        system: str,
        message: str,
        *,
        operation: str = "",
        status_code: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.system = system
        self.message = message
        self.operation = operation
        self.status_code = status_code
        self.retry_after = retry_after


class TransientUpstreamError(UpstreamError):
    """Worth retrying: timeouts, refused or dropped connections, 5xx, 408/425/429."""


class PermanentUpstreamError(UpstreamError):
    """Not worth retrying: the request is wrong, unauthorised, or the answer is unreadable."""


def is_transient_status(status_code: int) -> bool:
    """True when a non-2xx status says "try again later" rather than "this request is wrong"."""
    return status_code >= 500 or status_code in _TRANSIENT_4XX


def _retry_after(response: httpx.Response) -> float | None:
    """`Retry-After` in seconds; the HTTP-date form is rare from APIs and read as absent."""
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def status_error(
    response: httpx.Response, *, system: str, operation: str, detail: str = ""
) -> UpstreamError:
    """The error for a non-2xx `response`; `detail` is the upstream's own (secret-free) reason."""
    status = response.status_code
    suffix = f": {detail}" if detail else ""
    if is_transient_status(status):
        return TransientUpstreamError(
            system,
            f"{system}: {status} on {operation}{suffix}; will retry",
            operation=operation,
            status_code=status,
            retry_after=_retry_after(response),
        )
    hint = _STATUS_HINTS.get(status, "the upstream refused the request")
    return PermanentUpstreamError(
        system,
        f"{system}: {status} on {operation}{suffix}; {hint}",
        operation=operation,
        status_code=status,
    )


def translate_http_error(exc: httpx.HTTPError, *, system: str, operation: str) -> UpstreamError:
    """Map an httpx failure to one of the two kinds; the caller raises it `from exc`.

    A timeout or a dropped connection on a POST may mean the upstream did the work and the
    answer was lost; that is still transient, because every write we retry carries the same
    idempotency key, which is what makes the retry safe.
    """
    where = f"{system}: {operation}"
    match exc:
        case httpx.HTTPStatusError():  # only when a caller used raise_for_status()
            return status_error(exc.response, system=system, operation=operation)
        case httpx.ConnectTimeout():
            return TransientUpstreamError(
                system, f"{where} timed out connecting; is it up?", operation=operation
            )
        case httpx.PoolTimeout():
            return TransientUpstreamError(
                system,
                f"{where} waited too long for a free connection; the upstream is slow or the "
                "connection limit too low",
                operation=operation,
            )
        case httpx.TimeoutException():  # ReadTimeout, WriteTimeout
            return TransientUpstreamError(
                system, f"{where} timed out waiting for the answer", operation=operation
            )
        case httpx.ConnectError():
            return TransientUpstreamError(
                system, f"{where} could not connect; is it up?", operation=operation
            )
        case httpx.RemoteProtocolError():
            return TransientUpstreamError(
                system, f"{where}: the upstream dropped the connection", operation=operation
            )
        case httpx.NetworkError() | httpx.ProxyError():  # ReadError, WriteError, CloseError
            return TransientUpstreamError(
                system, f"{where}: network error ({type(exc).__name__})", operation=operation
            )
        case httpx.UnsupportedProtocol():
            return PermanentUpstreamError(
                system, f"{where}: the url's scheme is not http or https", operation=operation
            )
        case httpx.LocalProtocolError():
            return PermanentUpstreamError(
                system, f"{where}: we built an invalid HTTP request (a bug)", operation=operation
            )
        case httpx.DecodingError():
            return PermanentUpstreamError(
                system, f"{where}: the answer's encoding is broken", operation=operation
            )
        case httpx.TooManyRedirects():
            return PermanentUpstreamError(
                system, f"{where}: redirect loop; check the configured url", operation=operation
            )
        case httpx.TransportError():  # anything the transport adds later: assume it passes
            return TransientUpstreamError(
                system, f"{where}: transport error ({type(exc).__name__})", operation=operation
            )
        case _:
            return PermanentUpstreamError(
                system, f"{where}: request failed ({type(exc).__name__})", operation=operation
            )


T = TypeVar("T")

# Long enough for a "code: message" that tells an operator what the upstream disliked, short
# enough that a misbehaving one cannot pour a whole HTML page into a log line or a dead letter.
DETAIL_LIMIT = 200


def decode_answer(
    decoder: msgspec.json.Decoder[T],
    response: httpx.Response,
    *,
    system: str,
    operation: str,
    protocol: str,
    error: type[UpstreamError] = PermanentUpstreamError,
) -> T:
    """Decode a 2xx body into the protocol's type; anything else is `error` (permanent).

    A body that does not decode means the url points at something that does not speak the
    protocol, which no retry mends; the message says which one was expected (`protocol` reads
    "the rest protocol's", "somsd's fulfilment API").
    """
    try:
        return decoder.decode(response.content)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError too
        raise error(
            system,
            f"{system}: {response.status_code} on {operation} with a body that is not "
            f"{protocol} ({str(exc)[:DETAIL_LIMIT]}); check the configured url",
            operation=operation,
            status_code=response.status_code,
        ) from exc


class _SomsdErrorDetail(msgspec.Struct, frozen=True):
    code: str
    message: str = ""


class _SomsdErrorBody(msgspec.Struct, frozen=True):
    error: _SomsdErrorDetail


_somsd_error = msgspec.json.Decoder(_SomsdErrorBody)


def somsd_error_detail(body: bytes) -> str:
    """`code: message` from somsd's own error shape (`{"error": {"code", "message"}}`), which
    the store and 3PL protocols answer with too; "" when the body is something else."""
    try:
        error = _somsd_error.decode(body).error
    except msgspec.DecodeError:
        return ""
    text = f"{error.code}: {error.message}" if error.message else error.code
    return text[:DETAIL_LIMIT]

"""Smartstore-specific errors, each one of the two shared kinds of `adapters.errors`.

```
UpstreamError (adapters.errors)
 ├── TransientUpstreamError          429, 5xx, timeouts, dropped connections
 │    └── SmartstoreConflict         409: concurrent update in the shop; read again, retry
 └── PermanentUpstreamError
      ├── SmartstoreAuthError        401 + Smartstore-Api-AuthResult*: which reason, what to fix
      │    └── SmartstoreHttpsRequired  421: the shop takes the API over https only
      ├── SmartstorePermissionDenied  403: the API user's role lacks a permission
      ├── SmartstoreNotFound         404: no such entity
      ├── SmartstoreRejected         400/422: the shop refused the request, with its OData message
      └── SmartstoreProtocolViolation a 2xx answer that is not the Web API's shape
```
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

from adapters.errors import PermanentUpstreamError, TransientUpstreamError

__all__ = [
    "AUTH_FIXES",
    "AccessDeniedReason",
    "SmartstoreAuthError",
    "SmartstoreConflict",
    "SmartstoreHttpsRequired",
    "SmartstoreNotFound",
    "SmartstorePermissionDenied",
    "SmartstoreProtocolViolation",
    "SmartstoreRejected",
]


class AccessDeniedReason(IntEnum):
    """`Smartstore-Api-AuthResultId` (`AccessDeniedReason.cs`)."""

    API_DISABLED = 0
    SSL_REQUIRED = 1
    INVALID_AUTHORIZATION_HEADER = 2
    INVALID_CREDENTIALS = 3
    USER_UNKNOWN = 4
    USER_DISABLED = 5


# What the operator reads: what is wrong, and what to do about it.
AUTH_FIXES: Final[dict[AccessDeniedReason, str]] = {
    AccessDeniedReason.API_DISABLED: (
        "the Web API is disabled in the shop; enable it under Plugins > Web API > Configure"
    ),
    AccessDeniedReason.SSL_REQUIRED: (
        "the shop takes the Web API over https only; use an https:// url"
    ),
    AccessDeniedReason.INVALID_AUTHORIZATION_HEADER: (
        "the shop could not read the Authorization header; check public_key and the secret key "
        "file for stray characters (a ':' in the public key, a BOM)"
    ),
    AccessDeniedReason.INVALID_CREDENTIALS: (
        "the secret key is wrong for this public key; copy it again from the shop's Web API "
        "configuration into secret_key_file"
    ),
    AccessDeniedReason.USER_UNKNOWN: (
        "the shop knows no API user with this public key; check public_key or create a key "
        "pair for the API customer account"
    ),
    AccessDeniedReason.USER_DISABLED: (
        "the API user's key pair is disabled in the shop; enable it in the Web API "
        "configuration of the customer account"
    ),
}


class SmartstoreAuthError(PermanentUpstreamError):
    """401: the shop refused the key pair; `reason_id`/`reason` from the AuthResult headers."""

    def __init__(
        self,
        system: str,
        message: str,
        *,
        reason_id: int | None,
        reason: str,
        operation: str = "",
        status_code: int | None = None,
    ) -> None:
        super().__init__(system, message, operation=operation, status_code=status_code)
        self.reason_id = reason_id
        self.reason = reason

    @property
    def access_denied(self) -> AccessDeniedReason | None:
        try:
            return AccessDeniedReason(self.reason_id) if self.reason_id is not None else None
        except ValueError:
            return None


class SmartstoreHttpsRequired(SmartstoreAuthError):
    """421 Misdirected Request (AuthResult 1, SslRequired): plain http is refused outside a
    development shop; use an https:// url."""


class SmartstorePermissionDenied(PermanentUpstreamError):
    """403: authenticated, but the API user's role lacks the permission for this call."""


class SmartstoreNotFound(PermanentUpstreamError):
    """404: the entity (order, shipment, product) does not exist (or is soft-deleted)."""


class SmartstoreConflict(TransientUpstreamError):
    """409: the shop's optimistic concurrency check failed; a later retry usually passes."""


class SmartstoreRejected(PermanentUpstreamError):
    """400/422: the shop refused the request; `odata_message` is its own reason."""

    def __init__(
        self,
        system: str,
        message: str,
        *,
        odata_message: str,
        operation: str = "",
        status_code: int | None = None,
    ) -> None:
        super().__init__(system, message, operation=operation, status_code=status_code)
        self.odata_message = odata_message


class SmartstoreProtocolViolation(PermanentUpstreamError):
    """A success answer that is not the Web API's (wrong url, a proxy page, absurd sizes)."""

"""Errors specific to the `rest` fulfilment protocol, each one of the two shared kinds.

```
UpstreamError (adapters.errors)
 ├── TransientUpstreamError
 └── PermanentUpstreamError
      ├── FulfillmentNotFound     404 on GET /fulfillments/{id}
      ├── FulfillmentConflict     409: the id exists under another idempotency key
      └── ProtocolViolation       a 2xx answer whose body is not the protocol's shape
InvalidCallback (ValueError)      an inbound status callback we cannot read (answer 400)
```

The subclasses exist for callers that branch on them: a location actor that gets
`FulfillmentNotFound` for a fulfilment it sent knows the WMS lost it and sends it again; one
that gets `FulfillmentConflict` knows two somsd records claim one id. Everything else is
retried or dead-lettered by kind alone.
"""

from __future__ import annotations

from adapters.errors import PermanentUpstreamError

__all__ = ["FulfillmentConflict", "FulfillmentNotFound", "InvalidCallback", "ProtocolViolation"]


class FulfillmentNotFound(PermanentUpstreamError):
    """The server does not know the fulfilment id."""


class FulfillmentConflict(PermanentUpstreamError):
    """The fulfilment id is already taken by a request with another idempotency key."""


class ProtocolViolation(PermanentUpstreamError):
    """A success answer whose body does not match the protocol (wrong server, proxy page)."""


class InvalidCallback(ValueError):
    """A signed status callback whose body is not a `StatusCallback`; the message has the path."""

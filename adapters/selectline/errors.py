"""What the SelectLine API answers when it does not do what we asked, by what to do about it.

```
UpstreamError (adapters.errors)
 ├── TransientUpstreamError
 │    ├── SelectLineNoLicence     402 on /Login: every licence seat is taken; retried later
 │    ├── SelectLineUnreachable   503: the API runs but the SelectLine server behind it does not
 │    └── SelectLineLoginRefused  wrong user, password or AppKey; login is not tried again
 │                                before `retry_after`, so a wrong password is no retry storm
 └── PermanentUpstreamError
      └── SelectLineRejected      the API refused the request (ApiResponse decoded in `message`)
```

A refused login is transient on purpose: the entries waiting for the ERP are right, the
credentials are not, and once an operator fixes the password file (and reloads) they go out;
dead-lettering every document for a typo would lose the order of work for nothing.
"""

from __future__ import annotations

from adapters.errors import PermanentUpstreamError, TransientUpstreamError

__all__ = [
    "SelectLineLoginRefused",
    "SelectLineNoLicence",
    "SelectLineRejected",
    "SelectLineUnreachable",
]


class SelectLineNoLicence(TransientUpstreamError):
    """402 on `POST /Login`: no free licence seat (another client holds them all)."""


class SelectLineUnreachable(TransientUpstreamError):
    """503: the API answered, but the SelectLine server behind it is not reachable."""


class SelectLineLoginRefused(TransientUpstreamError):
    """`POST /Login` refused the user, password or AppKey; see the module docstring."""


class SelectLineRejected(PermanentUpstreamError):
    """A request the API refused (400, 404, ...); `response_id` is the ApiResponse's id."""

    response_id: int | None = None

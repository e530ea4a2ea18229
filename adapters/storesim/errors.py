"""Refusals of somsd's manual fulfilment API that the store simulator tells apart.

```
UpstreamError (adapters.errors)
 └── PermanentUpstreamError
      ├── StepRefused       409: the step does not fit the fulfilment's state any more
      └── FulfillmentGone   404: somsd no longer knows the fulfilment
```
Both are permanent for the step (repeating it cannot succeed) but not for the store: the
answer to either is to fetch the work list again and go on from what it says.
"""

from __future__ import annotations

from adapters.errors import PermanentUpstreamError

__all__ = ["FulfillmentGone", "StepRefused"]


class StepRefused(PermanentUpstreamError):
    """409: the step does not fit the fulfilment's current state (it moved on meanwhile)."""


class FulfillmentGone(PermanentUpstreamError):
    """404: somsd does not know the fulfilment (cancelled and removed, or a wrong id)."""

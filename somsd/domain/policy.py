"""The configurable rules decisions follow, bundled so an actor passes one value.

The composition root builds an `OrderPolicy` from the config (`[[status]]`, `[holds]`,
`[invoicing]`, the store locations) and hands it to the order desk; a config reload builds a new
one, and the next decision uses it. Decisions never read config themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Final

from somsd.domain.holds import HoldRules
from somsd.domain.order import PaymentMethod
from somsd.domain.status import STANDARD_MACHINE, StatusMachine

__all__ = ["CREDIT_NOTE_SERIES", "INVOICE_SERIES", "InvoicingPolicy", "OrderPolicy"]

INVOICE_SERIES: Final = "RE"  # "Rechnung"
CREDIT_NOTE_SERIES: Final = "GS"  # "Gutschrift", as the business names its credit notes


@dataclass(frozen=True, kw_only=True)
class InvoicingPolicy:
    """The `[invoicing]` config: which payment methods invoice themselves, and the series.

    `auto_methods` are the prepaid ones: their invoice is issued the moment the order is paid.
    Orders paid otherwise get a draft that an operator (or the ERP) issues. `timezone` decides
    the invoice date and with it the numbering year: an invoice issued at 23:30 UTC on
    31 December is dated 1 January in Germany, so the composition root passes
    `ZoneInfo("Europe/Berlin")`; UTC is only the default that keeps tests independent of tzdata.
    """

    auto_methods: frozenset[PaymentMethod] = frozenset({"creditcard", "paypal"})
    invoice_series: str = INVOICE_SERIES
    credit_note_series: str = CREDIT_NOTE_SERIES
    timezone: tzinfo = UTC


@dataclass(frozen=True, kw_only=True)
class OrderPolicy:
    machine: StatusMachine = STANDARD_MACHINE
    holds: HoldRules = field(default_factory=HoldRules)
    invoicing: InvoicingPolicy = field(default_factory=InvoicingPolicy)
    # Store names a pickup order may name; None accepts any (no locations configured yet).
    pickup_locations: frozenset[str] | None = None

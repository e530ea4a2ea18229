"""DHL Parcel DE: Shipping API v2 labels and unified tracking (`client`, `mapping`, `wire`),
and a simulator of both (`simulator`, `python -m adapters.dhl`).

Reference: `shared/reference/dhl-parcel-de.md` (DHL's OpenAPI 2.1.13).
"""

from adapters.dhl.client import DhlAuth, DhlClient

__all__ = ["DhlAuth", "DhlClient"]

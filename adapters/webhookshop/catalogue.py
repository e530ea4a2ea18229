"""What the generated shop sells: SKUs with gross prices and German VAT rates.

Prices are gross in EUR with two decimals (as German shops show them), so every line total
and order total is exact in `Decimal`. Tax rates follow German VAT: 19 % standard, 7 % reduced
for books and food.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Final

import msgspec

__all__ = ["DEFAULT_CATALOGUE", "CatalogueItem"]


class CatalogueItem(msgspec.Struct, frozen=True):
    sku: str
    name: str
    unit_price: Decimal  # gross
    tax_rate: Decimal  # percent


def _item(sku: str, name: str, price: str, tax_rate: str) -> CatalogueItem:
    return CatalogueItem(sku, name, Decimal(price), Decimal(tax_rate))


DEFAULT_CATALOGUE: Final = (
    _item("MUG-1", "Tasse Steingut", "12.50", "19"),
    _item("TEE-M", "T-Shirt Bio-Baumwolle M", "19.90", "19"),
    _item("TEE-L", "T-Shirt Bio-Baumwolle L", "19.90", "19"),
    _item("BAG-1", "Stofftasche", "8.50", "19"),
    _item("LAMP-1", "Schreibtischlampe", "49.00", "19"),
    _item("SOCK-3", "Socken 3er-Pack", "14.95", "19"),
    _item("BOOK-1", "Kochbuch Regional", "24.00", "7"),
    _item("COFFEE-500", "Kaffeebohnen 500 g", "9.99", "7"),
    _item("TEA-1", "Kräutertee 100 g", "6.49", "7"),
)

"""A webhook shop simulator: realistic orders, signed and posted to somsd's webhook intake.

somsd's generic `webhook` channel takes canonical orders at `POST /v1/channels/{channel}/orders`
signed with `somsd.signing`. Nothing in the field speaks exactly that, so somsd ships a shop
that does, for `somsd demo`, load tests and the intake's tests: `fake_order` (pure, seeded)
builds a realistic German shop order — names, real city/postcode pairs, payment methods
creditcard/paypal/invoice/banktransfer/cod, click & collect orders naming a store, multi-line
orders, totals exact to the cent — and `place_orders` posts a paced stream of them, redelivering
some on purpose, and yields each outcome.

Modules: `people` (names, places), `catalogue` (SKUs and prices), `orders` (`fake_order`),
`simulator` (`place_orders`, `Delivery`).
"""

from adapters.webhookshop.catalogue import DEFAULT_CATALOGUE, CatalogueItem
from adapters.webhookshop.orders import fake_order
from adapters.webhookshop.simulator import Delivery, place_orders

__all__ = ["DEFAULT_CATALOGUE", "CatalogueItem", "Delivery", "fake_order", "place_orders"]

"""The projections the daemon keeps, in one list so `somsd run` and `somsd db` agree."""

from __future__ import annotations

from somsd.projections.fulfilments import FulfilmentBook
from somsd.projections.orders import OrderBook
from somsd.projections.stock import StockLevels
from somsd.store import Projection

__all__ = ["all_projections"]


def all_projections() -> list[Projection]:
    return [OrderBook(), StockLevels(), FulfilmentBook()]

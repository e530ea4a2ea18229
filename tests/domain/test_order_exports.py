"""The domain's front door and each order module export exactly what they name in `__all__`."""

from __future__ import annotations

import importlib

import pytest

import somsd.domain

ORDER_MODULES = [
    "cancellation",
    "countries",
    "documents",
    "errors",
    "events",
    "guards",
    "holds",
    "invoicing",
    "lifecycle",
    "money",
    "numbering",
    "order",
    "policy",
    "refunds",
    "reorder",
    "returns",
    "state",
    "status",
    "testing",
]


@pytest.mark.parametrize("name", ORDER_MODULES)
def test_every_public_name_exists(name: str) -> None:
    module = importlib.import_module(f"somsd.domain.{name}")
    missing = [export for export in module.__all__ if not hasattr(module, export)]
    assert missing == []
    assert module.__doc__, "each module says why it exists"


def test_front_door_re_exports_are_the_modules_own_objects() -> None:
    """`somsd.domain.X` is the very object its module defines, listed once."""
    exported = somsd.domain.__all__
    assert len(exported) == len(set(exported))
    homes = [importlib.import_module(f"somsd.domain.{name}") for name in ORDER_MODULES]
    ours = [export for export in exported if any(export in home.__all__ for home in homes)]
    assert "decode_order" in ours
    for export in ours:
        value = getattr(somsd.domain, export)
        assert any(getattr(home, export, None) is value for home in homes), export

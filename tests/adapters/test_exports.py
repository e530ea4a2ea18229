"""Every adapter package's front door exports what its `__all__` promises."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "adapters.errors",
    "adapters.consignee",
    "adapters.threepl",
    "adapters.threepl.wire",
    "adapters.threepl.client",
    "adapters.threepl.callback",
    "adapters.threepl.mapping",
    "adapters.threepl.errors",
    "adapters.threepl.simulator",
    "adapters.csvfiles",
    "adapters.csvfiles.wire",
    "adapters.csvfiles.files",
    "adapters.csvfiles.client",
    "adapters.csvfiles.mapping",
    "adapters.csvfiles.errors",
    "adapters.csvfiles.simulator",
    "adapters.selectline",
    "adapters.selectline.wire",
    "adapters.selectline.client",
    "adapters.selectline.errors",
    "adapters.selectline.planning",
    "adapters.selectline.simulator",
    "adapters.webhookshop",
    "adapters.webhookshop.people",
    "adapters.webhookshop.catalogue",
    "adapters.webhookshop.orders",
    "adapters.webhookshop.simulator",
    "adapters.storesim",
    "adapters.storesim.wire",
    "adapters.storesim.client",
    "adapters.storesim.errors",
    "adapters.storesim.simulator",
    "adapters.smartstore",
    "adapters.smartstore.wire",
    "adapters.smartstore.client",
    "adapters.smartstore.errors",
    "adapters.smartstore.mapping",
    "adapters.smartstore.simulator",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_names_exist(name: str) -> None:
    """A name in `__all__` that the module lacks breaks `from ... import *` and the docs."""
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} explains itself in a docstring"
    missing = [export for export in module.__all__ if not hasattr(module, export)]
    assert missing == []
    assert len(set(module.__all__)) == len(module.__all__)

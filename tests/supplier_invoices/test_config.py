"""`[[supplier_inbox]]`: decoded with its suppliers and rules; bad names and numbers named."""

from __future__ import annotations

from decimal import Decimal

import pytest

from somsd.config import ConfigError, parse_config


def test_an_inbox_with_suppliers_and_rules_decodes() -> None:
    config = parse_config(
        """
[[supplier_inbox]]
name = "main"
folder = "inbox"
price_tolerance_percent = 2
price_tolerance_cents = "5"
quantity_tolerance = 0.5
[[supplier_inbox.supplier]]
number = "70001"
ibans = ["DE89370400440532013000"]
[[supplier_inbox.rule]]
gl_account = "4930"
"""
    )
    (inbox,) = config.supplier_inbox
    assert inbox.price_tolerance_percent == Decimal(2)
    assert inbox.price_tolerance_cents == Decimal(5)
    assert inbox.quantity_tolerance == Decimal("0.5")
    assert inbox.supplier[0].ibans == ("DE89370400440532013000",)
    assert inbox.rule[0].gl_account == "4930"


def test_bad_names_and_duplicate_suppliers_are_named() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            """
[[supplier_inbox]]
name = "Main"
folder = "x"
[[supplier_inbox.supplier]]
number = "1"
[[supplier_inbox.supplier]]
number = "1"
[[supplier_inbox]]
name = "Main"
folder = "y"
[[supplier_inbox.rule]]
cost_centre = "1"
"""
        )
    problems = caught.value.problems
    assert any(p.startswith("supplier_inbox[0].name:") for p in problems)
    assert 'supplier_inbox[0].supplier[1].number: "1" is used twice' in problems
    assert any("gl_account" in p for p in problems)

"""An `adapter = "selectline"` location needs a SelectLine ERP that posts the sales orders its
delivery notes follow."""

from __future__ import annotations

from pathlib import Path

import pytest

from somsd.config import ConfigError, load_config
from tests.orders.shop import webhook_config

ERP = """
[[erp]]
name = "{name}"
kind = "selectline"
url = "http://127.0.0.1:1"
password_file = "sl.password"
post_invoices = {post}
"""


def config(tmp_path: Path, location: str, *erps: tuple[str, str]) -> Path:
    (tmp_path / "sl.password").write_text("x\n")
    text = f'\n[[location]]\nname = "wh"\nadapter = "selectline"\n{location}\n'
    text += "".join(ERP.format(name=name, post=post) for name, post in erps)
    return webhook_config(tmp_path, text)


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_the_only_selectline_erp_is_the_default(tmp_path: Path) -> None:
    load_config(config(tmp_path, "", ("sl", "true")))


def test_no_or_an_ambiguous_or_a_non_posting_erp_is_refused(tmp_path: Path) -> None:
    assert problems(config(tmp_path, "")) == [
        "location[0].erp: adapter selectline needs exactly one [[erp]] of kind selectline"
    ]
    two = config(tmp_path, "", ("a", "true"), ("b", "true"))
    assert problems(two) == [
        "location[0].erp: adapter selectline needs exactly one [[erp]] of kind selectline"
    ]
    load_config(config(tmp_path, 'erp = "b"', ("a", "true"), ("b", "true")))
    assert problems(config(tmp_path, 'erp = "c"', ("a", "true"))) == [
        "location[0].erp: adapter selectline needs 'c' [[erp]] of kind selectline"
    ]
    (message,) = problems(config(tmp_path, "", ("sl", "false")))
    assert "post_invoices = true" in message

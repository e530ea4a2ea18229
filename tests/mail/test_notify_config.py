"""`[notify]` validation: every problem with its key path, never a header-breaking address."""

from __future__ import annotations

from pathlib import Path

import pytest

from somsd.config import ConfigError, parse_config


def problems(body: str, tmp_path: Path | None = None) -> list[str]:
    try:
        parse_config(body, config_dir=tmp_path)
    except ConfigError as exc:
        return exc.problems
    return []


def test_a_valid_section_with_channels_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "smtp.password").write_text("pw\n")
    config = parse_config(
        """
[[channel]]
name = "b2b"
kind = "webhook"
secret_file = "smtp.password"

[notify]
host = "smtp.example.com"
sender = "Shop <shop@example.com>"
user = "shop"
password_file = "smtp.password"
template_dir = "mail"
ca_file = "ca.pem"

[[notify.channel]]
name = "b2b"
mails = ["invoice"]
""",
        config_dir=tmp_path,
    )
    assert config.notify is not None
    assert config.notify.template_dir == str(tmp_path / "mail")
    assert config.notify.ca_file == str(tmp_path / "ca.pem")
    assert config.notify.channel[0].mails == ("invoice",)
    assert config.notify.password_file is not None
    assert config.notify.password_file.secret.reveal() in {
        s.reveal() for s in config.secrets()
    }  # scrubbed from logs


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('bcc = ["a@example.com\\r\\nBcc: x@evil.example"]', "notify.bcc[0]: "),
        ('reply_to = "a@example.com, b@example.com"', "notify.reply_to: "),
        ('tracking_urls = { dhl = "https://dhl.example/track" }', "{tracking_number}"),
        ('user = "shop"', "notify.password_file: give both user and password_file"),
        ('languages = { Germany = "de" }', "notify.languages.Germany"),
        ('security = "ssl"', "notify.security"),
        ('mails = ["newsletter"]', "notify.mails"),
        ("port = 70000", "notify.port"),
        ('[[notify.channel]]\nname = "nope"', 'notify.channel[0].name: unknown channel "nope"'),
    ],
)
def test_bad_values_are_named_by_path(extra: str, expected: str) -> None:
    body = f'[notify]\nhost = "h"\nsender = "shop@example.com"\n{extra}\n'
    found = problems(body)
    assert any(expected in problem for problem in found), found
    assert not any("\r" in p or "\n" in p for p in found)  # echoed values stay one line


def test_sender_is_required_and_must_be_one_address() -> None:
    assert any("sender" in p for p in problems('[notify]\nhost = "h"\n'))
    assert any(
        "notify.sender" in p for p in problems('[notify]\nhost = "h"\nsender = "not an address"\n')
    )

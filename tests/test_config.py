"""Config: typed decoding, one clear line per error with its key path, secrets from files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from somsd.config import ConfigError, Duration, load_config, parse_config

REPO = Path(__file__).resolve().parent.parent
SECRET = "pa55-w0rd-that-must-never-be-printed"


def somsd_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "somsd", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
        check=False,
    )


def write_config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "b2b.secret").write_text(SECRET + "\n")
    path = tmp_path / "somsd.toml"
    path.write_text(text)
    return path


WEBHOOK = """
[[channel]]
name = "b2b"
kind = "webhook"
secret_file = "b2b.secret"
"""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[daemon]\ndata_dir = '/tmp/x'\nlog_levle = 'info'\n",
            "daemon.log_levle: unknown key (check the spelling)",
        ),
        ("[api]\nmax_body_bytes = 'big'\n", "api.max_body_bytes: Expected `int`, got `str`"),
        (
            WEBHOOK + "poll_interval = '30 s'\n",
            'channel[0].poll_interval: "30 s" is not a duration; write "30s", "5m" or "250ms"',
        ),
        ("[api]\nlisten = 'localhost'\n", 'api.listen: "localhost" is not host:port'),
        ("[[channel]]\nname = 'x'\nkind = 'shopfy'\n", "channel[0].kind: Invalid enum value"),
        ("[routing]\nweights = { distance = -1.0 }\n", "routing.weights.distance: must not be"),
        ("[metrix]\n", "metrix: unknown section"),
        (
            WEBHOOK + "locations = ['nowhere']\n",
            'channel[0].locations[0]: unknown location "nowhere"',
        ),
        (
            "[[channel]]\nname = 'b2b'\nkind = 'webhook'\n",
            "channel[0].secret_file: a webhook channel needs the HMAC key file",
        ),
        ("[[location]]\nname = 'Lager Süd'\n", 'location[0].name: "Lager Süd" must be'),
        ("[[status]]\nname = 'x'\nform = ['new']\n", "status[0].form: unknown key"),
    ],
)
def test_each_config_error_names_its_key_path(tmp_path: Path, text: str, expected: str) -> None:
    """Every invalid value is reported with the path of its key and how to fix it."""
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text))
    assert any(problem.startswith(expected) for problem in caught.value.problems), (
        caught.value.problems
    )


def test_every_broken_section_is_reported_at_once(tmp_path: Path) -> None:
    """One run lists the problems of all sections, not just the first."""
    text = "[daemon]\nbogus = 1\n[api]\nlisten = 'x'\n[[location]]\nname='a'\npriority='high'\n"
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text))
    assert [p.split(":")[0] for p in caught.value.problems] == [
        "daemon.bogus",
        "api.listen",
        "location[0].priority",
    ]


def test_secret_files_resolve_in_credentials_directory_first(tmp_path: Path) -> None:
    """A relative `*_file` is read from $CREDENTIALS_DIRECTORY before the config's directory."""
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "b2b.secret").write_text("from-systemd\n")
    config = load_config(
        write_config(tmp_path, WEBHOOK), environ={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    secret_file = config.channel[0].secret_file
    assert secret_file is not None
    assert secret_file.secret.reveal() == "from-systemd"
    assert secret_file.path == credentials / "b2b.secret"


def test_secrets_never_appear_in_repr_or_errors(tmp_path: Path) -> None:
    """A config holding a secret prints and fails without ever showing the value."""
    config = load_config(write_config(tmp_path, WEBHOOK))
    assert SECRET not in repr(config)
    assert SECRET not in str(config.channel[0])
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, WEBHOOK + "sync_stock = 'yes'\n"))
    assert SECRET not in str(caught.value)


def test_relative_data_dir_is_next_to_the_config_file(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "[daemon]\ndata_dir = 'state'\n"))
    assert config.daemon.data_dir == str(tmp_path / "state")


def test_durations() -> None:
    assert [Duration(t).seconds for t in ("250ms", "30s", "5m", "2h", "1.5d")] == [
        0.25,
        30,
        300,
        7200,
        129600,
    ]
    with pytest.raises(ValueError, match="is not a duration"):
        Duration("30")


def test_unchanged_sections_compare_equal_and_changed_ones_do_not(tmp_path: Path) -> None:
    """Reload relies on value equality of sections, secrets included."""
    path = write_config(tmp_path, WEBHOOK)
    a, b = load_config(path), load_config(path)
    assert a.integrations() == b.integrations()
    (tmp_path / "b2b.secret").write_text("rotated")
    c = load_config(path)
    assert a.integrations()["channel/b2b"] != c.integrations()["channel/b2b"]


def test_shipped_example_and_demo_configs_are_valid(tmp_path: Path) -> None:
    """config/somsd.example.toml (with its credentials present) and config/demo.toml load."""
    for name in (
        "admin.token",
        "shop.secret",
        "b2b.secret",
        "dhl.key",
        "dhl.password",
        "selectline.password",
        "smtp.password",
    ):
        (tmp_path / name).write_text(f"value-of-{name}\n")
    example = load_config(
        REPO / "config" / "somsd.example.toml", environ={"CREDENTIALS_DIRECTORY": str(tmp_path)}
    )
    assert [c.name for c in example.channel] == ["shop", "b2b", "edi"]
    demo = load_config(REPO / "config" / "demo.toml", environ={})
    assert len([loc for loc in demo.location if loc.kind == "warehouse"]) == 3
    assert len([loc for loc in demo.location if loc.kind == "store"]) == 2


def test_parse_rejects_unreadable_toml() -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        parse_config("[daemon\n")


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("unknown-key", "daemon.colour: unknown key (check the spelling)"),
        ("wrong-type", "api.max_body_bytes: Expected `int`, got `str`"),
        ("missing-secret", "channel[0].secret_file: secret file not found"),
        ("bad-toml", "not valid TOML: Expected '=' after a key"),
        ("missing-file", "cannot read config file: No such file or directory"),
    ],
)
def test_check_config_prints_one_line_per_error_and_exits_2(
    tmp_path: Path, setup: str, expected: str
) -> None:
    """`somsd check-config` on bad input: exit 2, one line naming file and key, no traceback."""
    path = tmp_path / "somsd.toml"
    texts = {
        "unknown-key": "[daemon]\ncolour = 'blue'\n",
        "wrong-type": "[api]\nmax_body_bytes = 'lots'\n",
        "missing-secret": WEBHOOK,
        "bad-toml": "[daemon]\ndata_dir\n",
    }
    if setup in texts:
        path.write_text(texts[setup])
    result = somsd_cli("check-config", "-c", str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{path}: {expected}")
    assert "Traceback" not in result.stderr


def test_check_config_accepts_a_valid_file(tmp_path: Path) -> None:
    shutil.copy(REPO / "config" / "demo.toml", tmp_path / "demo.toml")
    shutil.copytree(REPO / "config" / "demo-secrets", tmp_path / "demo-secrets")
    result = somsd_cli("check-config", "-c", str(tmp_path / "demo.toml"))
    assert result.returncode == 0, result.stderr
    assert "ok (1 channels, 5 locations" in result.stdout


def test_a_channel_without_locations_is_served_by_every_location(tmp_path: Path) -> None:
    text = WEBHOOK + '\n[[location]]\nname = "wh-1"\n\n[[location]]\nname = "store-1"\n'
    config = load_config(write_config(tmp_path, text))
    assert config.channel[0].locations == ("wh-1", "store-1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "x = " + "{a=" * 2000 + "1" + "}" * 2000 + "\n",
            "not valid TOML: tables or arrays nested",
        ),
        ("y = " + "[" * 2000 + "]" * 2000 + "\n", "not valid TOML: tables or arrays nested"),
        ("z = " + "[" * 40 + "]" * 40 + "\n", "tables or arrays nested too deeply"),
        ("[api]\nmax_body_bytes = 99999999999999999999\n", "api.max_body_bytes: must be at most"),
        ("[api]\nmax_body_bytes = 100\n", "api.max_body_bytes: must be at least 1024"),
        ("[api]\nmax_body_bytes = 1" + "0" * 5000 + "\n", "not valid TOML: Exceeds the limit"),
        ("[routing]\nmax_locations = 0\n", "routing.max_locations: must be at least 1"),
        ("[routing]\nweights = { cost = inf }\n", "routing.weights.cost: must be at most"),
        ("[routing]\nweights = { cost = nan }\n", "routing.weights.cost: must not be"),
        ("[daemon]\ndrain_timeout = '99999999999d'\n", "daemon.drain_timeout: "),
        ("[[location]]\nname = 'a'\nlat = 1e999\nlon = 1.0\n", "location[0].lat: must be at most"),
        ("[[location]]\nname = 'a'\npriority = -1\n", "location[0].priority: must not be negative"),
        ("[[location]]\nname = 'a'\ncountry = 'Germany'\n", 'location[0].country: "Germany" is'),
        ("[[location]]\nname = 'a'\nships_to = ['de']\n", "location[0].ships_to[0]: "),
        (
            "[[location]]\nname = 'a'\nrates = [{carrier='dhl', cost=1.0, days=1.0, "
            "countries=['XX']}]\n",
            "location[0].rates[0].countries[0]: ",
        ),
        ("[holds]\nunpaid_limits = { EUR = '1e999999' }\n", "holds.unpaid_limits.EUR: must be at"),
    ],
)
def test_every_number_has_a_range_and_nesting_is_bounded(
    tmp_path: Path, text: str, expected: str
) -> None:
    """Issue 15.1/15.9, 16.13: hostile or mistyped values are problems, never crashes."""
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, text))
    assert any(problem.startswith(expected) for problem in caught.value.problems), (
        caught.value.problems
    )


def test_non_ascii_secrets_compare_and_load(tmp_path: Path) -> None:
    """Issue 15.2: secrets are compared as bytes, so non-ASCII ones work everywhere."""
    path = write_config(tmp_path, WEBHOOK)
    (tmp_path / "b2b.secret").write_text("geheim-ä-schlüssel-123\n")
    a, b = load_config(path), load_config(path)
    assert a.integrations() == b.integrations()
    secret_file = a.channel[0].secret_file
    assert secret_file is not None
    assert secret_file.secret.matches("geheim-ä-schlüssel-123")
    (tmp_path / "b2b.secret").write_bytes(b"\xff\xfe-not-utf8\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        f'channel[0].secret_file: secret file "{tmp_path / "b2b.secret"}" is not UTF-8 text'
    ]


def test_smartstore_channel_keys_are_checked(tmp_path: Path) -> None:
    (tmp_path / "shop.secret").write_text("s\n")
    path = tmp_path / "somsd.toml"
    path.write_text(
        """
[daemon]
data_dir = "data"

[[channel]]
name = "shop"
kind = "smartstore"
url = "https://shop.example.com"
public_key = "k"
secret_key_file = "shop.secret"
sold_out_action = "hide"
stock_sync_concurrency = 99
reconcile_interval = "10s"
[channel.payment_methods]
"Payments.Foo" = "bitcoin"
[channel.shipping_methods]
"Drone" = "teleport"
[channel.status_map]
"complete" = "done"
"nonesuch" = "processing"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = "\n".join(caught.value.problems)
    for expected in (
        'channel[0].payment_methods."Payments.Foo"',
        'channel[0].shipping_methods."Drone"',
        'channel[0].status_map."complete": "done"',
        'channel[0].status_map."nonesuch": no such status',
        "channel[0].stock_sync_concurrency",
        "channel[0].reconcile_interval",
    ):
        assert expected in text, text


def test_shop_pickup_methods_must_name_a_pickup_store(tmp_path: Path) -> None:
    (tmp_path / "shop.secret").write_text("s\n")
    path = tmp_path / "somsd.toml"
    body = """
[[location]]
name = "wh"

[[location]]
name = "store-essen"
kind = "store"
capabilities = ["ship", "pickup"]

[[channel]]
name = "shop"
kind = "smartstore"
url = "https://shop.example.com"
public_key = "k"
secret_key_file = "shop.secret"
default_pickup_location = "{default}"
pickup_locations = {{ "Abholung Essen" = "store-essen", "Abholung Lager" = "{other}" }}
"""
    path.write_text(body.format(default="store-essen", other="store-essen"))
    channel = load_config(path).channel[0]
    assert channel.pickup_locations == {
        "Abholung Essen": "store-essen",
        "Abholung Lager": "store-essen",
    }
    path.write_text(body.format(default="nowhere", other="wh"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        'channel[0].pickup_locations."Abholung Lager": "wh" is not a location with '
        'capabilities = ["pickup"]; pickup stores: store-essen',
        'channel[0].default_pickup_location: "nowhere" is not a location with '
        'capabilities = ["pickup"]; pickup stores: store-essen',
    ]


def test_a_selectline_erp_needs_its_url_and_password(tmp_path: Path) -> None:
    path = tmp_path / "somsd.toml"
    path.write_text(
        '[[erp]]\nname = "sl"\nkind = "selectline"\n\n[[erp]]\nname = "other"\nkind = "rest"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.problems == [
        "erp[0].url: required for kind selectline",
        "erp[0].password_file: required for kind selectline",
    ]

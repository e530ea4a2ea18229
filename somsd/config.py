"""The daemon's configuration: one TOML file decoded into frozen, typed msgspec Structs.

Why this shape:
- `forbid_unknown_fields` on every table turns a typo (`pol_interval`) into an error instead of a
  silently ignored setting;
- each top-level table and each `[[channel]]`-style entry is decoded on its own, so one run of
  `somsd check-config` reports every broken section, not just the first one msgspec meets;
- every error names its key path (`channel[1].poll_interval: ...`), never a secret's value;
- secrets are read only from files (`*_file` keys), resolved first in systemd's
  `$CREDENTIALS_DIRECTORY` (`LoadCredential=`) and then next to the config file, and held as
  `Secret` so they cannot end up in a log line;
- the Structs are frozen and compare by value, so a reload can tell exactly which section
  changed and restart only the actor that owns it.
"""

from __future__ import annotations

import os
import re
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import msgspec

from somsd.domain.status import STANDARD_TRANSITIONS, CustomStatus, status_config_problems
from somsd.secrets import Secret

__all__ = [
    "ApiConfig",
    "CarrierConfig",
    "ChannelConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "Duration",
    "ErpConfig",
    "HoldsConfig",
    "InventoryConfig",
    "InvoicingConfig",
    "ListenAddress",
    "LocationConfig",
    "MetricsConfig",
    "RateConfig",
    "RoutingConfig",
    "RoutingWeights",
    "SecretFile",
    "StatusConfig",
    "StoreAddress",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path("/etc/somsd/somsd.toml")


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one line per error, each with its path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(f"{source}: " + "; ".join(problems))
        self.source = source
        self.problems = problems


class Duration:
    """A duration written as a string: "250ms", "30s", "5m", "2h", "1d"."""

    __slots__ = ("seconds", "text")
    _UNITS: Mapping[str, float] = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    _PATTERN = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")

    def __init__(self, text: str) -> None:
        match = self._PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(f'"{text}" is not a duration; write "30s", "5m" or "250ms"')
        self.text = text
        self.seconds = float(match[1]) * self._UNITS[match[2]]

    def __repr__(self) -> str:
        return f"Duration({self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Duration) and other.seconds == self.seconds

    def __hash__(self) -> int:
        return hash(self.seconds)


class ListenAddress:
    """`host:port` for a listener; IPv6 hosts in brackets (`[::1]:8470`)."""

    __slots__ = ("host", "port")
    _PATTERN = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})")

    def __init__(self, text: str) -> None:
        match = self._PATTERN.fullmatch(text)
        if match is None or not 0 <= int(match[2]) <= 65535:
            raise ValueError(f'"{text}" is not host:port; write "127.0.0.1:8470"')
        self.host = match[1]
        self.port = int(match[2])

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"ListenAddress({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ListenAddress) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


class SecretFile:
    """A `*_file` key: where the secret came from and the secret itself (never printed)."""

    __slots__ = ("path", "secret")

    def __init__(self, path: Path, secret: Secret) -> None:
        self.path = path
        self.secret = secret

    def lines(self) -> list[Secret]:
        """Non-empty lines as separate secrets: a token file may hold several for rotation."""
        return [Secret(s.strip()) for s in self.secret.reveal().splitlines() if s.strip()]

    def __repr__(self) -> str:
        return f"SecretFile({str(self.path)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretFile) and (other.path, other.secret) == (
            self.path,
            self.secret,
        )

    def __hash__(self) -> int:
        return hash(self.path)


class _Table(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every config table: immutable, compared by value, typos rejected."""


LogLevel = Literal["debug", "info", "warning", "error"]


class DaemonConfig(_Table, frozen=True):
    data_dir: str = "/var/lib/somsd"
    log_level: LogLevel = "info"
    # SIGTERM: how long in-flight requests and mailboxes may drain before the final commit.
    # Below the unit's TimeoutStopSec so systemd never has to SIGKILL a draining daemon.
    drain_timeout: Duration = msgspec.field(default_factory=lambda: Duration("10s"))
    pid_file: str | None = None


class ApiConfig(_Table, frozen=True):
    listen: ListenAddress = msgspec.field(default_factory=lambda: ListenAddress("127.0.0.1:8470"))
    token_file: SecretFile | None = None
    # A large B2B order with 500 lines is about 150 KB of JSON; 1 MiB leaves room and still
    # stops a client from streaming megabytes into memory.
    max_body_bytes: int = 1_048_576


class MetricsConfig(_Table, frozen=True):
    listen: ListenAddress = msgspec.field(default_factory=lambda: ListenAddress("127.0.0.1:9470"))


class ChannelConfig(_Table, frozen=True):
    name: str
    kind: Literal["smartstore", "webhook"]
    url: str | None = None
    public_key: str | None = None
    secret_key_file: SecretFile | None = None
    secret_file: SecretFile | None = None
    poll_interval: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    locations: tuple[str, ...] = ()  # who may fulfil this channel's orders; empty: every location
    sync_stock: bool = True
    hide_sold_out: bool = True
    low_stock_threshold: int | None = None  # ATP at or below this raises a low-stock alert
    # kind smartstore: shop payment system names -> canonical methods, on top of the defaults
    payment_methods: dict[str, str] = msgspec.field(default_factory=dict)
    # kind smartstore: shop shipping method names -> standard | express | pickup
    shipping_methods: dict[str, str] = msgspec.field(default_factory=dict)
    # kind smartstore: somsd status (canonical or custom) -> shop order status
    # (pending | processing | complete | cancelled); unlisted ones go to the shop as notes only
    status_map: dict[str, str] = msgspec.field(default_factory=dict)
    sold_out_action: Literal["unpublish", "hide", "disable_buy"] = "unpublish"
    reconcile_interval: Duration | None = None  # None: reconcile only when asked
    poll_overlap: Duration = msgspec.field(default_factory=lambda: Duration("2m"))
    stock_sync_concurrency: int = 4


class RateConfig(_Table, frozen=True):
    """What shipping from a location costs and takes, for routing (not for billing)."""

    carrier: str
    cost: float  # in the shop's currency, only compared with other rates
    days: float
    countries: tuple[str, ...] = ()  # empty: every country the location ships to


class StoreAddress(_Table, frozen=True):
    """Where a transfer for click & collect is delivered."""

    name: str
    street: str
    zip: str
    city: str
    country: str = "DE"


class LocationConfig(_Table, frozen=True):
    name: str
    kind: Literal["warehouse", "store"] = "warehouse"
    adapter: Literal["rest", "selectline", "csv", "manual"] = "manual"
    url: str | None = None
    token_file: SecretFile | None = None  # bearer token for adapter "rest"
    callback_secret_file: SecretFile | None = None  # HMAC key of the 3PL's status callbacks
    poll_interval: Duration = msgspec.field(default_factory=lambda: Duration("15s"))
    outbound_dir: str | None = None  # adapter "csv": fulfilment files written here
    inbound_dir: str | None = None  # adapter "csv": status and stock files read from here
    address: StoreAddress | None = None
    rates: tuple[RateConfig, ...] = ()
    country: str = "DE"
    lat: float | None = None
    lon: float | None = None
    ships_to: tuple[str, ...] = ()
    capabilities: tuple[Literal["ship", "pickup"], ...] = ("ship",)
    daily_capacity: int | None = None
    priority: int = 1
    safety_stock: int = 0


class CarrierConfig(_Table, frozen=True):
    name: str
    kind: Literal["dhl-parcel-de"]
    url: str | None = None
    api_key_file: SecretFile | None = None


class ErpConfig(_Table, frozen=True):
    name: str
    kind: Literal["selectline", "rest"]
    url: str | None = None
    password_file: SecretFile | None = None
    stock_source: bool = False
    post_invoices: bool = False


class RoutingWeights(_Table, frozen=True):
    distance: float = 1.0
    cost: float = 1.0
    speed: float = 1.0
    priority: float = 1.0


class RoutingConfig(_Table, frozen=True):
    weights: RoutingWeights = msgspec.field(default_factory=RoutingWeights)
    allow_split: bool = True
    max_locations: int = 2


PaymentMethod = Literal["creditcard", "paypal", "invoice", "banktransfer", "check", "cod"]


class InvoicingConfig(_Table, frozen=True):
    auto_methods: tuple[PaymentMethod, ...] = ("creditcard", "paypal")
    # Decides an invoice's date and so its numbering year: 23:30 UTC on 31 December is
    # already 1 January in Germany.
    timezone: str = "Europe/Berlin"


class InventoryConfig(_Table, frozen=True):
    # A burst of changes to one SKU is pushed to shops once: after `push_quiet` without a
    # change, at the latest `push_max_delay` after the first; sold-out changes go at once.
    push_quiet: Duration = msgspec.field(default_factory=lambda: Duration("2s"))
    push_max_delay: Duration = msgspec.field(default_factory=lambda: Duration("30s"))


class HoldsConfig(_Table, frozen=True):
    """Orders matching a rule wait in on-hold for an operator (incomplete addresses always)."""

    unpaid_methods: tuple[PaymentMethod, ...] = ("invoice", "cod")
    # Per currency, as strings: { EUR = "1000.00" } holds unpaid orders above 1000 EUR.
    unpaid_limits: dict[str, Decimal] = msgspec.field(default_factory=dict)
    blocked_emails: tuple[str, ...] = ()
    blocked_customer_ids: tuple[str, ...] = ()


class StatusConfig(_Table, frozen=True, rename={"from_": "from"}):
    name: str
    from_: tuple[str, ...] = ()
    to: tuple[str, ...] = ()


class Config(msgspec.Struct, frozen=True, kw_only=True):
    daemon: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    channel: tuple[ChannelConfig, ...] = ()
    location: tuple[LocationConfig, ...] = ()
    carrier: tuple[CarrierConfig, ...] = ()
    erp: tuple[ErpConfig, ...] = ()
    routing: RoutingConfig = msgspec.field(default_factory=RoutingConfig)
    invoicing: InvoicingConfig = msgspec.field(default_factory=InvoicingConfig)
    holds: HoldsConfig = msgspec.field(default_factory=HoldsConfig)
    inventory: InventoryConfig = msgspec.field(default_factory=InventoryConfig)
    status: tuple[StatusConfig, ...] = ()
    source: str = "<memory>"

    def integrations(self) -> dict[str, msgspec.Struct]:
        """Each integration section keyed by its actor name (`channel/shop`, `location/wh-1`)."""
        sections: dict[str, msgspec.Struct] = {}
        for kind in ("channel", "location", "carrier", "erp"):
            for entry in getattr(self, kind):
                sections[f"{kind}/{entry.name}"] = entry
        return sections

    def custom_statuses(self) -> list[CustomStatus]:
        return [CustomStatus(s.name, s.from_, s.to) for s in self.status]

    def secrets(self) -> list[Secret]:
        """Every secret value loaded, so the logger can scrub them from any line."""
        found: list[Secret] = []
        for section in (self.api, *self.integrations().values()):
            for name in section.__struct_fields__:
                value = getattr(section, name)
                if isinstance(value, SecretFile):
                    found.extend([value.secret, *value.lines()])
        return found


_SECTION_TYPES: dict[str, Any] = {
    "daemon": DaemonConfig,
    "api": ApiConfig,
    "metrics": MetricsConfig,
    "channel": ChannelConfig,
    "location": LocationConfig,
    "carrier": CarrierConfig,
    "erp": ErpConfig,
    "routing": RoutingConfig,
    "invoicing": InvoicingConfig,
    "holds": HoldsConfig,
    "inventory": InventoryConfig,
    "status": StatusConfig,
}
_LISTS = {"channel", "location", "carrier", "erp", "status"}


@dataclass(frozen=True)
class _SecretResolver:
    config_dir: Path
    credentials_dir: Path | None

    def read(self, value: object) -> SecretFile:
        if not isinstance(value, str) or not value:
            raise TypeError("expected a file path (str)")
        candidates = [Path(value)] if os.path.isabs(value) else []
        if not candidates:
            if self.credentials_dir is not None:
                candidates.append(self.credentials_dir / value)
            candidates.append(self.config_dir / value)
        for path in candidates:
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ValueError(f'cannot read secret file "{path}": {exc.strerror}') from None
            secret = text.strip()
            if not secret:
                raise ValueError(f'secret file "{path}" is empty')
            return SecretFile(path, Secret(secret))
        where = " or ".join(f'"{p}"' for p in candidates)
        raise ValueError(f"secret file not found: {where}")


def _decode_hook(resolver: _SecretResolver) -> Callable[[type, object], object]:
    def hook(type_: type, value: object) -> object:
        if type_ is SecretFile:
            return resolver.read(value)
        if type_ in (Duration, ListenAddress):
            if not isinstance(value, str):
                raise TypeError(f"expected a string, got {type(value).__name__}")
            return type_(value)
        raise NotImplementedError(type_)

    return hook


_MSGSPEC_PATH = re.compile(r"^(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)


def _problem(prefix: str, error: msgspec.ValidationError) -> str:
    match = _MSGSPEC_PATH.match(str(error))
    assert match is not None  # the pattern matches any string
    message, path = match["message"], match["path"] or ""
    message = message.replace("Object contains unknown field", "unknown key")
    if message.startswith("unknown key"):
        # msgspec puts the unknown key in the message, not in the path; join them.
        key = message.removeprefix("unknown key").strip(" `")
        return f"{prefix}{path}.{key}: unknown key (check the spelling)".lstrip(".")
    return f"{prefix}{path}: {message}"


def parse_config(
    text: str,
    *,
    source: str = "<memory>",
    config_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Decode and validate TOML text; raise `ConfigError` listing every problem found."""
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    resolver = _SecretResolver(config_dir or Path.cwd(), Path(credentials) if credentials else None)
    hook = _decode_hook(resolver)
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for key, value in raw.items():
        section_type = _SECTION_TYPES.get(key)
        if section_type is None:
            problems.append(f"{key}: unknown section (expected one of {', '.join(_SECTION_TYPES)})")
            continue
        if key in _LISTS:
            if not isinstance(value, list):
                problems.append(f"{key}: write it as an array of tables, [[{key}]]")
                continue
            entries = []
            for index, item in enumerate(value):
                try:
                    entries.append(msgspec.convert(item, section_type, dec_hook=hook))
                except msgspec.ValidationError as exc:
                    problems.append(_problem(f"{key}[{index}]", exc))
            sections[key] = tuple(entries)
        else:
            try:
                sections[key] = msgspec.convert(value, section_type, dec_hook=hook)
            except msgspec.ValidationError as exc:
                problems.append(_problem(key, exc))
    if problems:
        raise ConfigError(source, problems)
    if "daemon" in sections and config_dir is not None:
        # Relative paths in [daemon] mean "next to the config file", whatever the cwd is.
        daemon = sections["daemon"]
        sections["daemon"] = msgspec.structs.replace(
            daemon,
            data_dir=str(config_dir / daemon.data_dir),
            pid_file=str(config_dir / daemon.pid_file) if daemon.pid_file else None,
        )
    if sections.get("channel") and sections.get("location"):
        # No `locations` on a channel means every location may fulfil it: the common case of
        # one shop and its warehouses needs no list, and a new location serves it at once.
        everywhere = tuple(location.name for location in sections["location"])
        sections["channel"] = tuple(
            channel if channel.locations else msgspec.structs.replace(channel, locations=everywhere)
            for channel in sections["channel"]
        )
    config = Config(**sections, source=source)
    problems = _check_references(config)
    if problems:
        raise ConfigError(source, problems)
    return config


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"cannot read config file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["config file is not UTF-8 text"]) from None
    return parse_config(text, source=str(path), config_dir=path.resolve().parent, environ=environ)


_SHOP_ORDER_STATUSES = ("pending", "processing", "complete", "cancelled")
_SHIPPING_KINDS = ("standard", "express", "pickup")


def _channel_sync_problems(index: int, channel: ChannelConfig) -> list[str]:
    """The smartstore channel keys: known targets in the maps, sane numbers."""
    problems: list[str] = []
    for name, target in channel.status_map.items():
        if target not in _SHOP_ORDER_STATUSES:
            problems.append(
                f'channel[{index}].status_map."{name}": "{target}" is not a shop order status; '
                f"use one of {', '.join(_SHOP_ORDER_STATUSES)}"
            )
    methods = ("creditcard", "paypal", "invoice", "banktransfer", "check", "cod")
    for name, target in channel.payment_methods.items():
        if target not in methods:
            problems.append(
                f'channel[{index}].payment_methods."{name}": "{target}" must be one of '
                f"{', '.join(methods)}"
            )
    for name, target in channel.shipping_methods.items():
        if target not in _SHIPPING_KINDS:
            problems.append(
                f'channel[{index}].shipping_methods."{name}": "{target}" must be one of '
                f"{', '.join(_SHIPPING_KINDS)}"
            )
    if not 1 <= channel.stock_sync_concurrency <= 32:
        problems.append(
            f"channel[{index}].stock_sync_concurrency: {channel.stock_sync_concurrency} must be "
            "between 1 and 32"
        )
    if channel.poll_overlap.seconds > 3600:
        problems.append(f"channel[{index}].poll_overlap: at most 1h")
    if channel.reconcile_interval is not None and channel.reconcile_interval.seconds < 60:
        problems.append(f"channel[{index}].reconcile_interval: at least 1m")
    return problems


def _check_references(config: Config) -> list[str]:
    """Rules that span sections: unique names, known locations, required keys per kind."""
    problems: list[str] = []
    for kind in ("channel", "location", "carrier", "erp", "status"):
        seen: set[str] = set()
        for index, entry in enumerate(getattr(config, kind)):
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", entry.name):
                problems.append(
                    f'{kind}[{index}].name: "{entry.name}" must be lower-case letters, digits, '
                    "'-' or '_' (it appears in URLs and metric labels)"
                )
            if entry.name in seen:
                problems.append(f'{kind}[{index}].name: "{entry.name}" is used twice')
            seen.add(entry.name)
    locations = {loc.name for loc in config.location}
    for index, channel in enumerate(config.channel):
        for j, name in enumerate(channel.locations):
            if name not in locations:
                problems.append(f'channel[{index}].locations[{j}]: unknown location "{name}"')
        if channel.kind == "webhook" and channel.secret_file is None:
            problems.append(
                f"channel[{index}].secret_file: a webhook channel needs the HMAC key file"
            )
        if channel.kind == "smartstore":
            for key in ("url", "public_key", "secret_key_file"):
                if getattr(channel, key) is None:
                    problems.append(f"channel[{index}].{key}: required for kind smartstore")
        problems.extend(_channel_sync_problems(index, channel))
        known_statuses = set(STANDARD_TRANSITIONS) | {"on-hold", "closed"}
        known_statuses |= {status.name for status in config.status}
        for name in channel.status_map:
            if name not in known_statuses:
                problems.append(
                    f'channel[{index}].status_map."{name}": no such status; use a standard '
                    "status or a [[status]] name"
                )
    for index, location in enumerate(config.location):
        if (location.lat is None) != (location.lon is None):
            problems.append(f"location[{index}]: give both lat and lon, or neither")
        if location.adapter == "rest" and location.url is None:
            problems.append(f"location[{index}].url: required for adapter rest")
        if location.adapter == "csv":
            for key in ("outbound_dir", "inbound_dir"):
                if getattr(location, key) is None:
                    problems.append(f"location[{index}].{key}: required for adapter csv")
    weights = config.routing.weights
    for name in weights.__struct_fields__:
        if getattr(weights, name) < 0:
            problems.append(f"routing.weights.{name}: must not be negative")
    if config.routing.max_locations < 1:
        problems.append("routing.max_locations: must be at least 1")
    if config.api.max_body_bytes < 1024:
        problems.append("api.max_body_bytes: must be at least 1024")
    try:
        zoneinfo.ZoneInfo(config.invoicing.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(
            f'invoicing.timezone: unknown time zone "{config.invoicing.timezone}"; '
            'write an IANA name such as "Europe/Berlin"'
        )
    for currency, limit in config.holds.unpaid_limits.items():
        if limit < 0:
            problems.append(f"holds.unpaid_limits.{currency}: must not be negative")
    problems.extend(str(p) for p in status_config_problems(config.custom_statuses()))
    return problems

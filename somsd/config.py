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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from somsd.cluster.dsn import InvalidDsn, database_address
from somsd.cluster.lease import DEFAULT_DRIFT
from somsd.domain.countries import is_country_code
from somsd.domain.status import STANDARD_TRANSITIONS, CustomStatus, status_config_problems
from somsd.secrets import Secret
from somsd.store import MAX_BLOB_BYTES

__all__ = [
    "ApiConfig",
    "CarrierConfig",
    "ChannelConfig",
    "ClusterConfig",
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
    "NotifyChannelConfig",
    "NotifyConfig",
    "RateConfig",
    "RoutingConfig",
    "RoutingWeights",
    "SecretFile",
    "SenderAddress",
    "StatusConfig",
    "StoreAddress",
    "StoreConfig",
    "data_dir_problem",
    "load_config",
    "parse_config",
    "raw_data_dir",
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
    MAX_SECONDS = 30 * 86400

    def __init__(self, text: str) -> None:
        match = self._PATTERN.fullmatch(text)
        if match is None:
            raise ValueError(f'"{text[:40]}" is not a duration; write "30s", "5m" or "250ms"')
        seconds = float(match[1]) * self._UNITS[match[2]]
        if not seconds <= self.MAX_SECONDS:
            # Every timer in somsd is far below this; a larger one is a typo that would
            # silently disable what it times (and 1e400 digits are infinite as a float).
            raise ValueError(f'"{text[:40]}" is longer than the longest allowed duration, "30d"')
        self.text = text
        self.seconds = seconds

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
            raise ValueError(f'"{text[:80]}" is not host:port; write "127.0.0.1:8470"')
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


# Every number in the config has a range: a value outside it is a typo or an attack on a
# reload (`max_body_bytes = 99999999999999999999` would in effect switch the body limit off).
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000_000)]
Rank = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
Weight = Annotated[float, msgspec.Meta(ge=0.0, le=1000.0)]
Latitude = Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
Longitude = Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]
MIN_BODY_BYTES = 1024
MAX_BODY_BYTES = 64 * 1024 * 1024
BodyBytes = Annotated[int, msgspec.Meta(ge=MIN_BODY_BYTES, le=MAX_BODY_BYTES)]
MAX_MONEY_LIMIT = Decimal(10) ** 12


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
    max_body_bytes: BodyBytes = 1_048_576


class MetricsConfig(_Table, frozen=True):
    listen: ListenAddress = msgspec.field(default_factory=lambda: ListenAddress("127.0.0.1:9470"))


class EdifactPartnerConfig(_Table, frozen=True):
    """A B2B partner of an `edifact` channel: its GLN and who it is as a customer."""

    gln: str
    name: str
    email: str
    street: str
    zip: str
    city: str
    country: str = "DE"
    customer_id: str | None = None  # the customer number on invoices; unset: the GLN
    tax_rate: Decimal = Decimal(19)  # for ORDERS lines without a TAX segment


class ChannelConfig(_Table, frozen=True):
    name: str
    kind: Literal["smartstore", "webhook", "edifact"]
    url: str | None = None
    public_key: str | None = None
    secret_key_file: SecretFile | None = None
    secret_file: SecretFile | None = None
    poll_interval: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    locations: tuple[str, ...] = ()  # who may fulfil this channel's orders; empty: every location
    sync_stock: bool = True
    hide_sold_out: bool = True
    low_stock_threshold: Count | None = None  # ATP at or below this raises a low-stock alert
    # kind smartstore: shop payment system names -> canonical methods, on top of the defaults
    payment_methods: dict[str, str] = msgspec.field(default_factory=dict)
    # kind smartstore: shop shipping method names -> standard | express | pickup
    shipping_methods: dict[str, str] = msgspec.field(default_factory=dict)
    # kind smartstore: shop shipping method names that are pickups -> the somsd store (a
    # location with the pickup capability) the customer collects from; unlisted pickup methods
    # go to `default_pickup_location`, and with neither the order is held (pickup_store_unknown)
    pickup_locations: dict[str, str] = msgspec.field(default_factory=dict)
    default_pickup_location: str | None = None
    # kind smartstore: somsd status (canonical or custom) -> shop order status
    # (pending | processing | complete | cancelled); unlisted ones go to the shop as notes only
    status_map: dict[str, str] = msgspec.field(default_factory=dict)
    sold_out_action: Literal["unpublish", "hide", "disable_buy"] = "unpublish"
    reconcile_interval: Duration | None = None  # None: reconcile only when asked
    poll_overlap: Duration = msgspec.field(default_factory=lambda: Duration("2m"))
    stock_sync_concurrency: int = 4
    # kind edifact: the drop folder (in/, processing/, processed/, failed/, out/), our GLN
    # (UNB sender of what we send, NAD+SU) and the partners whose ORDERS we take
    folder: str | None = None
    gln: str | None = None
    partners: tuple[EdifactPartnerConfig, ...] = ()


class RateConfig(_Table, frozen=True):
    """What shipping from a location costs and takes, for routing (not for billing)."""

    carrier: str
    cost: Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]  # shop currency, only compared
    days: Annotated[float, msgspec.Meta(ge=0.0, le=365.0)]
    countries: tuple[str, ...] = ()  # empty: every country the location ships to


class StoreAddress(_Table, frozen=True):
    """Where a transfer for click & collect is delivered."""

    name: str
    street: str
    zip: str
    city: str
    country: str = "DE"


class SenderAddress(_Table, frozen=True, kw_only=True):
    """Who a location's parcels come from, as the carrier's label prints it."""

    name: str
    company: str | None = None
    street: str
    zip: str
    city: str
    country: str = "DE"
    email: str | None = None


class LocationConfig(_Table, frozen=True):
    name: str
    kind: Literal["warehouse", "store"] = "warehouse"
    adapter: Literal["rest", "selectline", "csv", "manual"] = "manual"
    url: str | None = None
    token_file: SecretFile | None = None  # bearer token for adapter "rest"
    callback_secret_file: SecretFile | None = None  # HMAC key of the 3PL's status callbacks
    staff_token_file: SecretFile | None = None  # console logins that see only this location
    poll_interval: Duration = msgspec.field(default_factory=lambda: Duration("15s"))
    outbound_dir: str | None = None  # adapter "csv": fulfilment files written here
    inbound_dir: str | None = None  # adapter "csv": status and stock files read from here
    address: StoreAddress | None = None
    rates: tuple[RateConfig, ...] = ()
    # The stock-source ERP's warehouses whose available stock is this location's stock.
    warehouses: tuple[str, ...] = ()
    # adapter "selectline": the [[erp]] whose warehouse picks and ships (None: the only one)
    erp: str | None = None
    country: str = "DE"
    lat: Latitude | None = None
    lon: Longitude | None = None
    ships_to: tuple[str, ...] = ()
    capabilities: tuple[Literal["ship", "pickup"], ...] = ("ship",)
    daily_capacity: Count | None = None
    priority: Rank = 1
    safety_stock: Count = 0
    # Shipping labels (see actors/carrier.py): the [[carrier]]s this location ships with (the
    # first is used unless routing chose another), its sender address, the carrier's billing
    # number per product, and the label's format and medium.
    carriers: tuple[str, ...] = ()
    sender: SenderAddress | None = None
    billing_numbers: dict[str, str] = msgspec.field(default_factory=dict)
    product: str = "V01PAK"  # domestic parcels
    international_product: str = "V53WPAK"  # parcels abroad
    label_format: Literal["pdf", "zpl"] = "pdf"
    print_format: str | None = None  # the carrier's label medium, e.g. "910-300-400"
    parcel_weight_grams: Annotated[int, msgspec.Meta(ge=1, le=31_500)] = 1000
    item_weights_grams: dict[str, Annotated[int, msgspec.Meta(ge=1, le=31_500)]] = msgspec.field(
        default_factory=dict
    )
    label_printer: str | None = None  # "tcp://host:9100": raw ZPL to a Zebra; None: no printer


class CarrierConfig(_Table, frozen=True):
    name: str
    kind: Literal["dhl-parcel-de", "own-fleet"]
    url: str | None = None
    api_key_file: SecretFile | None = None
    tracking_url: str | None = None  # None: DHL's unified tracking API
    auth: Literal["basic", "oauth"] = "basic"
    user: str | None = None  # the business customer portal (GKP) user
    password_file: SecretFile | None = None
    client_secret_file: SecretFile | None = None  # auth oauth
    profile: str = "STANDARD_GRUPPENPROFIL"
    tracking_interval: Duration = msgspec.field(default_factory=lambda: Duration("15m"))
    validate_addresses: bool = True  # DHL's dry run at order intake; refused -> on hold
    # The customer's e-mail on the label data, for the carrier's own parcel notification; off
    # by default: handing it over needs the customer's consent (GDPR).
    share_email: bool = False


class ErpConfig(_Table, frozen=True):
    name: str
    kind: Literal["selectline", "rest"]
    url: str | None = None
    password_file: SecretFile | None = None
    stock_source: bool = False
    post_invoices: bool = False
    user: str = "somsd"  # kind selectline: the API user somsd logs in as (one licence seat)
    app_key: str | None = None  # kind selectline: the licensed AppKey, if the install wants one
    # kind selectline: warehouses feeding `stock_location` (locations may list their own)
    warehouses: tuple[str, ...] = ()
    stock_location: str | None = None
    sku: Literal["number", "gtin"] = "number"  # somsd SKU = article number or GTIN (EAN)
    poll_interval: Duration = msgspec.field(default_factory=lambda: Duration("60s"))
    payment_interval: Duration = msgspec.field(default_factory=lambda: Duration("60s"))
    shipping_article: str = "VERSAND"  # the ERP article of the shipping position
    cancel_action: Literal["close", "delete"] = "close"  # what a cancellation does to the F
    # kind selectline, with post_invoices and [documents]: somsd's invoice/credit-note PDFs are
    # archived on the F / G as a journal with the file attached
    attach_documents: bool = False
    # kind selectline: purchase orders (B) and goods receipts (S) of the last purchasing_days
    # read this often for the supplier invoices' 3-way match (inboxes naming this ERP); None: off
    purchasing_interval: Duration | None = None
    purchasing_days: Annotated[int, msgspec.Meta(ge=1, le=730)] = 90


class RoutingWeights(_Table, frozen=True):
    distance: Weight = 1.0
    cost: Weight = 1.0
    speed: Weight = 1.0
    priority: Weight = 1.0


class RoutingConfig(_Table, frozen=True):
    weights: RoutingWeights = msgspec.field(default_factory=RoutingWeights)
    allow_split: bool = True
    max_locations: Annotated[int, msgspec.Meta(ge=1, le=100)] = 2


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


# The customer mails somsd sends (somsd/mail); `notify.mails` and a channel's `mails` pick them.
MailKind = Literal[
    "order_confirmation", "invoice", "shipped", "pickup_ready", "return_received", "refund"
]
MAIL_KINDS: tuple[MailKind, ...] = (
    "order_confirmation",
    "invoice",
    "shipped",
    "pickup_ready",
    "return_received",
    "refund",
)
MailLanguage = Literal["de", "en"]
Port = Annotated[int, msgspec.Meta(ge=1, le=65535)]


class NotifyChannelConfig(_Table, frozen=True):
    """What differs per sales channel in its customers' mails; unset keys take `[notify]`'s."""

    name: str
    sender: str | None = None
    reply_to: str | None = None
    shop_name: str | None = None
    shop_url: str | None = None
    mails: tuple[MailKind, ...] | None = None


class NotifyConfig(_Table, frozen=True):
    """`[notify]`: customer e-mail over SMTP (somsd/mail, actors/mailer.py)."""

    host: str
    sender: str  # "Shop <shop@example.com>": From of every mail unless its channel has one
    port: Port = 587
    security: Literal["starttls", "tls", "none"] = "starttls"
    user: str | None = None
    password_file: SecretFile | None = None
    ca_file: str | None = None
    timeout: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    reply_to: str | None = None
    bcc: tuple[str, ...] = ()
    template_dir: str | None = None
    shop_name: str = ""
    shop_url: str | None = None
    tracking_urls: dict[str, str] = msgspec.field(default_factory=dict)
    default_language: MailLanguage = "en"
    languages: dict[str, MailLanguage] = msgspec.field(default_factory=dict)
    mails: tuple[MailKind, ...] = MAIL_KINDS
    channel: tuple[NotifyChannelConfig, ...] = ()


class DocumentTemplateConfig(_Table, frozen=True):
    """One channel's seller template: any key left out is taken from `[documents]`."""

    channel: str
    seller_name: str | None = None
    street: str | None = None
    zip: str | None = None
    city: str | None = None
    country: str | None = None
    vat_id: str | None = None
    tax_number: str | None = None
    email: str | None = None
    contact_name: str | None = None
    phone: str | None = None
    bank_name: str | None = None
    iban: str | None = None
    bic: str | None = None
    logo: str | None = None
    footer: str | None = None


class DocumentsConfig(_Table, frozen=True):
    """Invoice and credit-note PDFs with their e-invoice; off until `enabled`."""

    enabled: bool = False
    seller_name: str = ""
    street: str = ""
    zip: str = ""
    city: str = ""
    country: str = "DE"
    vat_id: str = ""
    tax_number: str = ""
    email: str = ""
    contact_name: str = ""
    phone: str = ""
    bank_name: str = ""
    iban: str = ""
    bic: str = ""
    logo: str | None = None  # a PNG, relative to the config file's folder
    footer: str = ""
    payment_terms_days: Annotated[int, msgspec.Meta(ge=0, le=365)] = 14
    # customer id (the shop's) -> Leitweg-ID/buyer reference: those get XRechnung 3.0
    buyer_references: dict[str, str] = msgspec.field(default_factory=dict)
    validation_timeout: Duration = msgspec.field(default_factory=lambda: Duration("30s"))
    # Validator worker processes (each ~150 MiB, one core when busy); unset: cores - 1, min 1.
    validator_workers: Annotated[int, msgspec.Meta(ge=1, le=16)] | None = None
    # Where customers reach this daemon's public document route (a reverse proxy in front of
    # the API listener): set, a shop order from a polled channel gets an order note with a
    # signed, expiring link to its invoice PDF (Smartstore has no invoice upload).
    public_url: str | None = None
    link_key_file: SecretFile | None = None  # HMAC key of those links; required with public_url
    link_valid_for: Duration = msgspec.field(default_factory=lambda: Duration("30d"))
    template: tuple[DocumentTemplateConfig, ...] = ()


class SupplierConfig(_Table, frozen=True):
    """One supplier's master data: who it is, where we pay it, where its invoices are booked."""

    number: str  # our supplier (creditor) number, also the DATEV creditor account
    name: str = ""
    vat_id: str = ""  # identifies the supplier of an e-invoice or a template's invoice
    ibans: tuple[str, ...] = ()  # the accounts we pay to; an invoice naming another is held
    gl_account: str = ""  # default expense account of its invoices
    cost_centre: str = ""
    email: str = ""  # for the XRechnung written of its invoices
    phone: str = ""
    contact_name: str = ""
    street: str = ""
    zip: str = ""
    city: str = ""
    country: str = "DE"


class SupplierAccountingRuleConfig(_Table, frozen=True, kw_only=True):
    """G/L account and cost centre for a supplier's articles (first matching rule wins)."""

    supplier: str = ""  # supplier number; empty: any supplier
    article_prefix: str = ""  # the invoice line's article (BT-155) starts with it; empty: any
    gl_account: str
    cost_centre: str = ""


class SupplierInboxConfig(_Table, frozen=True):
    """Supplier invoices in (a watched folder and POST /v1/supplier-invoices), checked and out
    as XRechnung/CII plus a DATEV CSV batch. Paths are relative to the config file's folder."""

    name: str
    folder: str  # watched: every PDF or XML put here is taken in
    processed_folder: str = ""  # where taken-in files go; default <folder>/processed
    failed_folder: str = ""  # files that are neither PDF nor XML; default <folder>/failed
    template_dir: str = "supplier-templates"  # per-supplier YAML extraction templates
    poll_interval: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    # A taken-in file is a blob of the event store: at most MAX_BLOB_BYTES (20 MiB).
    max_file_bytes: Annotated[int, msgspec.Meta(ge=1024, le=MAX_BLOB_BYTES)] = MAX_BLOB_BYTES
    # Purchase orders and goods receipts, CSV with a header row (`;`-separated, decimal comma
    # allowed): order;article;quantity;net_price[;supplier] and order;article;quantity
    purchase_orders_csv: str = ""
    goods_receipts_csv: str = ""
    quantity_tolerance: Decimal = Decimal(0)  # units over received/ordered still accepted
    price_tolerance_percent: Decimal = Decimal(0)  # per-unit price off the PO by at most ...
    price_tolerance_cents: Decimal = Decimal(0)  # ... or by at most this many cents
    # The buyer on the e-invoice written (us); buyer_reference (Leitweg-ID) -> XRechnung 3.0
    buyer_name: str = ""
    buyer_company: str = ""
    buyer_street: str = ""
    buyer_zip: str = ""
    buyer_city: str = ""
    buyer_country: str = "DE"
    buyer_email: str = ""
    buyer_reference: str = ""
    # Accounting: company code, DATEV batch header, tax codes per VAT rate, G/L defaults
    company_code: str = ""
    datev_consultant: str = "1001"  # Beraternummer
    datev_client: str = "1"  # Mandantennummer
    fiscal_year_start_month: Annotated[int, msgspec.Meta(ge=1, le=12)] = 1
    default_gl_account: str = "3400"
    tax_codes: dict[str, str] = msgspec.field(
        default_factory=lambda: {"19": "9", "7": "8", "0": ""}
    )
    datev_dir: str = ""  # where the DATEV CSV batches are written; default <data_dir>/...
    # The local time ([invoicing] timezone) a day's DATEV batch closes: approvals from then on
    # belong to the next day's batch. "00:00": the calendar day. "HH:MM" or "HH:MM:SS".
    # (One Buchungsstapel file per day and fiscal year: actors/supplier_invoices_datev.py.)
    datev_cutoff: str = "00:00"
    # The `[[erp]] kind = "selectline"` section approved invoices are posted to as a supplier
    # invoice `E`; empty: none.
    erp: str = ""
    supplier: tuple[SupplierConfig, ...] = ()
    rule: tuple[SupplierAccountingRuleConfig, ...] = ()


class ClusterConfig(_Table, frozen=True):
    """`[cluster]`: several daemons on one PostgreSQL database share the singleton duties through
    leases (somsd/cluster, actors/lease_keeper.py); absent: one daemon runs everything."""

    member: str  # this daemon's name among the members, unique
    dsn_file: SecretFile  # the libpq URI of the lease database (it holds a password)
    lease_ttl: Duration = msgspec.field(default_factory=lambda: Duration("15s"))
    renew_every: Duration = msgspec.field(default_factory=lambda: Duration("5s"))
    # Where the other members (and their clients) reach this daemon's API, named in the 503 a
    # member answers for work this one owns; default: the API's bound address, a wildcard
    # address (0.0.0.0, ::) replaced by this machine's host name.
    advertise_url: str | None = None


class StatusConfig(_Table, frozen=True, rename={"from_": "from"}):
    name: str
    from_: tuple[str, ...] = ()
    to: tuple[str, ...] = ()


class StoreConfig(_Table, frozen=True):
    """Where the event log lives: SQLite in the data dir (one daemon), or PostgreSQL."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    # The libpq DSN (postgresql://user:password@host:5432/somsd); it holds a password, so it
    # is a secret file like every other (systemd credential or file next to the config).
    dsn_file: SecretFile | None = None


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
    notify: NotifyConfig | None = None
    documents: DocumentsConfig = msgspec.field(default_factory=DocumentsConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    supplier_inbox: tuple[SupplierInboxConfig, ...] = ()
    cluster: ClusterConfig | None = None
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
        notify = () if self.notify is None else (self.notify,)
        cluster = () if self.cluster is None else (self.cluster,)
        for section in (self.api, *self.integrations().values(), *notify, self.store, *cluster):
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
    "notify": NotifyConfig,
    "documents": DocumentsConfig,
    "store": StoreConfig,
    "supplier_inbox": SupplierInboxConfig,
    "cluster": ClusterConfig,
}
_LISTS = {"channel", "location", "carrier", "erp", "status", "supplier_inbox"}


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
            except UnicodeDecodeError:
                raise ValueError(f'secret file "{path}" is not UTF-8 text') from None
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


_RANGE_MESSAGE = re.compile(r"Expected `\w+` (?P<op>[<>]=) (?P<limit>[-\d.e+]+)")


def _problem(prefix: str, error: msgspec.ValidationError) -> str:
    match = _MSGSPEC_PATH.match(str(error))
    assert match is not None  # the pattern matches any string
    message, path = match["message"], match["path"] or ""
    message = message.replace("Object contains unknown field", "unknown key")
    bound = _RANGE_MESSAGE.fullmatch(message)
    if bound is not None:
        # "Expected `int` <= 67108864" says what msgspec checked; say what to write instead.
        limit = bound["limit"].removesuffix(".0")
        if bound["op"] == ">=":
            message = "must not be negative" if limit == "0" else f"must be at least {limit}"
        else:
            message = f"must be at most {limit}"
    if message.startswith("unknown key"):
        # msgspec puts the unknown key in the message, not in the path; join them.
        key = message.removeprefix("unknown key").strip(" `")
        return f"{prefix}{path}.{key}: unknown key (check the spelling)".lstrip(".")
    return f"{prefix}{path}: {message}"


_MAX_NESTING = 32  # the deepest real config is 3 tables deep; TOML itself has no limit


def _nesting_depth(value: object) -> int:
    """How deep tables and arrays nest, without recursion (the input may be hostile)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > _MAX_NESTING:
            break
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return deepest


def _read_toml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    except (RecursionError, MemoryError):
        # tomllib recurses once per nesting level: `x = {a={a=...}}` 2,000 deep exhausts the
        # stack. No config needs that, so it is an invalid file, not a crash.
        raise ConfigError(source, ["not valid TOML: tables or arrays nested too deeply"]) from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    if _nesting_depth(raw) > _MAX_NESTING:
        raise ConfigError(
            source, [f"tables or arrays nested too deeply (more than {_MAX_NESTING} levels)"]
        )
    return raw


def _decode_table(
    value: object,
    type_: Any,
    hook: Callable[[type, object], object],
    prefix: str,
    dropped: set[str],
) -> tuple[Any, list[str]]:
    """Decode one table, reporting every bad key, not just the first msgspec meets.

    msgspec stops at the first error; so an unknown or invalid key is reported, left out, and
    the rest decoded again, until it decodes or a required key is missing. The result is None
    when the table could not be built at all; `dropped` collects the paths left out, so the
    rules spanning sections do not report them a second time ("needs the HMAC key file").
    """
    problems: list[str] = []
    if isinstance(value, dict):
        remaining = dict(value)
        names = {field.encode_name for field in msgspec.structs.fields(type_)}
        for key in [k for k in remaining if k not in names]:
            problems.append(f"{prefix}.{key}: unknown key (check the spelling)")
            del remaining[key]
        attempts = len(remaining) + 1
    else:
        remaining, attempts = value, 1  # type: ignore[assignment]  # msgspec names the type
    for _ in range(attempts):
        try:
            return msgspec.convert(remaining, type_, dec_hook=hook), problems
        except msgspec.ValidationError as exc:
            problems.append(_problem(prefix, exc))
            key = _first_key(exc)
            if not isinstance(remaining, dict) or key not in remaining:
                return None, problems
            del remaining[key]
            dropped.add(f"{prefix}.{key}")
        except RecursionError:
            problems.append(f"{prefix}: nested too deeply")
            return None, problems
    return None, problems


def _first_key(error: msgspec.ValidationError) -> str | None:
    match = _MSGSPEC_PATH.match(str(error))
    path = (match["path"] if match else None) or ""
    key = re.match(r"\.([^.\[]+)", path)
    return key[1] if key else None


def parse_config(
    text: str,
    *,
    source: str = "<memory>",
    config_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Decode and validate TOML text; raise `ConfigError` listing every problem found.

    All problems come in one run: unknown keys, bad values and the rules spanning sections
    (names, references, countries) alike, so an operator fixes a file once, not in rounds.
    """
    environ = os.environ if environ is None else environ
    raw = _read_toml(text, source)
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    resolver = _SecretResolver(config_dir or Path.cwd(), Path(credentials) if credentials else None)
    hook = _decode_hook(resolver)
    problems: list[str] = []
    sections: dict[str, Any] = {}
    # Where each decoded list entry stood in the file, so a later message names the right
    # index even when an earlier entry could not be decoded at all.
    indexes: dict[str, list[int]] = {}
    unbuilt_names: dict[str, set[str]] = {}
    dropped: set[str] = set()
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
            indexes[key] = []
            for index, item in enumerate(value):
                entry, found = _decode_table(item, section_type, hook, f"{key}[{index}]", dropped)
                problems.extend(found)
                if entry is not None:
                    entries.append(entry)
                    indexes[key].append(index)
                elif isinstance(item, dict) and isinstance(item.get("name"), str):
                    unbuilt_names.setdefault(key, set()).add(item["name"])
            sections[key] = tuple(entries)
        else:
            entry, found = _decode_table(value, section_type, hook, key, dropped)
            problems.extend(found)
            if entry is not None:
                sections[key] = entry
    if "daemon" in sections and config_dir is not None:
        # Relative paths in [daemon] mean "next to the config file", whatever the cwd is.
        daemon = sections["daemon"]
        sections["daemon"] = msgspec.structs.replace(
            daemon,
            data_dir=str(config_dir / daemon.data_dir),
            pid_file=str(config_dir / daemon.pid_file) if daemon.pid_file else None,
        )
    if "notify" in sections and config_dir is not None:
        # Like the data dir: relative paths mean "next to the config file".
        notify = sections["notify"]
        sections["notify"] = msgspec.structs.replace(
            notify,
            template_dir=str(config_dir / notify.template_dir) if notify.template_dir else None,
            ca_file=str(config_dir / notify.ca_file) if notify.ca_file else None,
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
    for problem in _check_references(config, indexes, unbuilt_names.get("location", set())):
        path = problem.split(":", 1)[0]
        if not any(path == d or path.startswith((f"{d}.", f"{d}[")) for d in dropped):
            problems.append(problem)
    problems.extend(_document_logo_problems(config.documents, config_dir) if config_dir else [])
    if problems:
        raise ConfigError(source, problems)
    return config


_MAX_LOGO_BYTES = 2 * 1024 * 1024


def _document_logo_problems(documents: DocumentsConfig, config_dir: Path) -> list[str]:
    """Each logo of `[documents]` and its templates is a readable PNG, checked when the file
    is loaded, so a reload naming a missing logo is refused rather than failing every
    invoice issued after it."""
    logos = [("documents.logo", documents.logo)] + [
        (f"documents.template[{index}].logo", template.logo)
        for index, template in enumerate(documents.template)
    ]
    problems: list[str] = []
    for key, logo in logos:
        if not logo:
            continue
        path = config_dir / logo
        try:
            with path.open("rb") as handle:
                head = handle.read(8)
                size = os.fstat(handle.fileno()).st_size
        except OSError as exc:
            problems.append(f"{key}: cannot read {path}: {exc.strerror}")
            continue
        if head != b"\x89PNG\r\n\x1a\n":
            problems.append(f"{key}: {path} is not a PNG")
        elif size > _MAX_LOGO_BYTES:
            problems.append(f"{key}: {path} is larger than 2 MiB")
    return problems


def raw_data_dir(path: Path) -> str:
    """`daemon.data_dir` as the file says it (resolved like `load_config` does), even when the
    rest of the file is invalid; the default when it cannot be read."""
    default = DaemonConfig().data_dir
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError, MemoryError):
        return default
    value = (
        raw.get("daemon", {}).get("data_dir", default)
        if isinstance(raw.get("daemon"), dict)
        else default
    )
    if not isinstance(value, str):
        return default
    return str(path.resolve().parent / value)


def data_dir_problem(config: Config) -> str | None:
    """Why somsd could not write its data dir, with the fix; None when it can.

    A missing dir is fine when the nearest existing parent is writable (somsd creates it).
    """
    path = Path(config.daemon.data_dir)
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f'daemon.data_dir: "{probe}" is not a directory; point data_dir at a directory'
    if not os.access(probe, os.W_OK | os.X_OK):
        return (
            f'daemon.data_dir: "{probe}" is not writable by this user (uid {os.getuid()}); '
            f'fix it with: chown somsd: "{probe}" (or set data_dir to a writable directory)'
        )
    return None


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


def _channel_sync_problems(
    index: int, channel: ChannelConfig, custom: Sequence[StatusConfig]
) -> list[str]:
    """The smartstore channel keys: known names and targets in the maps, sane numbers."""
    problems: list[str] = []
    known_statuses = set(STANDARD_TRANSITIONS) | {"on-hold", "closed"}
    known_statuses |= {status.name for status in custom}
    for name in channel.status_map:
        if name not in known_statuses:
            problems.append(
                f'channel[{index}].status_map."{name}": no such status; use a standard '
                "status or a [[status]] name"
            )
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


def _pickup_store_problems(
    index: int, channel: ChannelConfig, locations: Sequence[LocationConfig]
) -> list[str]:
    """Every store a shop pickup method maps to exists and hands orders over."""
    pickup_stores = {loc.name for loc in locations if "pickup" in loc.capabilities}
    named = [
        (f'pickup_locations."{method}"', store)
        for method, store in channel.pickup_locations.items()
    ]
    if channel.default_pickup_location is not None:
        named.append(("default_pickup_location", channel.default_pickup_location))
    return [
        f'channel[{index}].{key}: "{store}" is not a location with capabilities = ["pickup"]'
        + (f"; pickup stores: {', '.join(sorted(pickup_stores))}" if pickup_stores else "")
        for key, store in named
        if store not in pickup_stores
    ]


def _check_references(
    config: Config,
    indexes: Mapping[str, list[int]] | None = None,
    unbuilt_locations: set[str] | frozenset[str] = frozenset(),
) -> list[str]:
    """Rules that span sections: unique names, known locations, required keys per kind.

    `indexes` maps each list section to the file position of each decoded entry (missing: they
    are all there); `unbuilt_locations` are names of locations that failed to decode, so a
    channel naming one is not reported a second time.
    """
    problems: list[str] = []

    def indexed(kind: str) -> list[tuple[int, Any]]:
        entries = getattr(config, kind)
        positions = (indexes or {}).get(kind) or list(range(len(entries)))
        return list(zip(positions, entries, strict=True))

    for kind in ("channel", "location", "carrier", "erp", "status"):
        seen: set[str] = set()
        for index, entry in indexed(kind):
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", entry.name):
                problems.append(
                    f'{kind}[{index}].name: "{entry.name[:80]}" must be lower-case letters, '
                    "digits, '-' or '_' (it appears in URLs and metric labels)"
                )
            if entry.name in seen:
                problems.append(f'{kind}[{index}].name: "{entry.name}" is used twice')
            seen.add(entry.name)
    locations = {loc.name for loc in config.location} | set(unbuilt_locations)
    for index, channel in indexed("channel"):
        for j, name in enumerate(channel.locations):
            if name not in locations:
                problems.append(f'channel[{index}].locations[{j}]: unknown location "{name}"')
        if channel.kind == "webhook" and channel.secret_file is None:
            problems.append(
                f"channel[{index}].secret_file: a webhook channel needs the HMAC key file"
            )
        problems.extend(_edifact_problems(index, channel))
        if channel.kind == "smartstore":
            for key in ("url", "public_key", "secret_key_file"):
                if getattr(channel, key) is None:
                    problems.append(f"channel[{index}].{key}: required for kind smartstore")
        if channel.poll_interval.seconds <= 0:
            problems.append(f"channel[{index}].poll_interval: must be longer than 0s")
        problems.extend(_channel_sync_problems(index, channel, config.status))
        problems.extend(_pickup_store_problems(index, channel, config.location))
    for index, location in indexed("location"):
        if (location.lat is None) != (location.lon is None):
            missing = "lat" if location.lat is None else "lon"
            problems.append(f"location[{index}].{missing}: give both lat and lon, or neither")
        if location.adapter == "rest" and location.url is None:
            problems.append(f"location[{index}].url: required for adapter rest")
        if location.adapter == "csv":
            for key in ("outbound_dir", "inbound_dir"):
                if getattr(location, key) is None:
                    problems.append(f"location[{index}].{key}: required for adapter csv")
        if location.poll_interval.seconds <= 0:
            problems.append(f"location[{index}].poll_interval: must be longer than 0s")
        problems.extend(_country_problems(f"location[{index}]", location))
    problems.extend(
        _shipping_problems(indexed("location"), config.carrier)
        + _carrier_problems(indexed("carrier"))
        + _erp_problems(indexed("erp"))
        + _selectline_location_problems(indexed("location"), config.erp)
        + _attachment_problems(indexed("erp"), documents=config.documents.enabled)
    )
    problems.extend(_setting_problems(config))
    problems.extend(_supplier_inbox_problems(config.supplier_inbox, config.erp))
    problems.extend(str(p) for p in status_config_problems(config.custom_statuses()))
    problems.extend(_notify_problems(config.notify, config) if config.notify else [])
    if config.store.backend == "postgres" and config.store.dsn_file is None:
        problems.append('store.dsn_file: required for backend "postgres"')
    problems.extend(_cluster_problems(config.cluster, config.store) if config.cluster else [])
    return problems


def _cluster_problems(cluster: ClusterConfig, store: StoreConfig) -> list[str]:
    problems = _cluster_store_problems(cluster, store)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", cluster.member):
        problems.append(
            f'cluster.member: "{cluster.member[:80]}" is not a member name; use letters, '
            "digits, '.', '_' and '-', at most 64"
        )
    url = cluster.advertise_url
    if url is not None and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url):
        problems.append(
            f'cluster.advertise_url: "{url[:80]}" is not an http(s) URL such as '
            '"http://somsd-1.example:8470"'
        )
    ttl, renew = cluster.lease_ttl.seconds, cluster.renew_every.seconds
    if not 1 <= ttl <= 600:
        problems.append("cluster.lease_ttl: between 1s and 10m")
    if not 0 < renew < ttl * (1 - DEFAULT_DRIFT):
        # A lease renewed no sooner than it lapses is lost at every renewal; a third is usual.
        problems.append("cluster.renew_every: must be above 0s and below cluster.lease_ttl")
    return problems


def _cluster_store_problems(cluster: ClusterConfig, store: StoreConfig) -> list[str]:
    """The members share one event log: the store's PostgreSQL database, which is also where
    the leases fence the outbox claims (`somsd.cluster.outbox`), so both DSNs name it."""
    if store.backend != "postgres":
        return [
            'cluster: needs [store] backend = "postgres" (the members share one event log in '
            "the cluster's database; with SQLite each daemon would keep orders of its own)"
        ]
    if store.dsn_file is None:
        return []  # reported as store.dsn_file
    try:
        leases = database_address(cluster.dsn_file.secret.reveal())
    except InvalidDsn as exc:
        return [f"cluster.dsn_file: {exc}"]
    try:
        events = database_address(store.dsn_file.secret.reveal())
    except InvalidDsn as exc:
        return [f"store.dsn_file: {exc}"]
    if leases.same_database(events):
        return []
    return [
        f"cluster.dsn_file: names database {leases}, but store.dsn_file names {events}; "
        "[cluster] and [store] must use the same PostgreSQL database"
    ]


def _supplier_inbox_problems(
    inboxes: Sequence[SupplierInboxConfig], erps: Sequence[ErpConfig]
) -> list[str]:
    """Inbox names as in the other list sections; supplier numbers unique per inbox; the ERP
    named is a SelectLine section; the DATEV cutoff is a time of day."""
    problems: list[str] = []
    selectline = {erp.name for erp in erps if erp.kind == "selectline"}
    names: set[str] = set()
    for index, inbox in enumerate(inboxes):
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", inbox.name):
            problems.append(
                f'supplier_inbox[{index}].name: "{inbox.name[:80]}" must be lower-case letters, '
                "digits, - or _"
            )
        if inbox.name in names:
            problems.append(f'supplier_inbox[{index}].name: "{inbox.name}" is used twice')
        names.add(inbox.name)
        numbers: set[str] = set()
        for position, supplier in enumerate(inbox.supplier):
            if supplier.number in numbers:
                problems.append(
                    f"supplier_inbox[{index}].supplier[{position}].number: "
                    f'"{supplier.number}" is used twice'
                )
            numbers.add(supplier.number)
        if inbox.erp and inbox.erp not in selectline:
            problems.append(
                f'supplier_inbox[{index}].erp: "{inbox.erp[:80]}" names no [[erp]] section of '
                'kind "selectline"'
            )
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?", inbox.datev_cutoff):
            problems.append(
                f'supplier_inbox[{index}].datev_cutoff: "{inbox.datev_cutoff[:20]}" is not a '
                'time of day "HH:MM" or "HH:MM:SS"'
            )
    return problems


def _setting_problems(config: Config) -> list[str]:
    """The single-table sections' own rules: routing, body limit, time zone, hold limits."""
    problems: list[str] = []
    documents = config.documents
    if documents.public_url is not None:
        if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", documents.public_url):
            problems.append(
                f'documents.public_url: "{documents.public_url[:80]}" is not an http(s) URL'
            )
        if documents.link_key_file is None:
            problems.append("documents.link_key_file: required with documents.public_url")
    if documents.link_valid_for.seconds < 3600:
        problems.append("documents.link_valid_for: at least 1h")
    weights = config.routing.weights
    for name in weights.__struct_fields__:
        if getattr(weights, name) < 0:
            problems.append(f"routing.weights.{name}: must not be negative")
    if config.routing.max_locations < 1:
        problems.append("routing.max_locations: must be at least 1")
    if config.api.max_body_bytes < MIN_BODY_BYTES:
        problems.append("api.max_body_bytes: must be at least 1024")
    try:
        zoneinfo.ZoneInfo(config.invoicing.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(
            f'invoicing.timezone: unknown time zone "{config.invoicing.timezone[:80]}"; '
            'write an IANA name such as "Europe/Berlin"'
        )
    for currency, limit in config.holds.unpaid_limits.items():
        if not limit.is_finite() or limit > MAX_MONEY_LIMIT:
            problems.append(f"holds.unpaid_limits.{currency}: must be at most {MAX_MONEY_LIMIT}")
        elif limit < 0:
            problems.append(f"holds.unpaid_limits.{currency}: must not be negative")
    return problems


def _erp_problems(erps: Sequence[tuple[int, ErpConfig]]) -> list[str]:
    """A SelectLine ERP needs its API's address and the password of the user somsd logs in as."""
    return [
        f"erp[{index}].{key}: required for kind selectline"
        for index, erp in erps
        if erp.kind == "selectline"
        for key in ("url", "password_file")
        if getattr(erp, key) is None
    ]


def selectline_erp_of(location: LocationConfig, erps: Sequence[ErpConfig]) -> ErpConfig | None:
    """The SelectLine [[erp]] an `adapter = "selectline"` location ships through."""
    found = [e for e in erps if e.kind == "selectline" and location.erp in (None, e.name)]
    return found[0] if len(found) == 1 else None


def _selectline_location_problems(
    locations: Sequence[tuple[int, LocationConfig]], erps: Sequence[ErpConfig]
) -> list[str]:
    """Its delivery notes follow the ERP's sales orders, so that ERP must post them."""
    problems: list[str] = []
    for index, location in locations:
        if location.adapter != "selectline":
            continue
        erp = selectline_erp_of(location, erps)
        if erp is None:
            wanted = repr(location.erp) if location.erp else "exactly one"
            problems.append(
                f"location[{index}].erp: adapter selectline needs {wanted} [[erp]] of kind "
                "selectline"
            )
        elif not erp.post_invoices:
            problems.append(
                f"location[{index}].erp: erp {erp.name!r} must have post_invoices = true: "
                "the delivery notes are successors of its sales orders"
            )
    return problems


def _attachment_problems(erps: Sequence[tuple[int, ErpConfig]], *, documents: bool) -> list[str]:
    """Archived PDFs hang on the documents somsd posts, and somsd must render them."""
    problems: list[str] = []
    for index, erp in erps:
        if not erp.attach_documents:
            continue
        if erp.kind != "selectline" or not erp.post_invoices:
            problems.append(
                f"erp[{index}].attach_documents: needs kind selectline with post_invoices = true"
            )
        if not documents:
            problems.append(f"erp[{index}].attach_documents: needs [documents] enabled = true")
    return problems


def _carrier_problems(carriers: Sequence[tuple[int, CarrierConfig]]) -> list[str]:
    problems: list[str] = []
    for index, carrier in carriers:
        if carrier.kind == "own-fleet":
            continue  # no upstream: somsd draws the labels itself
        for key in ("api_key_file", "user", "password_file"):
            if getattr(carrier, key) is None:
                problems.append(f"carrier[{index}].{key}: required for kind {carrier.kind}")
        if carrier.auth == "oauth" and carrier.client_secret_file is None:
            problems.append(f"carrier[{index}].client_secret_file: required for auth oauth")
        if carrier.tracking_interval.seconds < 1:
            problems.append(f"carrier[{index}].tracking_interval: at least 1s")
    return problems


def _shipping_problems(
    locations: Sequence[tuple[int, LocationConfig]], carriers: Sequence[CarrierConfig]
) -> list[str]:
    problems: list[str] = []
    for index, location in locations:
        problems.extend(_location_shipping_problems(index, location, carriers))
    return problems


def _location_shipping_problems(
    index: int, location: LocationConfig, carriers: Sequence[CarrierConfig]
) -> list[str]:
    """A location that ships with a carrier needs a sender and the product's billing number."""
    prefix = f"location[{index}]"
    problems: list[str] = []
    known = {carrier.name for carrier in carriers}
    for j, name in enumerate(location.carriers):
        if name not in known:
            problems.append(f'{prefix}.carriers[{j}]: unknown carrier "{name}"')
    if location.carriers:
        if location.sender is None:
            problems.append(f"{prefix}.sender: required when the location has carriers")
        billed = any(c.kind != "own-fleet" for c in carriers if c.name in location.carriers)
        if billed and location.product not in location.billing_numbers:
            problems.append(
                f"{prefix}.billing_numbers: no billing number for product {location.product}"
            )
    for product, number in location.billing_numbers.items():
        if not re.fullmatch(r"\w{10}\d{2}\w{2}", number):
            problems.append(
                f'{prefix}.billing_numbers.{product}: "{number[:20]}" is not a 14-character '
                "billing number"
            )
    if location.label_printer is not None:
        if not re.fullmatch(
            r"tcp://(\[[0-9a-fA-F:.]+\]|[^:/\[\]]+)(:\d{1,5})?/?", location.label_printer
        ):
            problems.append(
                f'{prefix}.label_printer: "{location.label_printer[:80]}" is not a printer '
                'address; write "tcp://host:9100"'
            )
        if location.label_format != "zpl":
            problems.append(f'{prefix}.label_printer: a raw printer needs label_format = "zpl"')
    return problems


def _notify_problems(notify: NotifyConfig, config: Config) -> list[str]:
    """Addresses parse, links carry their placeholder, channels are known."""
    from email.headerregistry import Address
    from email.utils import getaddresses

    def bad_address(value: str) -> bool:
        if any(c in value for c in "\r\n"):
            return True
        found = getaddresses([value])
        if len(found) != 1 or "@" not in found[0][1]:
            return True
        try:
            Address(display_name=found[0][0], addr_spec=found[0][1])
        except (ValueError, IndexError):
            return True
        return False

    problems: list[str] = []
    addresses = [("notify.sender", notify.sender)]
    if notify.reply_to is not None:
        addresses.append(("notify.reply_to", notify.reply_to))
    addresses += [(f"notify.bcc[{i}]", bcc) for i, bcc in enumerate(notify.bcc)]
    channels = {channel.name for channel in config.channel}
    for i, channel in enumerate(notify.channel):
        if channel.name not in channels:
            problems.append(f'notify.channel[{i}].name: unknown channel "{channel.name[:80]}"')
        for key in ("sender", "reply_to"):
            value = getattr(channel, key)
            if value is not None:
                addresses.append((f"notify.channel[{i}].{key}", value))
    for path, value in addresses:
        if bad_address(value):
            shown = value[:80].encode("unicode_escape").decode()
            problems.append(
                f'{path}: "{shown}" is not one e-mail address; write '
                '"Shop <shop@example.com>" or "shop@example.com"'
            )
    for carrier, url in notify.tracking_urls.items():
        if "{tracking_number}" not in url:
            problems.append(
                f"notify.tracking_urls.{carrier}: needs the placeholder {{tracking_number}}"
            )
    for country in notify.languages:
        if not is_country_code(country):
            problems.append(
                f"notify.languages.{country[:40]}: not an ISO 3166-1 alpha-2 country code; "
                'write e.g. "AT"'
            )
    if (notify.user is None) != (notify.password_file is None):
        missing = "user" if notify.user is None else "password_file"
        problems.append(f"notify.{missing}: give both user and password_file, or neither")
    return problems


def _edifact_problems(index: int, channel: ChannelConfig) -> list[str]:
    if channel.kind != "edifact":
        return []
    return [
        f"channel[{index}].{key}: required for kind edifact"
        for key in ("folder", "gln")
        if getattr(channel, key) is None
    ]


def _country_problems(prefix: str, location: LocationConfig) -> list[str]:
    """Countries are ISO 3166-1 alpha-2 codes: "Germany" or "de" would match no address."""
    found: list[tuple[str, str]] = [(f"{prefix}.country", location.country)]
    found += [(f"{prefix}.ships_to[{i}]", c) for i, c in enumerate(location.ships_to)]
    if location.address is not None:
        found.append((f"{prefix}.address.country", location.address.country))
    if location.sender is not None:
        found.append((f"{prefix}.sender.country", location.sender.country))
    for r, rate in enumerate(location.rates):
        found += [(f"{prefix}.rates[{r}].countries[{i}]", c) for i, c in enumerate(rate.countries)]
    return [
        f'{path}: "{code[:40]}" is not an ISO 3166-1 alpha-2 country code; write e.g. "DE"'
        for path, code in found
        if not is_country_code(code)
    ]

"""The composition root behind `somsd run`: config in, supervision tree up, signals handled.

This is the one kernel module that imports `actors/` (see architecture.md). The tree:

    root (rest_for_one: a later child depends on the earlier ones)
    ├── store           the event log's single writer
    ├── core            order desk, inventory, router, ... (one_for_one)
    ├── integrations    channel/NAME, location/NAME, carrier/NAME, erp/NAME (one_for_one)
    └── edge            api and metrics listeners (one_for_one)

Reload (SIGHUP, `somsd reload`, `POST /v1/admin/reload`) validates the whole new file first; an
invalid one changes nothing. A valid one is diffed section by section against the running one and
only integration actors whose section changed are replaced. Bursts of requests coalesce: while a
reload runs, any number of new requests cause exactly one more.

Shutdown (SIGTERM, SIGINT): `STOPPING=1`, new requests get 503, then the tree stops in reverse
order, so listeners finish in-flight requests before the actors they call stop, and the store
commits what is queued last of all.
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import socket
import sys
import time
import zoneinfo
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec
import structlog
import trio
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

import actors.smartstore_driver  # noqa: F401  # registers the smartstore channel driver
from actors.carrier import (
    CarrierActor,
    CarrierMetrics,
    CarrierRoutes,
    carrier_fulfilment_effects,
    carrier_order_effects,
)
from actors.channel import (
    DRIVERS,
    ChannelActor,
    ChannelMetrics,
    ChannelRoutes,
    fulfilment_effects_for,
    order_effects_for,
)
from actors.documents import (
    DocumentActor,
    DocumentReader,
    DocumentRoutes,
    document_effects,
    legacy_documents,
    seller_for,
)
from actors.edifact_channel import EdifactChannelActor, EdifactMetrics, edifact_effects_for
from actors.effects import all_fulfilment_effects, all_order_effects
from actors.erp import ErpMetrics, SelectLineErp, SessionUse, erp_order_effects_for
from actors.fulfilment import FulfilmentDesk
from actors.fulfilment_api import FulfilmentRoutes
from actors.integration import Describe, IntegrationActor, IntegrationStatus
from actors.inventory import Inventory, channel_stock_policies, debounce_policy, safety_stock
from actors.inventory_api import InventoryRoutes
from actors.lease_keeper import (
    CORE_CATCH_UP_EVERY,
    ROUTING_DUTY,
    cluster_routes,
    gate,
    lease_keeper_for,
    leased,
    leased_children,
    runs_here,
)
from actors.location import LocationActor, LocationRoutes
from actors.mailer import (
    Mailer,
    document_attachments,
    fulfilment_mail_effects,
    order_mail_effects,
)
from actors.order_api import OrderRoutes
from actors.order_desk import OrderDesk
from actors.outbox import OutboxDispatcher
from actors.outbox_api import DeadLetterRoutes
from actors.outbox_claims import leased_outbox_for
from actors.owned_elsewhere import advertised_api_url, owner_gated
from actors.router import Router
from actors.supplier_invoices import SupplierInvoiceActor
from actors.supplier_invoices_api import SupplierInvoiceRoutes
from actors.supplier_invoices_erp import SupplierInvoicePoster
from actors.supplier_invoices_purchasing import ErpPurchasing
from actors.supplier_invoices_trail import InvoiceTrails
from somsd import __version__
from somsd.actor import Reply
from somsd.api import ApiRoute, ApiState, build_api_app, json_response
from somsd.backlog_metrics import BacklogMetrics, count_backlog
from somsd.cluster.sets import check_reload, join_cluster
from somsd.config import (
    CarrierConfig,
    ChannelConfig,
    Config,
    ConfigError,
    ErpConfig,
    LocationConfig,
    data_dir_problem,
    load_config,
    selectline_erp_of,
)
from somsd.console import ConsoleDeps, build_console, with_console
from somsd.console.session import SessionKeeper
from somsd.documents.model import Seller
from somsd.domain.holds import HoldRules
from somsd.domain.policy import InvoicingPolicy, OrderPolicy
from somsd.domain.status import build_status_machine
from somsd.errors import unwrap_exception_group
from somsd.http import HttpListener, ListenError, bind_listener
from somsd.logs import configure_logging, register_secret_values, set_level
from somsd.metrics import KernelMetrics, build_metrics_app
from somsd.notify import Notifier
from somsd.projections import all_projections
from somsd.secrets import Secret
from somsd.store import Connection, EventStore
from somsd.supervisor import ChildSpec, Strategy, Supervisor

__all__ = ["Daemon", "ReloadResult", "run_daemon"]

if TYPE_CHECKING:
    from adapters.selectline.client import SelectLineClient

log = structlog.get_logger("somsd.daemon")

DATABASE_FILE = "somsd.db"
LOCK_FILE = "somsd.lock"


class ReloadResult(msgspec.Struct, frozen=True):
    applied: bool
    changed: tuple[str, ...] = ()  # actor or section names whose config changed
    problems: tuple[str, ...] = ()  # why the new config was rejected


def event_store_for(config: Config, *, registry: CollectorRegistry) -> EventStore:
    """The event store `[store]` names: the SQLite file in the data dir, or PostgreSQL."""
    if config.store.backend == "postgres":
        # Imported only here: a SQLite daemon never loads psycopg.
        from somsd.store.postgres import PostgresEventStore

        assert config.store.dsn_file is not None  # check_config requires it
        return PostgresEventStore(
            config.store.dsn_file.secret, all_projections(), registry=registry
        )
    return EventStore(
        Path(config.daemon.data_dir) / DATABASE_FILE, all_projections(), registry=registry
    )


def _head_seq(conn: Connection) -> int:
    """The event log's last seq (0 when empty): where live updates start."""
    row = conn.execute("SELECT max(seq) FROM events").fetchone()
    return int(row[0] or 0)


def _driver_label(driver: object) -> str | None:
    """What talks to the system, as text: a polled channel's actor holds its driver object."""
    if driver is None or isinstance(driver, str):
        return driver
    return type(driver).__name__


class ActorReport(msgspec.Struct, frozen=True):
    name: str
    supervisor: str
    state: str
    restarts: int
    incarnation: int
    started_at: datetime | None  # RFC 3339, UTC, like every other time in the API
    mailbox_depth: int | None = None
    kind: str | None = None
    handled: int | None = None
    driver: str | None = None  # integration sections: what talks to the system
    no_driver: bool = False  # an integration section nothing exchanges data with yet


class ActorsReport(msgspec.Struct, frozen=True):
    ready: bool
    config_loaded_at: datetime
    actors: tuple[ActorReport, ...]


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


class Daemon:
    def __init__(
        self, config_path: Path, config: Config, *, environ: Mapping[str, str] | None = None
    ) -> None:
        self.config_path = config_path
        self.config = config
        self.environ = os.environ if environ is None else environ
        self.config_loaded_at = time.time()
        self.metrics = KernelMetrics()
        self.notifier = Notifier.from_environ(self.environ)
        self.store = event_store_for(config, registry=self.metrics.registry)
        registry = self.metrics.registry
        self.desk = OrderDesk(self.store, order_policy(config), registry=registry)
        self.inventory = Inventory(
            self.store,
            safety=safety_stock(config.location),
            channels=channel_stock_policies(config.channel),
            debounce=debounce_policy(config.inventory),
            registry=registry,
            shared=config.cluster is not None,
        )
        self.fulfilments = FulfilmentDesk(
            self.store, self.inventory, self.desk, config=config, registry=registry
        )
        self.router = Router(
            self.store,
            self.inventory,
            self.fulfilments,
            config=config,
            registry=registry,
            catch_up_every=CORE_CATCH_UP_EVERY if config.cluster is not None else None,
        )
        self.dispatcher = OutboxDispatcher(self.store, registry=registry)
        # [cluster]: singleton duties run only while this daemon holds their lease (else None).
        self.lease_keeper = lease_keeper_for(config.cluster, registry)
        # ... and on PostgreSQL each outbox target is claimed and settled under its duty's lease.
        self.dispatcher.claims = leased_outbox_for(self.lease_keeper, config)
        self._wire_routing()
        # Each system that reacts to a change plans its own outbox items; one line per system.
        self.desk.effects = all_order_effects(
            order_effects_for(self._channels),
            erp_order_effects_for(lambda: self.config.erp),
            carrier_order_effects(lambda: self.config.carrier, lambda: self.config.location),
            order_mail_effects(lambda: self.config.notify),
            document_effects(lambda: self.config.documents.enabled),
            edifact_effects_for(self._channels),
        )
        self.fulfilments.effects = all_fulfilment_effects(
            fulfilment_effects_for(self.store, self._channels),
            carrier_fulfilment_effects(lambda: self.config.location),
            fulfilment_mail_effects(self.store, lambda: self.config.notify),
        )
        self.mailer = Mailer(
            self.store, self.dispatcher, config=lambda: self.config, registry=registry
        )
        self.channel_metrics = ChannelMetrics(registry)
        self.erp_metrics = ErpMetrics(registry)
        self.carrier_metrics = CarrierMetrics(registry)
        self.edifact_metrics = EdifactMetrics(registry)
        self.core_actors = (self.desk, self.inventory, self.fulfilments, self.router)
        for actor in self.core_actors:
            self.metrics.track_mailbox(actor.name, actor.mailbox)
        self.order_routes = OrderRoutes(
            self.desk,
            self.store,
            channels=self._channels,
            max_body_bytes=lambda: self.config.api.max_body_bytes,
            registry=self.metrics.registry,
        )
        self.metrics.track_mailbox("store", self.store.mailbox)
        self.metrics.on_scrape(self._refresh_outbox_gauges)
        self.backlog_metrics = BacklogMetrics(registry)
        self.console_sessions = SessionKeeper()  # outlives listener restarts on reload
        self.metrics.on_scrape(self._refresh_backlog_gauges)
        self.integration_actors: dict[
            str, IntegrationActor | LocationActor | ChannelActor | CarrierActor
        ] = {}
        # Documents: rendered off the hot path by their own actor, when [documents] is on.
        self.document_reader = DocumentReader(self.store, legacy_documents(config))
        # The document actor exists once [documents] is on (at start or a reload).
        self.mailer.attachments = document_attachments(
            self.document_reader, lambda: self.documents is not None
        )
        self.documents = (
            DocumentActor(config, store=self.store, dispatcher=self.dispatcher, registry=registry)
            if config.documents.enabled
            else None
        )
        # Supplier invoices: their own actor when any [[supplier_inbox]] was configured at start.
        self.supplier_invoices = (
            SupplierInvoiceActor(
                lambda: self.config,
                store=self.store,
                dispatcher=self.dispatcher,
                registry=registry,
                data_dir=Path(config.daemon.data_dir),
                purchasing=self.erp_purchasing,
            )
            if config.supplier_inbox
            else None
        )
        self.core = Supervisor(
            "core",
            leased_children(
                self.lease_keeper,
                [
                    ChildSpec(actor.name, actor.run)
                    for actor in (*self.core_actors, self.dispatcher, self.mailer)
                ]
                + ([ChildSpec(self.documents.name, self.documents.run)] if self.documents else [])
                + (
                    [ChildSpec(self.supplier_invoices.name, self.supplier_invoices.run)]
                    if self.supplier_invoices
                    else []
                ),
            ),
            metrics=self.metrics,
        )
        self.integrations = Supervisor(
            "integrations",
            [self._integration_spec(name, s) for name, s in config.integrations().items()],
            metrics=self.metrics,
        )
        self.api_state = ApiState(
            is_ready=self.is_ready,
            admin_tokens=self._admin_tokens,
            not_ready_reason=self.not_ready_reason,
            readiness_notes=self.readiness_notes,
        )
        self.listeners = {
            "api": self._listener("api"),
            "metrics": self._listener("metrics"),
        }
        if self.lease_keeper is not None and config.cluster is not None:
            cluster = config.cluster  # cannot change while running (`_load_reloadable`)
            api = self.listeners
            self.lease_keeper.api_url = lambda: advertised_api_url(cluster, api["api"].urls)
        self.edge = Supervisor(
            "edge",
            [self._listener_spec(lis) for lis in self.listeners.values()],
            metrics=self.metrics,
        )
        self.root = Supervisor(
            "root",
            [
                ChildSpec("store", self.store.run),
                ChildSpec("core", self.core.run, stop=self.core.stop),
                ChildSpec("integrations", self.integrations.run, stop=self.integrations.stop),
                ChildSpec("edge", self.edge.run, stop=self.edge.stop),
            ],
            strategy=Strategy.REST_FOR_ONE,
            metrics=self.metrics,
        )
        self._reload_wanted = trio.Event()
        self._reload_waiters: list[Reply[ReloadResult]] = []
        self._shutdown_wanted = trio.Event()

    # -- wiring -------------------------------------------------------------------------

    def _wire_routing(self) -> None:
        """The router's nudges. The hooks only queue work for the router (see its docstring);
        with [cluster] only the routing holder runs it, and polls what the others commit."""
        keeper = self.lease_keeper
        router = self.router
        self.desk.on_committed = gate(keeper, ROUTING_DUTY, router.order_committed)
        self.fulfilments.on_lines_rejected = gate(keeper, ROUTING_DUTY, router.lines_rejected)
        self.inventory.on_stock_added = gate(keeper, ROUTING_DUTY, router.stock_added)
        if keeper is not None:
            inventory = self.inventory
            inventory.pushes_here = lambda: keeper.holds(ROUTING_DUTY)
            keeper.on_acquired(
                lambda duty: inventory.take_over_pushes() if duty == ROUTING_DUTY else None
            )

    def _integration_spec(self, name: str, section: msgspec.Struct) -> ChildSpec:
        actor: IntegrationActor | LocationActor | ChannelActor | CarrierActor
        if isinstance(section, CarrierConfig):
            actor = self._carrier_actor(section)
        elif isinstance(section, LocationConfig):
            actor = LocationActor(
                section,
                store=self.store,
                dispatcher=self.dispatcher,
                sink=self.fulfilments,
                erp=lambda: self._selectline_erp_of(section),
            )
        elif isinstance(section, ChannelConfig) and section.kind in DRIVERS:
            actor = ChannelActor(
                section,
                store=self.store,
                dispatcher=self.dispatcher,
                desk=self.desk,
                inventory=self.inventory,
                driver=DRIVERS[section.kind],
                metrics=self.channel_metrics,
            )
        elif isinstance(section, ErpConfig) and section.kind == "selectline":
            actor = self._selectline_erp(name, section)
        elif isinstance(section, ChannelConfig) and section.kind == "edifact":
            actor = EdifactChannelActor(
                section,
                store=self.store,
                dispatcher=self.dispatcher,
                desk=self.desk,
                metrics=self.edifact_metrics,
            )
        else:
            # Webhook shops are driven by the intake route; other kinds bring their own actor.
            webhook = isinstance(section, ChannelConfig) and section.kind == "webhook"
            actor = IntegrationActor(name, section, driver="webhook intake" if webhook else None)
        self.integration_actors[name] = actor
        self.metrics.track_mailbox(name, actor.mailbox)
        # Webhook shops' placeholders run everywhere (any daemon takes intake); the rest, once.
        lone = type(actor) is IntegrationActor
        return ChildSpec(name, actor.run if lone else leased(self.lease_keeper, name, actor.run))

    @functools.cached_property
    def erp_purchasing(self) -> ErpPurchasing:
        return ErpPurchasing(self.store)

    @functools.cached_property
    def supplier_invoice_poster(self) -> SupplierInvoicePoster:
        """Approved supplier invoices into SelectLine, through each SelectLine ERP's session."""
        return SupplierInvoicePoster(InvoiceTrails(self.store), self.metrics.registry)

    def _selectline_erp(self, name: str, section: ErpConfig) -> SelectLineErp:
        return SelectLineErp(
            name,
            section,
            store=self.store,
            dispatcher=self.dispatcher,
            desk=self.desk,
            sink=self.fulfilments,
            locations=lambda: self.config.location,
            metrics=self.erp_metrics,
            documents=self.document_reader,
            uses=self._selectline_session_use,
        )

    def _selectline_session_use(self, section: ErpConfig, client: SelectLineClient) -> SessionUse:
        """Supplier invoices through a SelectLine ERP's session: their `E` postings, and the
        purchase orders and goods receipts of the 3-way match."""
        return SessionUse(
            deliverers=self.supplier_invoice_poster.deliverers(section.name, client),
            periodic=self.erp_purchasing.periodic(section, client),
        )

    def _selectline_erp_of(self, location: LocationConfig) -> SelectLineErp | None:
        """The running ERP actor an `adapter = "selectline"` location ships through."""
        section = selectline_erp_of(location, self.config.erp)
        actor = None if section is None else self.integration_actors.get(f"erp/{section.name}")
        return actor if isinstance(actor, SelectLineErp) else None

    def _delivery_note_seller(self, channel: str) -> Seller | None:
        documents = self.config.documents
        if not documents.enabled:
            return None
        return seller_for(documents, channel, Path(self.config.source).parent)

    def _document_link_key(self) -> bytes | None:
        key_file = self.config.documents.link_key_file
        return None if key_file is None else key_file.secret.reveal().strip().encode()

    def _carrier_actor(self, section: CarrierConfig) -> CarrierActor:
        return CarrierActor(
            section,
            store=self.store,
            dispatcher=self.dispatcher,
            fulfilments=self.fulfilments,
            desk=self.desk,
            locations=lambda: self.config.location,
            data_dir=Path(self.config.daemon.data_dir),
            metrics=self.carrier_metrics,
        )

    def _listener(self, name: str) -> HttpListener:
        drain = self.config.daemon.drain_timeout.seconds
        if name == "api":
            routes = [
                *self.order_routes.routes(),
                *InventoryRoutes(
                    self.inventory,
                    locations=lambda: {location.name for location in self.config.location},
                    channels=lambda: channel_stock_policies(self.config.channel),
                    on_oversold=self.fulfilments.reroute_oversold,
                ).routes(),
                *FulfilmentRoutes(
                    self.fulfilments, self.store, seller=self._delivery_note_seller
                ).routes(),
                *DeadLetterRoutes(self.store, self.dispatcher).routes(),
                *LocationRoutes(self._location_actors).routes(),
                *ChannelRoutes(self._channel_actors).routes(),
                *CarrierRoutes(self.store, Path(self.config.daemon.data_dir)).routes(),
                *DocumentRoutes(self.document_reader, self._document_link_key).routes(),
                *SupplierInvoiceRoutes(lambda: self.supplier_invoices).routes(),
                *self._admin_routes(),
            ]
            # Work only a lease holder does is refused elsewhere with the owner named.
            routes = owner_gated(self.lease_keeper, routes)
            app = build_api_app(routes, self.api_state, version=__version__)
            app = with_console(app, build_console(self._console_deps(app), self.console_sessions))
            return HttpListener("api", app, self.config.api.listen, graceful_timeout=drain)
        app = build_metrics_app(self.metrics)
        return HttpListener("metrics", app, self.config.metrics.listen, graceful_timeout=drain)

    @staticmethod
    def _listener_spec(listener: HttpListener) -> ChildSpec:
        return ChildSpec(listener.name, listener.run, stop=listener.stop)

    def _location_actors(self) -> dict[str, LocationActor]:
        return {
            actor.section.name: actor
            for actor in self.integration_actors.values()
            if isinstance(actor, LocationActor)
        }

    def _channel_actors(self) -> dict[str, ChannelActor]:
        return {
            actor.section.name: actor
            for actor in self.integration_actors.values()
            if isinstance(actor, ChannelActor)
        }

    def _channels(self) -> dict[str, ChannelConfig]:
        return {channel.name: channel for channel in self.config.channel}

    def _admin_tokens(self) -> list[Secret]:
        token_file = self.config.api.token_file
        return token_file.lines() if token_file is not None else []

    def _admin_routes(self) -> list[ApiRoute]:
        async def reload(request: Request) -> Response:
            result = await self.request_reload().wait()
            return json_response(result, 200 if result.applied else 422)

        async def actors(request: Request) -> Response:
            return json_response(await self.actors_report())

        return [
            *cluster_routes(self.lease_keeper),
            ApiRoute(
                "/v1/admin/reload",
                "POST",
                reload,
                "Reload the config file; an invalid one is rejected and the old one kept",
                admin=True,
                responses={200: ReloadResult, 422: ReloadResult},
                tags=("admin",),
            ),
            ApiRoute(
                "/v1/admin/actors",
                "GET",
                actors,
                "Every actor with its state, restarts and mailbox depth",
                admin=True,
                responses={200: ActorsReport},
                tags=("admin",),
            ),
        ]

    async def _refresh_outbox_gauges(self) -> None:
        counts = await self.store.outbox_counts()
        self.metrics.set_outbox_counts(
            counts.pending, counts.dead, targets=self.dispatcher.status().targets
        )

    def _console_deps(self, api: ASGIApp) -> ConsoleDeps:
        async def outbox_counts() -> tuple[dict[str, int], dict[str, int]]:
            counts = await self.store.outbox_counts()
            return counts.pending, counts.dead

        def staff_tokens() -> dict[str, list[Secret]]:
            return {
                location.name: location.staff_token_file.lines()
                for location in self.config.location
                if location.staff_token_file is not None
            }

        async def events_after(after: int, limit: int) -> list[tuple[int, str, str, str]]:
            rows = await self.store.read_all(after_seq=after, limit=limit)
            return [(e.seq, e.stream, e.type, e.recorded_at.isoformat()) for e in rows]

        async def head_seq() -> int:
            return await self.store.read(_head_seq)

        def label_printers() -> dict[str, str]:
            return {
                location.name: location.label_printer
                for location in self.config.location
                if location.label_printer
            }

        return ConsoleDeps(
            api,
            self._admin_tokens,
            staff_tokens,
            outbox_counts,
            events_after,
            head_seq,
            label_printers=label_printers,
            channels=lambda: [channel.name for channel in self.config.channel],
        )

    async def _refresh_backlog_gauges(self) -> None:
        self.backlog_metrics.publish(await self.store.read(count_backlog))

    # -- queries ------------------------------------------------------------------------

    def is_ready(self) -> bool:
        if self.store.disk_full:
            return False
        return all(s.all_running for s in (self.root, self.core, self.integrations, self.edge))

    def not_ready_reason(self) -> str | None:
        if self.store.disk_full:
            return self.store.disk_full_reason
        return None

    async def actors_report(self) -> ActorsReport:
        reports: list[ActorReport] = []
        for sup in (self.root, self.core, self.integrations, self.edge):
            for child in sup.children():
                report = ActorReport(
                    child.name,
                    sup.name,
                    child.state,
                    child.restarts,
                    child.incarnation,
                    _utc(child.started_at),
                )
                actor = self.integration_actors.get(child.name)
                if actor is not None:
                    running = child.state == "running" and runs_here(self.lease_keeper, child.name)
                    status = await self._describe(actor) if running else None
                    report = msgspec.structs.replace(
                        report,
                        mailbox_depth=actor.mailbox.depth,
                        kind=actor.kind,
                        handled=status.handled if status else None,
                        driver=_driver_label(actor.driver),
                        no_driver=actor.driver is None,
                    )
                elif child.name == "store":
                    report = msgspec.structs.replace(report, mailbox_depth=self.store.mailbox.depth)
                elif child.name in self._core_mailboxes():
                    depth = self._core_mailboxes()[child.name]
                    report = msgspec.structs.replace(report, mailbox_depth=depth)
                reports.append(report)
        loaded_at = datetime.fromtimestamp(self.config_loaded_at, UTC)
        return ActorsReport(self.is_ready(), loaded_at, tuple(reports))

    def readiness_notes(self) -> list[str]:
        """What `/readyz` adds to its answer: sections that run without a driver."""
        return [
            f"{name}: no driver for kind {actor.kind!r}; nothing is exchanged with it"
            for name, actor in sorted(self.integration_actors.items())
            if actor.driver is None
        ]

    def _core_mailboxes(self) -> dict[str, int]:
        return {actor.name: actor.mailbox.depth for actor in self.core_actors}

    @staticmethod
    async def _describe(
        actor: IntegrationActor | LocationActor | ChannelActor | CarrierActor,
    ) -> IntegrationStatus | None:
        # A busy actor must not stall the admin view; one second is far above a healthy
        # actor's answer time (microseconds) and far below an operator's patience.
        with trio.move_on_after(1.0):
            return await actor.ask(Describe)
        return None

    # -- reload -------------------------------------------------------------------------

    def request_reload(self) -> Reply[ReloadResult]:
        """Ask for a reload; requests arriving while one runs share the next one."""
        reply: Reply[ReloadResult] = Reply()
        self._reload_waiters.append(reply)
        self._reload_wanted.set()
        return reply

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_wanted.wait()
            self._reload_wanted = trio.Event()
            waiters, self._reload_waiters = self._reload_waiters, []
            try:
                result, restart_listeners = await self._reload()
            except Exception as exc:
                # Whatever goes wrong in a reload, the daemon keeps running on what it has.
                log.exception("config_reload_failed", reason=f"{type(exc).__name__}: {exc}")
                self.metrics.reload_failed()
                result, restart_listeners = (
                    ReloadResult(applied=False, problems=(f"reload failed: {exc}",)),
                    {},
                )
            for waiter in waiters:
                waiter.set(result)
            # Listeners restart after the replies went out: the admin request that asked for
            # this reload is itself in flight on the API listener. Their new sockets are
            # already bound, so the switch cannot fail on a busy port.
            for name, sock in restart_listeners.items():
                self.listeners[name] = self._listener(name)
                self.listeners[name].adopt(sock)
                await self.edge.replace_child(self._listener_spec(self.listeners[name]))

    def _load_reloadable(self) -> Config:
        new = load_config(self.config_path, environ=self.environ)
        if new.daemon.data_dir != self.config.daemon.data_dir:
            raise ConfigError(
                str(self.config_path),
                ["daemon.data_dir: cannot change while running; restart the service"],
            )
        if new.store != self.config.store:
            raise ConfigError(
                str(self.config_path),
                ["store: the event store cannot change while running; restart the service"],
            )
        if new.cluster != self.config.cluster:
            raise ConfigError(
                str(self.config_path),
                ["cluster: cannot change while running; restart the service"],
            )
        return new

    def _bind_changed_listeners(self, new: Config) -> dict[str, socket.socket]:
        """Bind every listener whose address changed; on a busy port bind none (`ListenError`)."""
        bound: dict[str, socket.socket] = {}
        try:
            for name in ("api", "metrics"):
                listen = getattr(new, name).listen
                if getattr(self.config, name).listen != listen:
                    bound[name] = bind_listener(listen)
        except ListenError:
            for sock in bound.values():
                sock.close()
            raise
        return bound

    async def _reconfigure_documents(self, new: Config) -> None:
        """`[documents]` on reload: the running actor takes the new settings for what is
        issued from now on; switched on for the first time, the actor starts now. Switched
        off, it stays to finish the jobs already queued (the planner stops adding any)."""
        if self.documents is not None:
            self.documents.configure(new)
        elif new.documents.enabled:
            self.documents = DocumentActor(
                new, store=self.store, dispatcher=self.dispatcher, registry=self.metrics.registry
            )
            await self.core.add_child(ChildSpec(self.documents.name, self.documents.run))

    async def _reload(self) -> tuple[ReloadResult, dict[str, socket.socket]]:
        self.notifier.reloading()
        log.info("config_reload_started", path=str(self.config_path))
        try:
            new = self._load_reloadable()
            # [cluster]: the same [[location]]s and [[channel]]s as the live members.
            await trio.to_thread.run_sync(check_reload, str(self.config_path), self.config, new)
        except ConfigError as exc:
            log.error("config_reload_rejected", problems=exc.problems)  # noqa: TRY400  # a user error, no traceback
            self.metrics.reload_rejected()
            self.notifier.ready(status=f"running; last reload rejected: {exc.problems[0]}")
            return ReloadResult(applied=False, problems=tuple(exc.problems)), {}
        try:
            listeners = self._bind_changed_listeners(new)
        except ListenError as exc:
            # A valid config that cannot take effect: nothing of it is applied and the old
            # listeners keep serving. Counted as "failed", not "invalid": the file is fine,
            # the machine is not (another process holds the port).
            reason = exc.strerror or str(exc)  # "cannot listen on 127.0.0.1:8470: ..."
            log.error("config_reload_failed", reason=reason)  # noqa: TRY400  # no traceback
            self.metrics.reload_failed()
            self.notifier.ready(status=f"running; last reload failed: {reason}")
            return ReloadResult(applied=False, problems=(reason,)), {}
        old, self.config = self.config, new
        register_secret_values(secret.reveal() for secret in new.secrets())
        set_level(new.daemon.log_level)
        self.desk.policy = order_policy(new)
        self.inventory.reconfigure(
            safety=safety_stock(new.location),
            channels=channel_stock_policies(new.channel),
            debounce=debounce_policy(new.inventory),
        )
        self.router.configure(new)
        self.fulfilments.configure(new)
        changed: list[str] = []
        old_sections, new_sections = old.integrations(), new.integrations()
        for name in old_sections.keys() - new_sections.keys():
            await self.integrations.remove_child(name)
            del self.integration_actors[name]
            changed.append(name)
        for name, section in new_sections.items():
            if name not in old_sections:
                await self.integrations.add_child(self._integration_spec(name, section))
                changed.append(name)
            elif old_sections[name] != section:
                await self.integrations.replace_child(self._integration_spec(name, section))
                changed.append(name)
        for table in ("routing", "invoicing", "holds", "status", "daemon", "api", "metrics"):
            if getattr(old, table) != getattr(new, table):
                changed.append(table)
        if old.notify != new.notify:  # the mailer reads it at every delivery: nothing restarts
            changed.append("notify")
        if old.documents != new.documents:
            await self._reconfigure_documents(new)
            changed.append("documents")
        self.config_loaded_at = time.time()
        self.metrics.reload_succeeded()
        log.info("config_reloaded", changed=sorted(changed))
        self.notifier.ready(status="running")
        return ReloadResult(applied=True, changed=tuple(sorted(changed))), listeners

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT (exit 0) or until the tree fails (exit 1)."""
        register_secret_values(secret.reveal() for secret in self.config.secrets())
        self._write_pid_file()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals)
                nursery.start_soon(self.notifier.run_watchdog)
                await nursery.start(self.root.run)
                self.metrics.reload_succeeded()
                nursery.start_soon(self._reload_loop)
                self.notifier.ready(status="running")
                log.info("somsd_ready", version=__version__, config=str(self.config_path))
                await self._shutdown_wanted.wait()
                await self._shutdown()
                nursery.cancel_scope.cancel()
        except Exception as exc:
            error = unwrap_exception_group(exc)
            log.critical("somsd_failed", exc_info=error)
            self.notifier.status(f"failed: {type(error).__name__}: {error}")
            return 1
        finally:
            self._remove_pid_file()
        log.info("somsd_stopped")
        return 0

    async def _shutdown(self) -> None:
        self.notifier.stopping()
        log.info("somsd_stopping")
        self.api_state.accepting = False
        # The listeners' graceful timeout and the store's final commit each fit in the drain
        # budget; five more seconds bound the rest before we give up on a clean stop.
        with trio.move_on_after(self.config.daemon.drain_timeout.seconds + 5):
            await self.root.stop()

    async def _watch_signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.request_reload()
                else:
                    log.info("signal_received", signal=signal.Signals(signum).name)
                    self._shutdown_wanted.set()

    def _write_pid_file(self) -> None:
        if self.config.daemon.pid_file:
            Path(self.config.daemon.pid_file).write_text(f"{os.getpid()}\n")

    def _remove_pid_file(self) -> None:
        if self.config.daemon.pid_file:
            Path(self.config.daemon.pid_file).unlink(missing_ok=True)


def order_policy(config: Config) -> OrderPolicy:
    """The rules the order desk decides by, from a config that passed validation."""
    holds = config.holds
    pickup_stores = frozenset(
        location.name for location in config.location if "pickup" in location.capabilities
    )
    return OrderPolicy(
        machine=build_status_machine(config.custom_statuses()),
        holds=HoldRules(
            unpaid_methods=frozenset(holds.unpaid_methods),
            unpaid_limits=dict(holds.unpaid_limits),
            blocked_emails=frozenset(holds.blocked_emails),
            blocked_customer_ids=frozenset(holds.blocked_customer_ids),
        ),
        invoicing=InvoicingPolicy(
            auto_methods=frozenset(config.invoicing.auto_methods),
            timezone=zoneinfo.ZoneInfo(config.invoicing.timezone),
        ),
        # Without any location configured there is nothing to check a pickup store against.
        pickup_locations=pickup_stores if config.location else None,
    )


class StartupError(Exception):
    """somsd cannot start; the message names what and how to fix it (one line, no traceback)."""


def lock_data_dir(data_dir: Path) -> int:
    """Take the data dir for this process: an exclusive `flock` on its lock file.

    Two daemons on one store would both write and both poll the 3PLs. The lock is held as long
    as the returned descriptor is open, so it ends with the process however it ends.
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StartupError(
            f'data dir "{data_dir}" is not writable ({exc.strerror}); fix it with: '
            f'chown somsd: "{data_dir}" (or set daemon.data_dir to a writable directory)'
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StartupError(
            f'data dir "{data_dir}" is in use by another somsd (pid {holder}); '
            "stop it first or give this one its own daemon.data_dir"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def prepare_startup(daemon: Daemon) -> int:
    """Everything that can refuse a start, before any actor runs: data dir, lock, ports."""
    data_dir = Path(daemon.config.daemon.data_dir)
    problem = data_dir_problem(daemon.config)
    if problem is not None:
        raise StartupError(problem)
    lock = lock_data_dir(data_dir)
    try:
        for listener in daemon.listeners.values():
            listener.bind()
    except ListenError as exc:
        os.close(lock)
        raise StartupError(f"{exc.strerror}; free the port or change the listen address") from None
    return lock


def run_daemon(config_path: Path) -> int:
    """Entry point of `somsd run`: exit 0 after a clean stop, 1 on failure, 2 on bad config."""
    config = load_config(config_path)  # ConfigError is reported by the CLI
    configure_logging(config.daemon.log_level)
    daemon = Daemon(config_path, config)
    try:
        lock = prepare_startup(daemon)
    except StartupError as exc:
        print(f"somsd: {exc}", file=sys.stderr)
        return 1
    try:
        join_cluster(str(config_path), config)  # ConfigError: sets differ from a live member's
        return trio.run(daemon.run)
    finally:
        os.close(lock)

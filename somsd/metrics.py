"""Kernel metrics on an app-owned registry, and the `/metrics` endpoint.

Why an app-owned `CollectorRegistry`: two daemons in one test process (or a test and the
daemon it starts) must not collide on prometheus_client's global registry.

Why the endpoint is served by our own Starlette route and not `start_http_server`: the latter
runs in a foreign thread, and the collectors here read trio objects (mailbox statistics) that
belong to the trio thread. Gauges that need a database read (outbox backlog) are refreshed by
async hooks awaited just before each scrape, so a scrape never blocks the event loop on SQLite.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Generic, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

__all__ = ["KernelMetrics", "LabelChildren", "build_metrics_app"]


RefreshHook = Callable[[], Awaitable[None]]


class _HasDepth(Protocol):
    """A mailbox, as far as metrics care."""

    @property
    def depth(self) -> int: ...


class _MailboxDepths(Collector):
    """Reads each tracked mailbox's queue length at scrape time (on the trio thread)."""

    def __init__(self) -> None:
        self.mailboxes: dict[str, _HasDepth] = {}

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "somsd_mailbox_depth", "Messages waiting in an actor's mailbox.", labels=["actor"]
        )
        for name, mailbox in sorted(self.mailboxes.items()):
            family.add_metric([name], mailbox.depth)
        yield family


class KernelMetrics:
    """The metrics the kernel owns; also the supervisors' `SupervisorMetrics` sink."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.actor_up = Gauge(
            "somsd_actor_up",
            "1 while the actor runs, 0 while it is starting, backing off or stopped.",
            ["actor"],
            registry=self.registry,
        )
        self.actor_restarts = Counter(
            "somsd_actor_restarts",
            "Restarts of an actor by its supervisor after a crash.",
            ["actor"],
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "somsd_config_reloads",
            "Config reload attempts by result (success, invalid; failed: valid, could not apply).",
            ["result"],
            registry=self.registry,
        )
        self.config_last_reload_success = Gauge(
            "somsd_config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load or reload that took effect.",
            registry=self.registry,
        )
        self.outbox_pending = Gauge(
            "somsd_outbox_pending",
            "Outbox entries waiting for delivery, by target.",
            ["target"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "somsd_dead_letters",
            "Outbox entries parked after permanent failure, by target.",
            ["target"],
            registry=self.registry,
        )
        for result in ("success", "invalid", "failed"):
            self.config_reloads.labels(result)  # export zeros so alerts can use rate()
        self._mailboxes = _MailboxDepths()
        self.registry.register(self._mailboxes)
        self._refresh_hooks: list[RefreshHook] = []

    # -- SupervisorMetrics ---------------------------------------------------------------

    def child_up(self, name: str, up: bool) -> None:
        self.actor_up.labels(name).set(1 if up else 0)
        self.actor_restarts.labels(name)  # so a never-restarted actor shows 0, not nothing

    def child_restarted(self, name: str) -> None:
        self.actor_restarts.labels(name).inc()

    def child_removed(self, name: str) -> None:
        for metric in (self.actor_up, self.actor_restarts):
            with contextlib.suppress(KeyError):
                metric.remove(name)
        self._mailboxes.mailboxes.pop(name, None)

    # -- other kernel facts ---------------------------------------------------------------

    def track_mailbox(self, actor: str, mailbox: _HasDepth) -> None:
        self._mailboxes.mailboxes[actor] = mailbox

    def reload_succeeded(self) -> None:
        self.config_reloads.labels("success").inc()
        self.config_last_reload_success.set(time.time())

    def reload_rejected(self) -> None:
        self.config_reloads.labels("invalid").inc()

    def reload_failed(self) -> None:
        """A valid config that could not take effect (its new port is busy); the old one runs."""
        self.config_reloads.labels("failed").inc()

    def set_outbox_counts(
        self, pending: Mapping[str, int], dead: Mapping[str, int], targets: Iterable[str] = ()
    ) -> None:
        """Publish backlog per target; known targets with nothing queued show 0."""
        for gauge, counts in ((self.outbox_pending, pending), (self.dead_letters, dead)):
            for target in {*targets, *counts}:
                gauge.labels(target).set(counts.get(target, 0))

    def on_scrape(self, hook: RefreshHook) -> None:
        """Run `hook` before every scrape, to refresh gauges that need I/O."""
        self._refresh_hooks.append(hook)

    async def refresh(self) -> None:
        for hook in self._refresh_hooks:
            await hook()


def build_metrics_app(metrics: KernelMetrics) -> Starlette:
    """`GET /metrics` in Prometheus text or OpenMetrics format, chosen by the Accept header."""

    async def scrape(request: Request) -> Response:
        await metrics.refresh()
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(metrics.registry), media_type=content_type)

    return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])


MetricT = TypeVar("MetricT", Counter, Histogram)


class LabelChildren(Generic[MetricT]):
    """`metric.labels(value)` of a one-label metric, resolved once per value.

    prometheus_client's `labels()` validates, builds a key and takes a lock on every call;
    on the order intake that ran several times per order. Only for metrics whose children
    are never removed (a removed child would keep counting, unseen).
    """

    def __init__(self, metric: MetricT) -> None:
        self._metric: MetricT = metric
        self._children: dict[str, MetricT] = {}

    def __call__(self, value: str) -> MetricT:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(value)
        return child

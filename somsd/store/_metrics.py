"""The event store's Prometheus metrics, declared in one place.

They are registered on the registry the application owns and passes in (never the global one,
so tests and several stores in one process do not clash); with `registry=None` they still count
but are exported nowhere. The outbox gauges (`somsd_outbox_pending`, `somsd_dead_letters`) are
the kernel's (somsd/metrics.py); it fills them from `EventStore.outbox_counts()` before a scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["StoreMetrics"]

# Submit-to-ack latency. An ack needs a thread hop (~0.1 ms) and an fsync of the WAL (0.1 ms on
# a VM with host cache, 2-10 ms on real disks without power-loss protection), so nothing is
# faster than 0.5 ms; a second or more means the disk is stalling or the mailbox is backed up.
_APPEND_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Requests per transaction, from 1 (idle) up to the default batch limit of 500.
_BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500)


class StoreMetrics:
    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.append_seconds = Histogram(
            "somsd_eventlog_append_seconds",
            "Time from submitting an append to its acknowledgement after commit.",
            buckets=_APPEND_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "somsd_eventlog_batch_size",
            "Requests written per event-log transaction (group commit).",
            buckets=_BATCH_BUCKETS,
            registry=registry,
        )
        self.failed_batches = Counter(
            "somsd_eventlog_failed_batches",
            "Event-log transactions that failed as a whole; every request in them failed.",
            registry=registry,
        )
        self.disk_full = Gauge(
            "somsd_store_disk_full",
            "1 while the disk holding the event store is full and writes are refused, else 0.",
            registry=registry,
        )

"""Document benchmark: invoices rendered (PDF + CII + embed) and validated. Prints figures.

    .venv/bin/python bench/documents.py [--invoices 1000] [--seed 7] [--workers N]

Measures on this machine:
1. rendering alone: `render_invoice` (drafthorse CII, reportlab PDF, PDF/A-3 embed) in this
   process, invoices/s and p50/p99;
2. validation alone: the validator worker (its own process: XSD + CEN/Factur-X schematron,
   plus KoSIT XRechnung rules for the XRechnung share) as the daemon uses it, over its pipes;
3. the pipeline as the document actor runs it: rendering here while `--workers` validator
   workers (default: as the daemon sizes the pool) check the invoices rendered before,
   invoices/s;
with the CPU milliseconds per invoice of each part (this process from getrusage, the workers
from /proc), and the time for a day of 10,000 invoices measured and estimated for idle cores
(aim: < 10 minutes).
Orders: 1 - 8 lines, tax rates 0/7/19 %, shipping, 20 % XRechnung (buyer reference).
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import resource
import statistics
import sys
import threading
import time
from datetime import date
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from somsd.documents.client import ValidatorPool, default_validator_workers
from somsd.documents.model import InvoiceRequest, Seller
from somsd.documents.render import render_invoice
from somsd.domain.documents import build_document, shipping_by_rate
from somsd.domain.testing import sample_line, sample_order

SELLER = Seller(
    name="Muster Handel GmbH",
    street="Industriestr. 5",
    zip="20095",
    city="Hamburg",
    vat_id="DE123456789",
    tax_number="22/123/45678",
    email="rechnung@muster.example",
    contact_name="Max Muster",
    phone="+49 40 1234567",
    iban="DE02120300000000202051",
)
DAY = 10_000


def requests(count: int, rng: random.Random) -> list[InvoiceRequest]:
    made: list[InvoiceRequest] = []
    for index in range(count):
        lines = [
            sample_line(
                sku=f"SKU-{rng.randrange(100_000)}",
                quantity=rng.randint(1, 5),
                unit_price=f"{rng.randint(100, 50_000) / 100:.2f}",
                tax_rate=rng.choice(("0", "7", "19", "19")),
            )
            for _ in range(rng.randint(1, 8))
        ]
        order = sample_order(
            external_id=f"B-{index}",
            lines=lines,
            payment_method="invoice",
            payment_status="pending",
        )
        quantities = {i: line.quantity for i, line in enumerate(order.lines)}
        document = build_document(
            order, "invoice", quantities, shipping=shipping_by_rate(order, quantities)
        )
        made.append(
            InvoiceRequest(
                number=f"RE-2026-{index + 1:06d}",
                issue_date=date(2026, 12, 7),
                document=document,
                order_number=order.number,
                payment_method="invoice",
                prepaid=Decimal(0),
                buyer_reference="04011000-12345-67" if rng.random() < 0.2 else "",
            )
        )
    return made


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def worker_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of the validator worker processes so far (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--workers",
        type=int,
        default=default_validator_workers(),
        help="validator worker processes (default: as the daemon sizes it, cores - 1)",
    )
    args = parser.parse_args()
    work = requests(args.invoices, random.Random(args.seed))
    print(
        f"{len(work)} invoices, {sum(len(r.document.lines) for r in work)} lines, "
        f"{sum(1 for r in work if r.buyer_reference)} XRechnung; {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; {args.workers} validator worker(s)"
    )

    render_invoice(work[0], SELLER)  # fonts registered, modules warm
    times: list[float] = []
    cpu = own_cpu_seconds()
    started = time.perf_counter()
    rendered = []
    for request in work:
        t = time.perf_counter()
        rendered.append(render_invoice(request, SELLER))
        times.append(time.perf_counter() - t)
    render_total = time.perf_counter() - started
    render_cpu = (own_cpu_seconds() - cpu) / len(work)
    print(
        f"render (PDF + CII + embed): {len(work) / render_total:,.0f} invoices/s, "
        f"p50 {statistics.median(times) * 1000:.1f} ms, "
        f"p99 {percentile(times, 0.99) * 1000:.1f} ms, CPU {render_cpu * 1000:.1f} ms/invoice, "
        f"mean PDF {statistics.mean(len(r.pdf) for r in rendered) / 1024:.0f} KiB"
    )

    pool = ValidatorPool(args.workers)
    t = time.perf_counter()
    pool.start()
    print(f"validator workers start (compiling the rule sets): {time.perf_counter() - t:.2f} s")
    worker = ValidatorPool(1)  # one worker alone: its own time per invoice, undisturbed
    worker.start()
    own: list[float] = []
    cpu = worker_cpu_seconds(worker.pids)
    started = time.perf_counter()
    invalid = 0
    for item in rendered:
        report = worker.validate(item.xml)
        own.append(report.seconds)
        invalid += not report.valid
    validate_total = time.perf_counter() - started
    validate_cpu = (worker_cpu_seconds(worker.pids) - cpu) / len(work)
    worker.close()
    print(
        f"validate (XSD + schematron, one worker via its pipes): "
        f"{len(work) / validate_total:,.0f} invoices/s; worker's own time p50 "
        f"{statistics.median(own) * 1000:.1f} ms, p99 {percentile(own, 0.99) * 1000:.1f} ms, "
        f"CPU {validate_cpu * 1000:.1f} ms/invoice; invalid: {invalid}"
    )

    # The actor's way: render here (one thread: the GIL) while every worker checks one.
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=args.workers * 2)

    def validate_loop() -> None:
        while (xml := pending.get()) is not None:
            pool.validate(xml)

    threads = [threading.Thread(target=validate_loop) for _ in range(args.workers)]
    cpu = own_cpu_seconds() + worker_cpu_seconds(pool.pids)
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for request in work:
        pending.put(render_invoice(request, SELLER).xml)
    for _ in threads:
        pending.put(None)
    for thread in threads:
        thread.join()
    pipeline_total = time.perf_counter() - started
    pipeline_cpu = (own_cpu_seconds() + worker_cpu_seconds(pool.pids) - cpu) / len(work)
    rate = len(work) / pipeline_total
    # Two idle cores: one renders, the other validates; the slower side sets the pace.
    quiet = DAY * max(
        render_cpu, validate_cpu / max(1, min(args.workers, (os.cpu_count() or 2) - 1))
    )
    print(
        f"pipeline (render here, validate in {args.workers} worker(s)): {rate:,.0f} invoices/s"
        f" -> {DAY:,} invoices in {DAY / rate / 60:.1f} min (aim < 10 min); "
        f"CPU {pipeline_cpu * 1000:.1f} ms/invoice all in; on idle cores ~{quiet / 60:.1f} min; "
        f"validator restarts {pool.restarts}"
    )
    pool.close()


if __name__ == "__main__":
    main()

"""Supplier-invoice benchmark: text PDFs from file to decision. Prints figures.

    .venv/bin/python bench/supplier_invoices.py [--invoices 3000]

Per invoice, as the actor does it minus the event log: detect the e-invoice (factur-x), the
text layer (pypdf layout mode, the pinned backend; timed on its own), pick and apply the
supplier's template, run every check against POs and goods receipts, decide. PDFs of the three
template suppliers of the test corpus, 2 - 12 lines each, rendered beforehand (not timed).
Aim: 3,000 PDFs in under 10 minutes on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from somsd.supplier_invoices.checks import MatchData, decide, run_checks
from somsd.supplier_invoices.extract import extract
from somsd.supplier_invoices.model import Tolerances
from somsd.supplier_invoices.templates import Template
from tests.supplier_invoices.corpus import (
    BUERO,
    KAFFEE,
    NORDLICHT,
    make_invoice,
    orders_for,
    render,
)
from tests.supplier_invoices.corpus import load_templates as corpus_templates


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--invoices", type=int, default=3000)
    args = parser.parse_args()
    templates: list[Template] = corpus_templates()  # type: ignore[assignment]
    suppliers = (BUERO, NORDLICHT, KAFFEE)
    rates = {"a": "19", "b": "19", "c": "7"}
    files: list[bytes] = []
    orders, receipts = [], []
    started = time.perf_counter()
    for n in range(args.invoices):
        supplier = suppliers[n % 3]
        items = [
            (f"A-{n}-{i}", f"Artikel {i}", 1 + (n + i) % 40, f"{3 + i}.{(n * 7 + i) % 100:02d}",
             rates[supplier.layout])
            for i in range(2 + n % 11)
        ]  # fmt: skip
        invoice = make_invoice(supplier, f"B-{n}", f"PO-{n}", items)
        po, gr = orders_for(invoice, supplier)
        orders += po
        receipts += gr
        files.append(render(invoice, supplier))
    print(f"rendered {len(files)} PDFs in {time.perf_counter() - started:.1f} s (not counted)")
    match = MatchData.build(orders, receipts)
    tolerances = Tolerances()
    records = {s.record.number: s.record for s in suppliers}
    outcomes: dict[str, int] = {}
    text_seconds: list[float] = []
    per_invoice: list[float] = []
    started = time.perf_counter()
    for data in files:
        begun = time.perf_counter()
        extraction = extract(data, templates)
        assert extraction.invoice is not None, extraction.problem
        decision = decide(
            run_checks(
                extraction.invoice,
                supplier=records[extraction.supplier],
                seen_numbers=(),
                match=match,
                tolerances=tolerances,
            )
        )
        outcomes[decision.outcome] = outcomes.get(decision.outcome, 0) + 1
        text_seconds.append(extraction.text_seconds)
        per_invoice.append(time.perf_counter() - begun)
    total = time.perf_counter() - started
    text_total = sum(text_seconds)
    print(f"file to decision: {len(files)} PDFs in {total:.1f} s = {len(files) / total:.1f} PDFs/s")
    print(
        f"  text backend (pypdf layout) alone: {text_total:.1f} s "
        f"({100 * text_total / total:.0f} %), p50 {statistics.median(text_seconds) * 1000:.1f} ms"
    )
    p99 = sorted(per_invoice)[int(len(per_invoice) * 0.99) - 1]
    print(
        f"  per invoice p50 {statistics.median(per_invoice) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    print(f"  outcomes {outcomes}")
    print(f"  3,000 PDFs would take {3000 * total / len(files) / 60:.1f} min (aim < 10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

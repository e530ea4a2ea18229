"""`attach_documents`: somsd's rendered invoice PDF archived on the ERP's sales order F, a
credit note's on its G, as a journal with the file attached, over real HTTP against the
simulator with lost responses: exactly one journal and one file each, byte for byte the PDF
somsd serves."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.selectline.simulator import SelectLineSimulator
from tests.adapters.conftest import Serve, wait_until
from tests.documents.test_document_actor import DOCUMENTS
from tests.erp.helpers import erp_config, seeded_sim
from tests.harness import running_daemon
from tests.orders.shop import accept, order_body, scrape

pytestmark = pytest.mark.slow

BUDGET = 60.0  # rendering and validating on a busy machine


def archived(sim: SelectLineSimulator, key: str) -> list[tuple[str, list[tuple[str, bytes]]]]:
    """(journal label, [(file name, bytes)]) of document `key`."""
    document = sim.documents.get(key)
    if document is None:
        return []
    return [
        (
            journal.Label or "",
            [
                (info.Filename or "", content)
                for info, content, _ in sim.attachments.get(journal.Identifier or "", [])
            ],
        )
        for journal in document.journals
    ]


async def test_invoice_and_credit_note_pdfs_are_archived_once_on_the_f_and_the_g(
    tmp_path: Path, serve: Serve
) -> None:
    sim = seeded_sim(lost_response_rate=0.3)
    extra = "attach_documents = true\n" + DOCUMENTS.format(vat_id="DE123456789")
    config = await erp_config(tmp_path, serve, sim, extra=extra)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        order_id = await accept(admin, order_body("9501"))  # paid by card: invoiced at once

        def f_archived() -> bool:
            found = sim.documents_of("F", "9501")
            return bool(found) and any(files for _, files in archived(sim, found[0].key))

        await wait_until(f_archived, budget=BUDGET)
        canceled = await admin.post(
            f"/v1/orders/{order_id}/cancel",
            json={"reason": "customer asked", "lines": [{"line": 0, "quantity": 1}]},
        )
        assert canceled.status_code == 200, canceled.text

        def g_archived() -> bool:
            found = sim.documents_of("G", "9501")
            return bool(found) and any(files for _, files in archived(sim, found[0].key))

        await wait_until(g_archived, budget=BUDGET)
        documents = (await admin.get(f"/v1/orders/{order_id}/documents")).json()["documents"]
        numbers = {d["kind"]: d["number"] for d in documents}
        pdfs = {}
        for kind, number in numbers.items():
            response = await admin.get(
                f"/v1/documents/{number}", headers={"Accept": "application/pdf"}
            )
            assert response.status_code == 200, response.text
            pdfs[kind] = response.content
        (sales_order,) = sim.documents_of("F", "9501")
        (credit,) = sim.documents_of("G", "9501")
        invoice_number = numbers["invoice"]
        credit_number = numbers["credit_note"]
        assert archived(sim, sales_order.key) == [
            (f"somsd Rechnung {invoice_number}", [(f"{invoice_number}.pdf", pdfs["invoice"])])
        ]
        assert archived(sim, credit.key) == [
            (f"somsd Gutschrift {credit_number}", [(f"{credit_number}.pdf", pdfs["credit_note"])])
        ]
        # Counted per upload answered; one whose answer was lost is found, not counted again.
        samples = await scrape(daemon)
        for kind in ("invoice", "credit_note"):
            labels = frozenset({("erp", "sl"), ("kind", kind)})
            assert samples.get(("somsd_erp_documents_attached_total", labels), 0.0) <= 1.0

"""The reader API other actors use (the invoice mail attaches `for_invoice(number)`), with the
real store, order desk, outbox dispatcher, document actor and validator worker in-process."""

from __future__ import annotations

from pathlib import Path

import facturx
import pytest
import trio
from prometheus_client import CollectorRegistry

from actors.documents import DocumentActor, document_effects
from actors.order_desk import OrderDesk, ReceiveOrder
from actors.outbox import OutboxDispatcher
from somsd.config import Config, DaemonConfig, DocumentsConfig
from somsd.domain.policy import OrderPolicy
from somsd.domain.testing import sample_order
from somsd.projections import all_projections
from somsd.store import EventStore

pytestmark = pytest.mark.slow  # a real validator worker process

DOCUMENTS = DocumentsConfig(
    enabled=True,
    seller_name="Muster Handel GmbH",
    street="Industriestr. 5",
    zip="20095",
    city="Hamburg",
    vat_id="DE123456789",
    email="rechnung@muster.example",
)


async def test_for_invoice_gives_the_pdf_and_xml_once_rendered(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    registry = CollectorRegistry()
    store = EventStore(tmp_path / "somsd.db", all_projections(), registry=registry)
    await nursery.start(store.run)
    desk = OrderDesk(store, OrderPolicy(), registry=registry)
    desk.effects = document_effects(lambda: True)
    await nursery.start(desk.run)
    dispatcher = OutboxDispatcher(store, registry=registry)
    await nursery.start(dispatcher.run)
    config = Config(daemon=DaemonConfig(data_dir=str(tmp_path)), documents=DOCUMENTS)
    actor = DocumentActor(config, store=store, dispatcher=dispatcher, registry=registry)
    await nursery.start(actor.run)

    received = await desk.ask(lambda reply: ReceiveOrder("shop", sample_order(), reply))
    reader = actor.reader
    files = None
    with trio.fail_after(30):
        for _ in range(600):  # bounded in count and time
            files = await reader.for_invoice("RE-2026-000001")
            if files is not None:
                break
            # The validator worker is another process: look again shortly.
            await trio.sleep(0.05)
    assert files is not None
    assert files.xml_name == "factur-x.xml"
    assert facturx.get_xml_from_pdf(files.pdf, check_xsd=False)[1] == files.xml
    (record,) = await reader.for_order(received.order_id) or []
    assert record.valid
    assert await reader.for_invoice("RE-2026-000002") is None
    assert await reader.for_invoice("../etc/passwd") is None

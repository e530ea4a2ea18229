from __future__ import annotations

from collections.abc import Iterator

import pytest

from somsd.documents.client import ValidatorWorker
from somsd.documents.model import Seller
from tests.postgres.conftest import pg_cluster, pg_dsn

__all__ = ["SELLER", "pg_cluster", "pg_dsn", "validator"]

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
    bank_name="Musterbank",
    iban="DE02120300000000202051",
    bic="BYLADEM1001",
    footer="Amtsgericht Hamburg HRB 12345 · Geschäftsführer Max Muster",
)


@pytest.fixture(scope="session")
def validator() -> Iterator[ValidatorWorker]:
    """One real validator worker process for the whole session (starting one costs ~1 s)."""
    worker = ValidatorWorker()
    worker.start()
    yield worker
    worker.close()

from __future__ import annotations

from collections.abc import Iterator

import pytest

from somsd.documents.client import ValidatorWorker


@pytest.fixture(scope="session")
def validator() -> Iterator[ValidatorWorker]:
    """One real validator worker process for the session (starting one costs ~1 s)."""
    worker = ValidatorWorker()
    worker.start()
    yield worker
    worker.close()

"""The validator pool: several real worker processes behind one `validate`, used in
parallel, resized on reload, a killed worker replaced and counted."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from somsd.documents.cii import build_cii
from somsd.documents.client import ValidatorPool, default_validator_workers
from tests.documents.conftest import SELLER
from tests.documents.test_einvoice import example_request

pytestmark = pytest.mark.slow  # real worker processes


def test_two_workers_check_in_parallel_and_shrink_to_one() -> None:
    xml = build_cii(example_request(), SELLER)
    pool = ValidatorPool(2, timeout=60)
    try:
        pool.start()
        first, second = pool.pids
        assert first != second
        results: list[bool] = []
        threads = [
            threading.Thread(target=lambda: results.append(pool.validate(xml).valid))
            for _ in range(6)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert results == [True] * 6

        pool.resize(1)  # both idle: one is stopped at once
        assert pool.size == 1
        assert len(pool.pids) == 1
        (survivor,) = pool.pids
        os.kill(survivor, signal.SIGKILL)
        assert pool.validate(xml).valid  # found dead, started again, the check retried
        assert pool.restarts == 1
        assert pool.pids != [survivor]
    finally:
        pool.close()
    assert pool.pids == []


def test_the_default_leaves_a_core_for_rendering() -> None:
    assert default_validator_workers() == max(1, min(8, (os.cpu_count() or 1) - 1))
    with pytest.raises(ValueError, match="at least one"):
        ValidatorPool(0)

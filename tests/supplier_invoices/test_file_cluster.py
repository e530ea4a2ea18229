"""Supplier invoices' files live in the event store's database: two real `somsd run` members on
one PostgreSQL store, a file taken in by the member holding the supplier-invoice duty, which is
then SIGKILLed; the other member takes the duty over and reads the file again (a retry once
its template is there), and `somsd audit verify` finds every file."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import pytest

from tests.cluster.conftest import pg_cluster, pg_dsn
from tests.cluster.members import cluster_tables, owns, until
from tests.harness import running_daemon
from tests.supplier_invoices.corpus import unknown_supplier_pdf
from tests.supplier_invoices.daemon_setup import inbox_config, wait_status, write_master_data
from tests.supplier_invoices.test_daemon import FINAL, NEW_TEMPLATE, audit_verify

__all__ = ["pg_cluster", "pg_dsn"]

pytestmark = pytest.mark.slow

DUTY = "supplier_invoices"


async def test_a_file_taken_in_by_a_member_is_read_again_by_the_other_after_it_died(
    tmp_path: Path, pg_dsn: str
) -> None:
    configs = {}
    for name in ("first", "second"):
        directory = tmp_path / name
        directory.mkdir()
        write_master_data(directory, [], [])
        configs[name] = inbox_config(directory, extra=cluster_tables(directory, pg_dsn, name))
    async with contextlib.AsyncExitStack() as stack:
        # The member started first takes the supplier invoices' duty; the other stands by.
        first = await stack.enter_async_context(running_daemon(configs["first"]))
        await until([first], lambda: owns(first, DUTY), what="first owns the duty")
        second = await stack.enter_async_context(running_daemon(configs["second"]))
        async with first.admin() as admin:
            response = await admin.post("/v1/supplier-invoices", content=unknown_supplier_pdf())
            assert response.status_code == 201, response.text
            invoice = response.json()["id"]
            await wait_status(admin, [invoice], {"needs_template"})
        for name in configs:
            assert not (tmp_path / name / "data" / "supplier-invoices" / "files").exists()

        first.signal(signal.SIGKILL)
        await first.process.wait()
        await until([second], lambda: owns(second, DUTY), what="second took the duty over")
        (tmp_path / "second" / "templates" / "neuer-lieferant.yml").write_text(NEW_TEMPLATE)
        async with second.admin() as admin:
            assert (await admin.post("/v1/admin/reload")).status_code == 200
            body = {"by": "m.muster", "reason": "template written"}
            retried = await admin.post(f"/v1/supplier-invoices/{invoice}/retry", json=body)
            assert retried.status_code == 200, retried.text
            summary = (await wait_status(admin, [invoice], FINAL - {"needs_template"}))[invoice]
        # Read from the blob on the member that never saw the file: no template, no number.
        assert summary["number"] == "4711"
        decided = [e for e in second.log if e.get("event") == "supplier_invoice_decided"]
        assert [e["invoice"] for e in decided] == [invoice]
    result = audit_verify(configs["second"])
    assert result.returncode == 0, result.stderr
    assert "audit ok: 1 supplier invoices" in result.stdout

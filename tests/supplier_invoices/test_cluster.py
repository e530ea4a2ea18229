"""Two real `somsd run` members of one `[cluster]` on PostgreSQL, the supplier-invoice duty on
one and the SelectLine ERP's on the other: each approved invoice still arrives in the ERP as
one supplier invoice `E`, posted by the member holding the ERP's lease."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio

from tests.adapters.conftest import Serve, serve
from tests.cluster.conftest import pg_cluster, pg_dsn
from tests.erp.helpers import selectline_erp
from tests.harness import DaemonProcess, next_log_line, running_daemon, write_daemon_config
from tests.supplier_invoices.corpus import render
from tests.supplier_invoices.daemon_setup import inbox_config
from tests.supplier_invoices.test_erp import (
    assert_one_e_each,
    good_invoices,
    supplier_sim,
    wait_erp_posted,
    write_orders,
)

__all__ = ["pg_cluster", "pg_dsn", "serve"]

pytestmark = pytest.mark.slow


def _cluster_sections(directory: Path, dsn: str, member: str, erp_url: str) -> str:
    (directory / "cluster.dsn").write_text(dsn + "\n")
    return f"""
[store]
backend = "postgres"
dsn_file = "cluster.dsn"

[cluster]
member = "{member}"
dsn_file = "cluster.dsn"
lease_ttl = "3s"
renew_every = "500ms"
""" + selectline_erp(erp_url)


def _acquired(daemon: DaemonProcess) -> set[str]:
    return {e["duty"] for e in daemon.log if e.get("event") == "lease_acquired"}


async def _wait_lease(daemon: DaemonProcess, duty: str) -> None:
    with trio.fail_after(20):
        while duty not in _acquired(daemon):
            await next_log_line([daemon])


async def test_the_erp_posting_is_made_by_the_member_holding_the_erp_lease(
    tmp_path: Path, serve: Serve, pg_dsn: str
) -> None:
    sim = supplier_sim()
    url, _ = await serve(sim)
    erp_member, inbox_member = tmp_path / "erp-member", tmp_path / "inbox-member"
    for directory in (erp_member, inbox_member):
        directory.mkdir()
        (directory / "selectline.password").write_text(sim.password + "\n")
    invoices = good_invoices(4)
    write_orders(inbox_member, invoices)
    # The ERP member starts first and takes the ERP's lease; the other one, the only member
    # with a supplier inbox, takes the supplier invoices' and stands by for the ERP.
    erp_config = write_daemon_config(
        erp_member, _cluster_sections(erp_member, pg_dsn, "erp-member", url)
    )
    inbox_config_path = inbox_config(
        inbox_member,
        inbox_keys='erp = "sl"',
        extra=_cluster_sections(inbox_member, pg_dsn, "inbox-member", url),
    )
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(running_daemon(erp_config))
        await _wait_lease(first, "erp/sl")
        second = await stack.enter_async_context(running_daemon(inbox_config_path))
        await _wait_lease(second, "supplier_invoices")
        assert "erp/sl" not in _acquired(second)
        for n, (supplier, invoice) in enumerate(invoices):
            (inbox_member / "inbox" / f"e-{n}.pdf").write_bytes(render(invoice, supplier))
        async with second.admin() as admin:
            listing = await wait_erp_posted(admin, len(invoices))
        assert {s["status"] for s in listing} == {"posted"}
        posted_by = [e for e in first.log if e.get("event") == "supplier_invoice_erp_posted"]
        assert len(posted_by) == len(invoices)
        assert "erp/sl" not in _acquired(second)
    assert_one_e_each(sim, invoices)

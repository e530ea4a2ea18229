"""A real `somsd run` with a SelectLine ERP (the simulator, in the test process, over loopback):
stock to ATP, sales orders, delivery notes and invoices for exactly what shipped, credit notes,
payments booked in the ERP, seats and logins, bad ERP data, and SIGKILLs with lost responses.
"""

from __future__ import annotations

import signal
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from adapters.selectline.wire import Stock
from somsd.domain.testing import sample_line
from tests.adapters.conftest import Serve, wait_until
from tests.erp.helpers import BUDGET, erp_config, eventually, seeded_sim
from tests.harness import running_daemon
from tests.orders.shop import accept, order_body

pytestmark = pytest.mark.slow


async def order_view(admin: httpx.AsyncClient, order_id: str) -> dict[str, Any]:
    response = await admin.get(f"/v1/orders/{order_id}")
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_stock_orders_shipments_credit_notes_and_payments_end_to_end(
    tmp_path: Path, serve: Serve
) -> None:
    sim = seeded_sim()
    config = await erp_config(tmp_path, serve, sim)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        # Stock: 5 + 3 available over the two warehouses; a not shop-active article counts 0.
        async def atp(sku: str) -> int | None:
            view = (await admin.get(f"/v1/inventory/{sku}")).json()
            location = view.get("locations", {}).get("wh")
            return None if not location or location["as_of"] is None else int(location["atp"])

        assert await eventually(daemon, "MUG-1 counted", lambda: atp("MUG-1")) == 8
        assert await atp("OLD-3") == 0
        sim.set_stock("MUG-1", "400", 13)
        await eventually(daemon, "new count", lambda: _equal(atp("MUG-1"), 18))

        # An order: one F with its positions and totals to the cent.
        body = order_body(
            "5001",
            lines=[
                sample_line(quantity=3),
                sample_line(sku="CUP-2", quantity=1, unit_price="7.99"),
            ],
            payment_method="invoice",
            payment_status="pending",
        )
        order_id = await accept(admin, body)
        await wait_until(
            lambda: [len(d.positions) for d in sim.documents_of("F", "5001")] == [3], budget=BUDGET
        )
        (sales_order,) = sim.documents_of("F", "5001")
        gross, _, _ = sales_order.totals()
        assert gross == Decimal("3") * Decimal("12.50") + Decimal("7.99") + Decimal("4.90")
        assert [(p.kind, p.article, p.quantity) for p in sales_order.positions] == [
            ("A", "MUG-1", Decimal(3)),
            ("A", "CUP-2", Decimal(1)),
            ("E", "VERSAND", Decimal(1)),
        ]
        assert sales_order.partner is not None
        assert sales_order.partner.Address is not None
        customer = sim.customers[sales_order.partner.Address.Number or ""]
        assert customer.Contact is not None
        assert customer.Contact.EMail1 == "max@example.com"

        # Partial shipment: L and R with exactly the shipped units (and the shipping position).
        shipped = await admin.post(
            f"/v1/orders/{order_id}/shipments",
            json={"lines": [{"line": 0, "quantity": 2}], "shipment_id": "s1"},
        )
        assert shipped.status_code == 200, shipped.text
        await wait_until(lambda: len(sim.documents_of("R", "5001")) == 1, budget=BUDGET)
        (delivery,) = sim.documents_of("L", "5001")
        assert [(p.article, p.quantity) for p in delivery.positions] == [
            ("MUG-1", Decimal(2)),
            ("VERSAND", Decimal(1)),
        ]
        (invoice,) = sim.documents_of("R", "5001")
        assert invoice.totals()[0] == Decimal("29.90")
        # The rest ships: a second L and R with the remaining units only.
        shipped = await admin.post(
            f"/v1/orders/{order_id}/shipments",
            json={
                "lines": [{"line": 0, "quantity": 1}, {"line": 1, "quantity": 1}],
                "shipment_id": "s2",
            },
        )
        assert shipped.status_code == 200, shipped.text
        await wait_until(lambda: len(sim.documents_of("R", "5001")) == 2, budget=BUDGET)
        second = sim.documents_of("L", "5001")[1]
        assert [(p.article, p.quantity) for p in second.positions] == [
            ("MUG-1", Decimal(1)),
            ("CUP-2", Decimal(1)),
        ]
        assert all(p.taken_over == p.quantity for p in sales_order.positions)

        # The ERP's documents are on the order.
        async def documents() -> list[tuple[str, str]] | None:
            found = [
                (d["kind"], d["cause"])
                for d in (await order_view(admin, order_id))["erp_documents"]
            ]
            return found if len(found) >= 5 else None

        assert sorted(await eventually(daemon, "documents recorded", documents)) == sorted(
            [
                ("F", "order"),
                ("L", "shipment:s1"),
                ("R", "shipment:s1"),
                ("L", "shipment:s2"),
                ("R", "shipment:s2"),
            ]
        )

        # The bookkeeper books the first invoice's money: somsd records it on the order.
        sim.pay(invoice.key, Decimal("29.90"))

        async def paid() -> str | None:
            value = (await order_view(admin, order_id))["paid"]
            return value if Decimal(value) > 0 else None

        assert Decimal(await eventually(daemon, "paid", paid)) == Decimal("29.90")
        sim.pay(sim.documents_of("R", "5001")[1].key, Decimal("20.49"))
        await eventually(
            daemon,
            "paid in full",
            lambda: _equal(_paid(admin, order_id), Decimal("50.39")),
        )
        assert sim.logins == 1  # one session for everything


async def _paid(admin: httpx.AsyncClient, order_id: str) -> Decimal:
    return Decimal((await order_view(admin, order_id))["paid"])


async def _equal(value: Any, expected: Any) -> bool | None:
    return True if await value == expected else None


async def test_a_credit_note_becomes_a_g_and_a_cancellation_closes_the_f(
    tmp_path: Path, serve: Serve
) -> None:
    sim = seeded_sim()
    config = await erp_config(tmp_path, serve, sim)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        body = order_body(
            "6001",
            lines=[
                sample_line(quantity=2),
                sample_line(sku="CUP-2", quantity=1, unit_price="7.99"),
            ],
        )
        order_id = await accept(admin, body)  # paid by card: invoiced at once in somsd
        canceled = await admin.post(
            f"/v1/orders/{order_id}/cancel",
            json={"reason": "customer asked", "lines": [{"line": 1, "quantity": 1}]},
        )
        assert canceled.status_code == 200, canceled.text
        await wait_until(
            lambda: [len(d.positions) for d in sim.documents_of("G", "6001")] == [1], budget=BUDGET
        )
        (credit,) = sim.documents_of("G", "6001")
        assert [(p.article, p.quantity) for p in credit.positions] == [("CUP-2", Decimal(1))]
        assert credit.totals()[0] == Decimal("7.99")
        whole = await admin.post(f"/v1/orders/{order_id}/cancel", json={"reason": "all of it"})
        assert whole.status_code == 200, whole.text
        await wait_until(
            lambda: [d.status for d in sim.documents_of("F", "6001")] == ["3"], budget=BUDGET
        )
        assert len(sim.documents_of("F", "6001")) == 1
        del daemon


async def test_no_free_seat_is_retried_and_nothing_is_lost(tmp_path: Path, serve: Serve) -> None:
    sim = seeded_sim(seats=0)
    config = await erp_config(tmp_path, serve, sim)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        event = await daemon.wait_log("erp_problem")
        assert "no free SelectLine licence" in event["problem"]
        await accept(admin, order_body("7001"))
        await trio.sleep(0.3)
        assert not sim.documents_of("F")
        sim.knobs.seats = 1  # the other client logged out
        await wait_until(lambda: bool(sim.documents_of("F", "7001")), budget=BUDGET)
        assert sim.logins == 1


async def test_an_expired_login_costs_one_relogin(tmp_path: Path, serve: Serve) -> None:
    sim = seeded_sim()
    config = await erp_config(tmp_path, serve, sim)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        await wait_until(lambda: sim.logins == 1, budget=BUDGET)
        sim.expire_sessions()
        await accept(admin, order_body("7101"))
        await wait_until(lambda: bool(sim.documents_of("F", "7101")), budget=BUDGET)
        await trio.sleep(0.3)
        assert sim.logins == 2
        del daemon


async def test_a_wrong_password_is_a_clear_error_without_a_login_storm(
    tmp_path: Path, serve: Serve
) -> None:
    sim = seeded_sim()
    config = await erp_config(tmp_path, serve, sim)
    (tmp_path / "selectline.password").write_text("wrong\n")
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        event = await daemon.wait_log("erp_problem")
        assert "login refused" in event["problem"]
        assert "password file" in event["problem"]
        await accept(admin, order_body("7201"))
        await trio.sleep(1.0)  # ten stock polls, payment polls and the delivery's retries
        assert sim.login_attempts == 1
        assert (await admin.get("/readyz")).status_code == 200


async def test_bad_erp_data_is_skipped_per_row_and_counted(tmp_path: Path, serve: Serve) -> None:
    sim = seeded_sim()
    sim.extra_stock_rows.append(
        Stock(ArticleNumber="GHOST-9", Number="200", AvailableStock=Decimal(4))
    )
    sim.set_stock("CUP-2", "400", -3)
    config = await erp_config(
        tmp_path, serve, sim, extra='warehouses = ["999"]\nstock_location = "wh2"'
    )
    text = config.read_text().replace("[[erp]]", '[[location]]\nname = "wh2"\n\n[[erp]]', 1)
    config.write_text(text)
    async with running_daemon(config) as daemon, daemon.admin() as admin:
        expected = {"unknown_article", "negative_stock", "missing_warehouse"}

        def bad_rows_logged() -> bool:
            kinds = {e["kind"] for e in daemon.log if e.get("event") == "erp_bad_stock_row"}
            return kinds == expected

        with trio.fail_after(BUDGET):
            await daemon.wait_for("a bad stock row of each kind", bad_rows_logged)
        view = (await admin.get("/v1/inventory/CUP-2")).json()
        assert view["locations"]["wh"]["on_hand"] == 10  # the negative row skipped, not summed
        async with httpx.AsyncClient(base_url=daemon.metrics) as metrics:
            text = (await metrics.get("/metrics")).text
        assert 'somsd_erp_stock_rows_skipped_total{erp="sl",kind="negative_stock"}' in text


async def test_sigkills_and_lost_responses_never_double_or_drop_a_document(
    tmp_path: Path, serve: Serve
) -> None:
    # A killed daemon never logs out: the server frees its seat after the idle timeout.
    sim = seeded_sim(lost_response_rate=0.3, session_timeout=0.5)
    sim.set_stock("MUG-1", "200", 1000)
    config = await erp_config(tmp_path, serve, sim)
    numbers = [str(8000 + i) for i in range(21)]
    ids: list[str] = []
    for round_ in range(3):
        async with running_daemon(config) as daemon, daemon.admin() as admin:
            for number in numbers[round_ * 7 : (round_ + 1) * 7]:
                ids.append(await accept(admin, order_body(number)))
            for order_id in ids[-3:]:
                shipped = await admin.post(
                    f"/v1/orders/{order_id}/shipments",
                    json={"lines": [{"line": 0, "quantity": 2}], "shipment_id": f"s-{order_id}"},
                )
                assert shipped.status_code == 200, shipped.text
            await trio.sleep(0.2)  # in the middle of posting
            daemon.signal(signal.SIGKILL)
            await daemon.wait_exit()
    sim.knobs.lost_response_rate = 0.0
    async with running_daemon(config) as daemon:
        await wait_until(
            lambda: (
                {d.partner.BusinessPartnerContract for d in sim.documents_of("F") if d.partner}
                == set(numbers[:21])
                and all(any(p.kind == "A" for p in d.positions) for d in sim.documents_of("F"))
                and len(sim.documents_of("R")) == 9
            ),
            budget=BUDGET * 2,
        )
        await trio.sleep(0.5)  # anything still retrying would double now
        del daemon
    orders = sim.documents_of("F")
    assert len(orders) == len(numbers[:21])
    article_positions = {
        d.partner.BusinessPartnerContract if d.partner else d.key: [
            p.quantity for p in d.positions if p.kind == "A"
        ]
        for d in orders
    }
    assert all(len(quantities) == 1 for quantities in article_positions.values()), article_positions
    assert len(sim.documents_of("L")) == 9
    assert len(sim.documents_of("R")) == 9
    assert all(
        [p.quantity for p in d.positions if p.kind == "A"] == [2] for d in sim.documents_of("L")
    )

"""The console in a real browser: Playwright drives Debian's Chromium (`/usr/bin/chromium`,
never a downloaded browser) against a real `somsd run`. An operator logs in with the keyboard,
finds an order, reads its timeline and routing, releases a hold, looks at an old state of the
order and retries a dead letter; a store worker works a click & collect order through to the
handover with its code and cannot open another store's fulfilment. Screenshots of each page
go to var/artefacts/console/ for a person to look at."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from somsd.domain.order import Customer
from somsd.domain.testing import sample_line, sample_order
from tests.console.helpers import (
    HOSTILE_NAME,
    HOSTILE_SKU,
    INVALID_DOCUMENTS,
    STAFF_TOKEN,
    console_config,
)
from tests.harness import ADMIN_TOKEN, DaemonProcess
from tests.orders.shop import daemon_in_thread, intake_path, order_body, signed

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTEFACTS = Path(__file__).resolve().parents[2] / "var" / "artefacts" / "console"
# Real browser, real daemon: every wait is Playwright's, bounded by this (milliseconds).
WAIT_MS = 10_000

playwright_api = pytest.importorskip("playwright.sync_api")
axe_api = pytest.importorskip("axe_playwright_python.sync_playwright")
AXE = axe_api.Axe()
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's chromium is not installed (make system-deps)", allow_module_level=True)


def admin_client(daemon: DaemonProcess) -> httpx.Client:
    return httpx.Client(
        base_url=daemon.api, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10
    )


def take_in(client: httpx.Client, body: bytes) -> str:
    response = client.post(intake_path(), content=body, headers=signed(body))
    assert response.status_code == 202, response.text
    order_id: str = response.json()["order_id"]
    return order_id


def put_stock(client: httpx.Client, location: str, sku: str, on_hand: int) -> None:
    counts = [{"sku": sku, "on_hand": on_hand}]
    response = client.put(
        f"/v1/locations/{location}/stock",
        json={"as_of": datetime.now(UTC).isoformat(), "counts": counts},
    )
    assert response.status_code == 200, response.text


def until(what: str, condition: Any, budget: float = 10.0) -> Any:
    """Poll the daemon's HTTP API (it offers no event to this thread) until `condition()`."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    with daemon_in_thread(console_config(tmp_path)) as running:
        yield running


@pytest.fixture
def browser() -> Iterator[Any]:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str) -> None:
    """A screenshot for a person, and axe-core's accessibility rules (WCAG 2.1 A and AA:
    labels, contrast, landmarks, names of links and buttons) for the page: none may fail."""
    page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)
    results = AXE.run(page, options={"runOnly": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]})
    (ARTEFACTS / f"{name}.axe.txt").write_text(results.generate_report())
    failed = [
        f"{v['id']}: {v['help']} ({[n['target'] for n in v['nodes']]})"
        for v in results.response["violations"]
    ]
    assert failed == [], f"{name}: {failed}"


def test_operator_in_the_browser(daemon: DaemonProcess, browser: Any, tmp_path: Path) -> None:
    with admin_client(daemon) as admin:
        put_stock(admin, "store-essen", "MUG-1", 50)
        take_in(admin, order_body("B-100"))
        hostile = sample_order(
            external_id="B-666",
            customer=Customer(id="666", email="blocked@example.com", name=HOSTILE_NAME),
        )
        held = take_in(admin, msgspec.json.encode(hostile))
        put_stock(admin, "wh-csv", "CSV-1", 5)
        take_in(admin, order_body("B-200", lines=[sample_line(sku="CSV-1", quantity=1)]))
        until("a dead letter", lambda: admin.get("/v1/dead-letters").json()["dead_letters"])

        page = browser.new_page(locale="en-GB")
        page.set_default_timeout(WAIT_MS)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

        # log in with the keyboard only: the token field has focus, Tab to the name, Enter
        page.goto(daemon.api + "/console/")
        assert page.url.startswith(daemon.api + "/console/login")
        shot(page, "01-login")
        page.keyboard.type(ADMIN_TOKEN)
        page.keyboard.press("Tab")
        page.keyboard.type("Erika")
        page.keyboard.press("Enter")
        page.wait_for_url("**/console/orders")

        # find the order by the customer's e-mail
        page.get_by_label("Number, name or e-mail").fill("blocked@example.com")
        page.get_by_role("button", name="Search").click()
        page.wait_for_url("**q=blocked*")
        shot(page, "02-orders")
        page.get_by_role("link", name="B-666").click()
        page.wait_for_url(f"**/console/orders/{held}")
        assert page.get_by_role("heading", name="Timeline").is_visible()
        assert page.get_by_role("heading", name="Why here: routing").is_visible()
        assert HOSTILE_NAME in page.inner_text("main")  # shown as the text it is
        shot(page, "03-order-held")

        # release the hold with a reason
        page.get_by_label("Reason").fill("customer called, verified")
        page.get_by_role("button", name="Release").click()
        page.wait_for_url(f"**/console/orders/{held}")
        page.get_by_text("customer called, verified").first.wait_for()
        assert admin.get(f"/v1/orders/{held}").json()["status"] != "on-hold"
        shot(page, "04-order-released")

        # live: a change made elsewhere is announced on the open page, which keeps its input
        page.get_by_label("As of").fill("typing, not lost")
        changed = admin.post(
            f"/v1/orders/{held}/status", json={"status": "processing", "reason": "by phone"}
        )
        assert changed.status_code == 200, changed.text
        page.get_by_text("New changes since this page was loaded").wait_for()
        assert page.get_by_label("As of").input_value() == "typing, not lost"
        shot(page, "04b-order-live-banner")
        page.get_by_role("link", name="reload").click()
        page.get_by_text("by phone").first.wait_for()

        # an old state: the order as it was right after it was held
        page.locator("li", has_text="OrderHeld").get_by_role("link").click()
        page.get_by_text("The order as it was at").wait_for()
        assert "on-hold" in page.inner_text("h1")
        shot(page, "05-order-as-of")

        # the dead letter: inspect, fix the cause, retry
        page.get_by_role("link", name="Dead letters").click()
        page.get_by_text("not a folder").first.wait_for()
        shot(page, "06-dead-letters")
        (tmp_path / "blocker").unlink()
        (tmp_path / "blocker" / "out").mkdir(parents=True)
        page.get_by_role("button", name="Retry").first.click()
        page.get_by_text("Requeued").wait_for()
        until("the file", lambda: list((tmp_path / "blocker" / "out").glob("*.csv")))

        page.get_by_role("link", name="System").click()
        page.get_by_role("button", name="Reload config").click()
        page.get_by_text("Reload result").wait_for()
        shot(page, "07-system")

        # German by the switch
        page.get_by_role("link", name="DE", exact=True).click()
        page.get_by_role("heading", name="System").wait_for()
        assert page.get_by_role("button", name="Konfiguration neu laden").is_visible()
        assert dialogs == []  # no injected script ever ran


def test_store_worker_in_the_browser(daemon: DaemonProcess, browser: Any) -> None:
    with admin_client(daemon) as admin:
        put_stock(admin, "store-essen", "PICK-1", 5)
        put_stock(admin, "store-bochum", "PICK-1", 5)
        pickup = {"shipping_method": "pickup", "shipping_price": "0.00"}
        line = [sample_line(sku="PICK-1", quantity=1)]
        essen = take_in(
            admin, order_body("S-1", lines=line, pickup_location="store-essen", **pickup)
        )
        bochum = take_in(
            admin, order_body("S-2", lines=line, pickup_location="store-bochum", **pickup)
        )

        def fulfilment_of(order_id: str) -> dict[str, Any] | None:
            found = admin.get(f"/v1/orders/{order_id}").json()["fulfilment"]["fulfilments"]
            return found[0] if found else None

        mine = until("essen's fulfilment", lambda: fulfilment_of(essen))
        theirs = until("bochum's fulfilment", lambda: fulfilment_of(bochum))

        page = browser.new_page(locale="de-DE", viewport={"width": 1024, "height": 768})
        page.set_default_timeout(WAIT_MS)
        page.goto(daemon.api + "/console/login")
        page.get_by_label("Token").fill(STAFF_TOKEN)
        page.get_by_label("Ihr Name").fill("Sabine")
        page.get_by_role("button", name="Anmelden").click()
        page.wait_for_url("**/console/store")
        assert mine["id"] in page.content()
        assert theirs["id"] not in page.content()
        shot(page, "10-store-list")

        page.get_by_role("link", name="S-1").click()
        # the step buttons speak German, like the rest of the page
        for step in ("Annehmen", "Kommissioniert", "Verpackt", "Abholbereit"):
            page.get_by_role("button", name=step, exact=True).click()
            page.wait_for_load_state()
        shot(page, "11-store-ready")
        code = fulfilment_of(essen)["pickup_code"]  # type: ignore[index]
        assert code not in page.content()
        page.get_by_label("Abholcode des Kunden").fill(code)
        page.get_by_role("button", name="Übergeben", exact=True).click()
        page.get_by_text("Erledigt").wait_for()
        shot(page, "12-store-handed-over")
        assert admin.get(f"/v1/fulfillments/{mine['id']}").json()["state"] == "picked_up"

        response = page.goto(daemon.api + f"/console/store/{theirs['id']}")
        assert response is not None
        assert response.status == 403
        shot(page, "13-store-other-forbidden")


@pytest.fixture
def busy_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """The console's daemon with the own-fleet warehouse and invoices that fail validation."""
    config = console_config(tmp_path, van=True, documents=INVALID_DOCUMENTS)
    with daemon_in_thread(config) as running:
        yield running


def test_queues_stock_and_store_pages_in_the_browser(
    busy_daemon: DaemonProcess, browser: Any
) -> None:
    daemon = busy_daemon
    with admin_client(daemon) as admin:
        put_stock(admin, "store-essen", "MUG-1", 50)
        put_stock(admin, "store-essen", HOSTILE_SKU, 1)
        put_stock(admin, "store-bochum", "PICK-1", 5)
        put_stock(admin, "wh-van", "VAN-1", 10)
        plain = take_in(admin, order_body("Q-100"))
        take_in(admin, order_body("Q-300", lines=[sample_line(sku=HOSTILE_SKU, quantity=3)]))
        van_order = take_in(admin, order_body("Q-400", lines=[sample_line(sku="VAN-1")]))
        pickup = {"shipping_method": "pickup", "shipping_price": "0.00"}
        take_in(
            admin,
            order_body(
                "Q-500",
                lines=[sample_line(sku="PICK-1", quantity=1)],
                pickup_location="store-essen",
                **pickup,
            ),
        )
        until("the backorder", lambda: admin.get("/v1/backorders").json()["backorders"])
        until("a failed invoice", lambda: admin.get("/v1/documents/invalid").json(), budget=60)
        until(
            "the van's fulfilment",
            lambda: admin.get(f"/v1/orders/{van_order}").json()["fulfilment"]["fulfilments"],
        )
        until(
            "the transfer",
            lambda: admin.get("/v1/locations/store-essen/transfers-in").json()["transfers"],
        )

        page = browser.new_page(locale="en-GB")
        page.set_default_timeout(WAIT_MS)
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        page.goto(daemon.api + "/console/login")
        page.get_by_label("Token").fill(ADMIN_TOKEN)
        page.get_by_label("Your name").fill("Erika")
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/console/orders")

        page.get_by_role("link", name="Backorders").click()
        page.get_by_role("heading", name=f"SKU {HOSTILE_SKU}: 2 units waiting").or_(
            page.get_by_role("heading", name=f"SKU {HOSTILE_SKU}: 3 units waiting")
        ).wait_for()
        assert HOSTILE_SKU in page.inner_text("main")  # the text it is, not markup
        shot(page, "20-backorders")
        page.get_by_role("link", name="Q-300").click()
        page.get_by_role("heading", name="Backorders").wait_for()

        page.get_by_role("link", name="Failed documents").click()
        page.get_by_text("BR-S-02").first.wait_for()
        shot(page, "21-failed-documents")

        page.get_by_role("link", name="Stock").click()
        page.get_by_role("heading", name="Last reconciliation per channel").wait_for()
        assert page.get_by_role("rowheader", name="MUG-1").is_visible()
        shot(page, "22-stock")

        page.goto(daemon.api + f"/console/orders/{plain}")
        page.get_by_role("heading", name="Documents").wait_for()
        link = page.get_by_role("link", name="PDF", exact=False).first
        with page.expect_download() as download:
            link.click()
        assert download.value.suggested_filename.endswith(".pdf")
        shot(page, "23-order-documents")

        # pack at the van's warehouse: the label is bought, then downloaded from its page
        [van] = admin.get(f"/v1/orders/{van_order}").json()["fulfilment"]["fulfilments"]
        page.goto(daemon.api + f"/console/store/{van['id']}")
        page.get_by_role("button", name="Packed", exact=True).click()
        page.get_by_role("heading", name="Label").wait_for()
        until("the label", lambda: admin.get(f"/v1/fulfillments/{van['id']}/label").is_success)
        with page.expect_download() as download:
            page.get_by_role("link", name="Download the label").click()
        assert download.value.suggested_filename.endswith(".zpl")
        shot(page, "24-packed-label")

        page.get_by_role("link", name="Transfers in").click()
        page.get_by_label("Location").fill("store-essen")
        page.get_by_role("button", name="Filter").click()
        page.get_by_role("cell", name="store-bochum").wait_for()
        shot(page, "25-transfers-in")
        assert dialogs == []

        # the store's worker: her transfers in, her shelf, in German on a tablet
        tablet = browser.new_page(locale="de-DE", viewport={"width": 1024, "height": 768})
        tablet.set_default_timeout(WAIT_MS)
        tablet.goto(daemon.api + "/console/login")
        tablet.get_by_label("Token").fill(STAFF_TOKEN)
        tablet.get_by_role("button", name="Anmelden").click()
        tablet.wait_for_url("**/console/store")
        tablet.get_by_role("link", name="Eingehende Umlagerungen").click()
        tablet.get_by_role("cell", name="Q-500").wait_for()
        shot(tablet, "26-store-transfers-in")
        tablet.get_by_role("link", name="Bestand").click()
        tablet.get_by_role("rowheader", name="MUG-1").wait_for()
        assert "store-bochum" not in tablet.inner_text("main")
        shot(tablet, "27-store-stock")
        response = tablet.goto(daemon.api + "/console/stock?location=store-bochum")
        assert response is not None
        assert response.status == 403

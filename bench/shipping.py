"""Benchmark: DHL labels per second through the real pipeline of `somsd run`, against the DHL
simulator's own ceiling measured in the same run.

    .venv/bin/python bench/shipping.py [--parcels 200] [--format zpl|pdf] [--dir DIR]

1. Serves `adapters.dhl.simulator.DhlSimulator` on loopback in this process.
2. Ceiling: `DhlClient.create_label` straight at the simulator, as many requests at once as
   the carrier actor lets the dispatcher run (`actors.carrier.LABEL_CONCURRENCY`), `--parcels`
   labels: what the simulator and the client can do with nothing of somsd around them.
3. Pipeline: a real `somsd run` (fresh data dir, one webhook channel, one `manual` warehouse
   shipping with the simulator). `--parcels` orders are taken in and routed first; then every
   fulfilment is packed over the API at once, and the clock runs from the first pack to the
   last fulfilment shipped: per parcel the outbox row written with the pack, the delivery
   (attempt event, `POST /orders`, `label_stored` event with the label bytes) and the ship step
   (stock consumed, shipment recorded on the order, the shop's effects planned).
4. Checks the simulator sold exactly one label per parcel.

Use --dir to put the database on the disk under test; tmpfs makes fsync free.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from actors.carrier import LABEL_CONCURRENCY
from adapters.carrier import Party, ShipmentData
from adapters.dhl import DhlAuth, DhlClient
from adapters.dhl.simulator import SHIPPING_PREFIX, DhlSimulator
from somsd.config import ListenAddress
from somsd.domain.testing import sample_line, sample_order
from somsd.http import HttpListener
from somsd.secrets import Secret
from somsd.signing import SIGNATURE_HEADER, sign
from tests.harness import running_daemon, write_daemon_config

CONCURRENCY = LABEL_CONCURRENCY
SECRET = "bench-hmac-key"
SKU = "MUG-1"


async def ceiling(url: str, sim: DhlSimulator, parcels: int, label_format: str) -> float:
    sender = Party(name="Versand", street="Hafenstr. 1", zip="44147", city="Dortmund", country="DE")
    receiver = Party(name="Max", street="Hauptstr. 1", zip="10115", city="Berlin", country="DE")
    async with httpx.AsyncClient(timeout=30) as http:
        client = DhlClient(
            http,
            system="bench",
            shipping_url=url + SHIPPING_PREFIX,
            tracking_url=url + "/track",
            auth=DhlAuth(api_key=Secret(sim.api_key), user=sim.user, password=Secret(sim.password)),
        )
        todo = iter(range(parcels))
        started = time.perf_counter()

        async def worker() -> None:
            for n in todo:
                await client.create_label(
                    ShipmentData(
                        reference=f"ceiling-{n:08d}",
                        product="V01PAK",
                        billing_number="33333333330102",
                        shipper=sender,
                        consignee=receiver,
                        weight_grams=500,
                        ship_date=datetime.now(UTC).date(),
                        label_format="zpl" if label_format == "zpl" else "pdf",
                    )
                )

        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENCY):
                nursery.start_soon(worker)
        return parcels / (time.perf_counter() - started)


def config(directory: Path, url: str, sim: DhlSimulator, label_format: str) -> Path:
    (directory / "dhl.key").write_text(sim.api_key + "\n")
    (directory / "dhl.password").write_text(sim.password + "\n")
    (directory / "shop.secret").write_text(SECRET + "\n")
    return write_daemon_config(
        directory,
        f"""
[[channel]]
name = "shop"
kind = "webhook"
secret_file = "shop.secret"

[[location]]
name = "wh-1"
adapter = "manual"
ships_to = ["DE"]
carriers = ["dhl"]
sender = {{ name = "Versand", street = "Hafenstr. 1", zip = "44147", city = "Dortmund" }}
billing_numbers = {{ V01PAK = "33333333330102" }}
label_format = "{label_format}"

[[carrier]]
name = "dhl"
kind = "dhl-parcel-de"
url = "{url}{SHIPPING_PREFIX}"
tracking_url = "{url}/track"
api_key_file = "dhl.key"
user = "{sim.user}"
password_file = "dhl.password"
tracking_interval = "30m"
validate_addresses = false
""",
    )


async def count(admin: httpx.AsyncClient, state: str) -> list[dict[str, object]]:
    found: list[dict[str, object]] = []
    cursor: int | None = 0
    while cursor is not None:
        page = (
            await admin.get(
                "/v1/fulfillments",
                params={"location": "wh-1", "state": state, "limit": 500, "cursor": cursor},
            )
        ).json()
        found.extend(page["fulfillments"])
        cursor = page["next_cursor"]
    return found


async def pipeline(directory: Path, url: str, sim: DhlSimulator, parcels: int, fmt: str) -> float:
    path = config(directory, url, sim, fmt)
    async with running_daemon(path) as daemon, daemon.admin(timeout=60) as admin:
        await admin.put("/v1/locations/wh-1/stock", json=[{"sku": SKU, "on_hand": parcels * 2}])
        async with httpx.AsyncClient(base_url=daemon.api, timeout=60) as shop:
            for n in range(parcels):
                order = sample_order(external_id=f"bench-{n}", lines=[sample_line(sku=SKU)])
                body = msgspec.json.encode(order)
                signature = sign(SECRET.encode(), body, int(time.time()))
                answer = await shop.post(
                    "/v1/channels/shop/orders",
                    content=body,
                    headers={"Content-Type": "application/json", SIGNATURE_HEADER: signature},
                )
                assert answer.status_code == 202, answer.text
        todo: list[dict[str, object]] = []
        with trio.fail_after(120):
            for _ in range(1200):  # routing follows intake in the daemon: poll, bounded
                if len(todo := await count(admin, "requested")) >= parcels:
                    break
                await trio.sleep(0.1)
        limiter = trio.Semaphore(16)
        started = time.perf_counter()

        async def pack(fulfilment_id: object) -> None:
            async with limiter:
                answer = await admin.post(f"/v1/fulfillments/{fulfilment_id}/pack")
                assert answer.status_code == 200, answer.text

        async with trio.open_nursery() as nursery:
            for fulfilment in todo:
                nursery.start_soon(pack, fulfilment["id"])
        packed_after = time.perf_counter() - started
        print(f"  (all {parcels} packed after {packed_after:.2f} s)")
        with trio.fail_after(300):
            for _ in range(6000):
                if len(await count(admin, "shipped")) >= parcels:
                    break
                await trio.sleep(0.05)
        return parcels / (time.perf_counter() - started)


async def main(args: argparse.Namespace) -> None:
    sim = DhlSimulator()
    async with trio.open_nursery() as nursery:
        listener = HttpListener("dhl", sim, ListenAddress("127.0.0.1:0"), graceful_timeout=1)
        await nursery.start(listener.run)
        url = listener.urls[0]
        top = await ceiling(url, sim, args.parcels, args.format)
        bought = sim.created
        with tempfile.TemporaryDirectory(dir=args.dir) as directory:
            rate = await pipeline(Path(directory), url, sim, args.parcels, args.format)
        sold = sim.created - bought
        print(f"labels ({args.format}), {args.parcels} parcels, {CONCURRENCY} at once")
        print(f"  simulator ceiling (client alone): {top:8.1f} labels/s")
        print(f"  somsd pipeline (pack -> shipped): {rate:8.1f} labels/s ({rate / top:.0%})")
        print(f"  labels sold in the pipeline run:  {sold} (parcels: {args.parcels})")
        assert sold == args.parcels, "a parcel got more or fewer than one label"
        await listener.stop()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parcels", type=int, default=200)
    parser.add_argument("--format", choices=("zpl", "pdf"), default="zpl")
    parser.add_argument("--dir", default=None)
    trio.run(main, parser.parse_args())

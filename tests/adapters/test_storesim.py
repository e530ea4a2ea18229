"""The store simulator and its client, against a STAND-IN for somsd's manual fulfilment API.

The daemon does not serve `GET /v1/fulfillments` and `POST /v1/fulfillments/{id}/{step}` yet.
`StandInFulfilmentApi` below is a tiny in-memory app with the contract's routes and the bodies
proposed in `adapters/storesim/wire.py`, so the client and the simulator can be tested over a
real socket now. Replace it with the daemon's real routes (and delete it) once they exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

import httpx
import msgspec
import pytest
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters.errors import PermanentUpstreamError, TransientUpstreamError
from adapters.storesim import (
    FulfillmentGone,
    StepRefused,
    StoreClient,
    StoreKnobs,
    StoreSimulator,
    WorkItem,
    WorkLine,
    next_step,
)
from adapters.storesim.wire import FINAL_STATES, FulfillmentState

from .conftest import Serve, wait_until

TOKEN = "admin-token-for-tests"
BUDGET = 5.0  # real sockets, steps of a few milliseconds


class StandInFulfilmentApi:
    """STAND-IN for the daemon's `/v1/fulfillments` routes (see the module docstring)."""

    # step -> (states it is allowed from, state it leads to, kinds it applies to)
    ANY_KIND = frozenset({"ship", "pickup", "transfer"})
    STEPS: dict[str, tuple[frozenset[str], str, frozenset[str]]] = {
        "pick": (frozenset({"requested", "accepted"}), "picked", ANY_KIND),
        "pack": (frozenset({"picked"}), "packed", ANY_KIND),
        "ship": (frozenset({"packed"}), "shipped", frozenset({"ship", "transfer"})),
        "ready": (frozenset({"packed"}), "ready_for_pickup", frozenset({"pickup"})),
        "picked-up": (frozenset({"ready_for_pickup"}), "picked_up", frozenset({"pickup"})),
    }  # fmt: skip

    def __init__(self, items: list[WorkItem]) -> None:
        self.items = {item.id: item for item in items}
        self.posts: list[tuple[str, str, dict[str, object]]] = []
        self.outage = False

    def _refuse(self, status: int, code: str, message: str) -> Response:
        return JSONResponse({"error": {"code": code, "message": message}}, status)

    async def _guard(self, request: Request) -> Response | None:
        if self.outage:
            return self._refuse(503, "draining", "somsd is restarting")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return self._refuse(401, "unauthorized", "admin token required")
        return None

    async def list(self, request: Request) -> Response:
        if (refused := await self._guard(request)) is not None:
            return refused
        location, state = request.query_params.get("location"), request.query_params.get("state")
        page = [
            msgspec.to_builtins(item)
            for item in self.items.values()
            if item.location == location and (state is None or item.state == state)
        ]
        return JSONResponse({"fulfillments": page, "next_cursor": None})

    async def step(self, request: Request) -> Response:
        if (refused := await self._guard(request)) is not None:
            return refused
        fulfilment_id, step = request.path_params["id"], request.path_params["step"]
        item = self.items.get(fulfilment_id)
        if item is None:
            return self._refuse(404, "fulfillment_not_found", f"no fulfillment {fulfilment_id!r}")
        body = msgspec.json.decode(await request.body() or b"{}")
        self.posts.append((fulfilment_id, step, body))
        if step == "reject":
            rejected = {line["sku"]: line["quantity"] for line in body["lines"]}
            lines = tuple(
                WorkLine(line.sku, line.quantity - rejected.get(line.sku, 0))
                for line in item.lines
                if line.quantity > rejected.get(line.sku, 0)
            )
            state = item.state if lines else "rejected"
            item = msgspec.structs.replace(item, lines=lines, state=state)
        else:
            allowed_from, target, kinds = self.STEPS[step]
            if item.state not in allowed_from or item.kind not in kinds:
                return self._refuse(409, "illegal_step", f"cannot {step} from {item.state}")
            item = msgspec.structs.replace(item, state=target)
        self.items[fulfilment_id] = item
        return JSONResponse(msgspec.to_builtins(item))

    @property
    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/fulfillments", self.list, methods=["GET"]),
                Route("/v1/fulfillments/{id}/{step}", self.step, methods=["POST"]),
            ]
        )

    def all_final(self, location: str) -> bool:
        return all(
            item.state in FINAL_STATES for item in self.items.values() if item.location == location
        )


def item(
    fid: str,
    state: FulfillmentState = "requested",
    kind: Literal["ship", "pickup", "transfer"] = "ship",
    *lines: tuple[str, int],
) -> WorkItem:
    return WorkItem(
        id=fid,
        state=state,
        kind=kind,
        lines=tuple(WorkLine(sku, quantity) for sku, quantity in lines or (("MUG-1", 1),)),
        order_id=f"ord-{fid}",
        location="store-essen",
    )


@pytest.fixture
async def stand_in_client(serve: Serve) -> AsyncIterator[tuple[StandInFulfilmentApi, StoreClient]]:
    api = StandInFulfilmentApi(
        [
            item("f-ship", "requested", "ship", ("MUG-1", 2), ("TEE-M", 1)),
            item("f-pickup", "accepted", "pickup"),
            item("f-transfer", "requested", "transfer"),
            item("f-done", "shipped", "ship"),
            msgspec.structs.replace(item("f-elsewhere"), location="wh-dortmund"),
        ]
    )
    url, _ = await serve(api.app)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=2.0) as http:
        yield api, StoreClient(http, system="store-essen")


def fast(*, reject_rate: float = 0.0) -> StoreKnobs:
    """Staff working in milliseconds: real sockets, so real time, kept short."""
    return StoreKnobs(
        step_delay=0.002, collect_delay=0.002, poll_interval=0.005, reject_rate=reject_rate
    )


async def run_until_all_final(
    api: StandInFulfilmentApi, store: StoreSimulator, nursery: trio.Nursery
) -> None:
    await nursery.start(store.run)
    await wait_until(lambda: api.all_final("store-essen"), budget=BUDGET)


def test_next_step_follows_the_fulfilment_state() -> None:
    """Ship and transfer end in ship; pickup goes ready then picked-up; final states stop."""
    assert next_step(item("a", "requested")) == "pick"
    assert next_step(item("a", "packed", "ship")) == "ship"
    assert next_step(item("a", "packed", "transfer")) == "ship"
    assert next_step(item("a", "packed", "pickup")) == "ready"
    assert next_step(item("a", "ready_for_pickup", "pickup")) == "picked-up"
    assert next_step(item("a", "shipped")) is None


async def known_code(item: WorkItem) -> str:
    """The customer in these tests always brings the right code."""
    return "123456"


async def test_store_works_its_pick_list_to_final_states(
    stand_in_client: tuple[StandInFulfilmentApi, StoreClient], nursery: trio.Nursery
) -> None:
    """Every open fulfilment of the location is picked, packed and shipped or handed over."""
    api, client = stand_in_client
    store = StoreSimulator(client, "store-essen", knobs=fast(), customer_code=known_code)
    await run_until_all_final(api, store, nursery)
    done = {fid: [step for (i, step, _) in api.posts if i == fid] for fid in api.items}
    assert done == {
        "f-ship": ["pick", "pack", "ship"],
        "f-pickup": ["pick", "pack", "ready", "picked-up"],
        "f-transfer": ["pick", "pack", "ship"],
        "f-done": [],
        "f-elsewhere": [],  # another location's work
    }
    handover = next(body for (i, step, body) in api.posts if step == "picked-up")
    assert handover == {"pickup_code": "123456"}
    ship_body = next(body for (i, step, body) in api.posts if (i, step) == ("f-ship", "ship"))
    assert ship_body["carrier"] == "dhl"
    assert len(str(ship_body["tracking_number"])) == 20
    assert api.items["f-elsewhere"].state == "requested"
    assert store.errors == []


async def test_store_rejects_a_line_and_works_the_rest(
    stand_in_client: tuple[StandInFulfilmentApi, StoreClient], nursery: trio.Nursery
) -> None:
    """With an empty shelf a line is rejected first; what is left is still shipped, and a
    fulfilment with nothing left ends rejected."""
    api, client = stand_in_client
    store = StoreSimulator(
        client,
        "store-essen",
        knobs=fast(reject_rate=1.0),
        seed=1,
    )
    await run_until_all_final(api, store, nursery)
    rejections = [(i, body) for (i, step, body) in api.posts if step == "reject"]
    assert {i for i, _ in rejections} == {"f-ship", "f-pickup", "f-transfer"}
    assert all(body["reason"] == "stock_missing" for _, body in rejections)
    assert api.items["f-ship"].state == "shipped"  # one of two lines left
    assert len(api.items["f-ship"].lines) == 1
    assert api.items["f-pickup"].state == "rejected"  # its only line was rejected
    assert api.items["f-transfer"].state == "rejected"


async def test_client_translates_refusals_into_the_shared_kinds(
    stand_in_client: tuple[StandInFulfilmentApi, StoreClient], serve: Serve
) -> None:
    """409 is StepRefused, 404 FulfillmentGone, 401 permanent, 503 transient."""
    api, client = stand_in_client
    with pytest.raises(StepRefused, match="fetch the work list again"):
        await client.pack("f-ship")  # not picked yet
    with pytest.raises(FulfillmentGone):
        await client.pick("f-nope")
    api.outage = True
    with pytest.raises(TransientUpstreamError) as draining:
        await client.fetch_work("store-essen")
    assert draining.value.status_code == 503
    api.outage = False

    url, _ = await serve(api.app)
    async with httpx.AsyncClient(base_url=url) as anonymous:
        with pytest.raises(PermanentUpstreamError) as refused:
            await StoreClient(anonymous, system="store-essen").fetch_work("store-essen")
    assert refused.value.status_code == 401
    assert "credentials" in str(refused.value)


async def test_simulator_survives_an_outage_and_carries_on(
    stand_in_client: tuple[StandInFulfilmentApi, StoreClient], nursery: trio.Nursery
) -> None:
    """While somsd answers 503 the store notes the errors; afterwards it finishes the work."""
    api, client = stand_in_client
    api.outage = True
    store = StoreSimulator(client, "store-essen", knobs=fast(), customer_code=known_code)
    await nursery.start(store.run)
    await wait_until(lambda: bool(store.errors), budget=BUDGET)
    api.outage = False
    await wait_until(lambda: api.all_final("store-essen"), budget=BUDGET)
    assert "503" in store.errors[0]

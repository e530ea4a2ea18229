"""Routing by example: a table of orders against a small DE/AT/CH network."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from somsd.domain.geo import GeoPoint
from somsd.domain.routing import (
    EXACT_SEARCH_MAX_COMBINATIONS,
    Allocation,
    Destination,
    FulfilmentLocation,
    OrderLine,
    RoutingDecision,
    RoutingNetwork,
    RoutingPolicy,
    RoutingRequest,
    RoutingWeights,
    ShippingRate,
    route_order,
)

DE, AT, CH = "DE", "AT", "CH"

LOCATIONS = (
    FulfilmentLocation(
        name="wh-dortmund",
        kind="warehouse",
        country=DE,
        lat=51.51,
        lon=7.47,
        ships_to=frozenset({DE, AT, "NL"}),
        capabilities=frozenset({"ship"}),
        priority=1,
        daily_capacity=800,
        rates=(
            ShippingRate("dhl", 4.50, 1, frozenset({DE})),
            ShippingRate("dhl", 9.00, 2, frozenset({AT, "NL"})),
        ),
    ),
    FulfilmentLocation(
        name="wh-munich",
        kind="warehouse",
        country=DE,
        lat=48.14,
        lon=11.58,
        ships_to=frozenset({DE, AT, CH}),
        capabilities=frozenset({"ship"}),
        priority=2,
        daily_capacity=500,
        rates=(
            ShippingRate("dhl", 4.50, 1, frozenset({DE, AT})),
            ShippingRate("post-ch", 12.00, 3, frozenset({CH})),
        ),
    ),
    FulfilmentLocation(
        name="store-essen",
        kind="store",
        country=DE,
        lat=51.46,
        lon=7.01,
        ships_to=frozenset({DE}),
        capabilities=frozenset({"ship", "pickup"}),
        priority=3,
        daily_capacity=20,
        rates=(ShippingRate("dhl", 5.50, 2),),
    ),
    FulfilmentLocation(
        name="store-berlin",
        kind="store",
        country=DE,
        lat=52.52,
        lon=13.40,
        ships_to=frozenset(),
        capabilities=frozenset({"pickup"}),
        priority=3,
        daily_capacity=30,
    ),
)
NETWORK = RoutingNetwork(
    LOCATIONS,
    {
        "shop": ["wh-dortmund", "wh-munich", "store-essen", "store-berlin"],
        "b2b": ["wh-dortmund"],
    },
)

DORTMUND = Destination(DE, "44135")
MUNICH = Destination(DE, "80331")
ZURICH = Destination(CH, "8001")
ONLY_DISTANCE = RoutingWeights(distance=1, cost=0, speed=0, priority=0)
ONLY_PRIORITY = RoutingWeights(distance=0, cost=0, speed=0, priority=1)


@dataclass(frozen=True)
class Case:
    name: str
    lines: tuple[tuple[str, int], ...]
    stock: Mapping[str, Mapping[str, int]]  # {sku: {location: ATP}}
    expected: Mapping[str, tuple[tuple[str, int], ...]]  # {location: lines}
    destination: Destination | None = DORTMUND
    pickup_store: str | None = None
    channel: str = "shop"
    policy: RoutingPolicy = field(default_factory=RoutingPolicy)
    orders_today: Mapping[str, int] = field(default_factory=dict)
    backorders: tuple[tuple[str, int], ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)  # {location: reason}
    kinds: Mapping[str, str] = field(default_factory=dict)  # {location: allocation kind}


CASES = [
    Case(
        "nearest with stock wins",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 5, "wh-munich": 5}},
        destination=MUNICH,
        policy=RoutingPolicy(ONLY_DISTANCE),
        expected={"wh-munich": (("MUG", 1),)},
    ),
    Case(
        "nearest without stock is skipped",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 5}},
        destination=MUNICH,
        policy=RoutingPolicy(ONLY_DISTANCE),
        expected={"wh-dortmund": (("MUG", 1),)},
        rejected={"wh-munich": "no_stock", "store-essen": "no_stock"},
    ),
    Case(
        "priority weight changes the winner",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 5, "wh-munich": 5}},
        destination=MUNICH,
        policy=RoutingPolicy(ONLY_PRIORITY),
        expected={"wh-dortmund": (("MUG", 1),)},
    ),
    Case(
        "cost weight prefers the cheaper rate",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 5, "store-essen": 5}},
        destination=DORTMUND,
        policy=RoutingPolicy(RoutingWeights(distance=0, cost=1, speed=0, priority=0)),
        expected={"wh-dortmund": (("MUG", 1),)},
    ),
    Case(
        "distance weight prefers the store next door",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 5, "store-essen": 5}},
        destination=Destination(DE, "45127"),  # Essen
        policy=RoutingPolicy(ONLY_DISTANCE),
        expected={"store-essen": (("MUG", 1),)},
    ),
    Case(
        "one location that has everything beats a closer split",
        lines=(("MUG", 1), ("CUP", 1)),
        stock={"MUG": {"wh-dortmund": 1, "wh-munich": 1}, "CUP": {"wh-dortmund": 1}},
        destination=MUNICH,
        expected={"wh-dortmund": (("MUG", 1), ("CUP", 1))},
    ),
    Case(
        "split when allowed and needed",
        lines=(("MUG", 1), ("CUP", 1)),
        stock={"MUG": {"wh-dortmund": 1}, "CUP": {"wh-munich": 1}},
        expected={"wh-dortmund": (("MUG", 1),), "wh-munich": (("CUP", 1),)},
    ),
    Case(
        "no split when not allowed: the order is held whole",
        lines=(("MUG", 1), ("CUP", 1)),
        stock={"MUG": {"wh-dortmund": 1}, "CUP": {"wh-munich": 1}},
        policy=RoutingPolicy(allow_split=False),
        expected={},
        backorders=(("MUG", 1), ("CUP", 1)),
    ),
    Case(
        "a line's quantity may be split over locations",
        lines=(("MUG", 5),),
        stock={"MUG": {"wh-dortmund": 3, "wh-munich": 2}},
        expected={"wh-dortmund": (("MUG", 3),), "wh-munich": (("MUG", 2),)},
    ),
    Case(
        "max_locations caps the split; the rest is backordered",
        lines=(("MUG", 1), ("CUP", 1), ("PLATE", 1)),
        stock={
            "MUG": {"wh-dortmund": 1},
            "CUP": {"wh-munich": 1},
            "PLATE": {"store-essen": 1},
        },
        policy=RoutingPolicy(ONLY_DISTANCE, max_locations=2),
        expected={"wh-dortmund": (("MUG", 1),), "store-essen": (("PLATE", 1),)},
        backorders=(("CUP", 1),),
    ),
    Case(
        "max_locations 3 fills all three",
        lines=(("MUG", 1), ("CUP", 1), ("PLATE", 1)),
        stock={
            "MUG": {"wh-dortmund": 1},
            "CUP": {"wh-munich": 1},
            "PLATE": {"store-essen": 1},
        },
        policy=RoutingPolicy(max_locations=3),
        expected={
            "wh-dortmund": (("MUG", 1),),
            "wh-munich": (("CUP", 1),),
            "store-essen": (("PLATE", 1),),
        },
    ),
    Case(
        "a split fills first, then uses fewest locations",
        lines=(("MUG", 2), ("CUP", 2)),
        stock={
            "MUG": {"wh-dortmund": 2, "store-essen": 1},
            "CUP": {"wh-munich": 2, "store-essen": 1},
        },
        expected={"wh-dortmund": (("MUG", 2),), "wh-munich": (("CUP", 2),)},
    ),
    Case(
        "location at today's capacity is skipped",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 5, "wh-munich": 5}},
        orders_today={"wh-dortmund": 800},
        expected={"wh-munich": (("MUG", 1),)},
        rejected={"wh-dortmund": "at_capacity"},
    ),
    Case(
        "only locations shipping to the country are candidates",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 5, "wh-munich": 5}},
        destination=ZURICH,
        expected={"wh-munich": (("MUG", 1),)},
        rejected={
            "wh-dortmund": "does_not_ship_to_country",
            "store-essen": "does_not_ship_to_country",
        },
    ),
    Case(
        "only the channel's locations are candidates",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-munich": 5}},
        channel="b2b",
        expected={},
        backorders=(("MUG", 1),),
        rejected={"wh-munich": "not_serving_channel", "wh-dortmund": "no_stock"},
    ),
    Case(
        "a pickup-only store never ships",
        lines=(("MUG", 1),),
        stock={"MUG": {"store-berlin": 5}},
        destination=Destination(DE, "10115"),
        expected={},
        backorders=(("MUG", 1),),
        rejected={"store-berlin": "lacks_capability"},
    ),
    Case(
        "unfillable lines are backordered",
        lines=(("MUG", 1), ("GHOST", 2)),
        stock={"MUG": {"wh-dortmund": 5}},
        expected={"wh-dortmund": (("MUG", 1),)},
        backorders=(("GHOST", 2),),
    ),
    Case(
        "nothing in stock anywhere backorders everything",
        lines=(("GHOST", 2),),
        stock={},
        expected={},
        backorders=(("GHOST", 2),),
    ),
    Case(
        "repeated SKU lines are routed as one",
        lines=(("MUG", 1), ("MUG", 2)),
        stock={"MUG": {"wh-dortmund": 2, "wh-munich": 3}},
        expected={"wh-munich": (("MUG", 3),)},
    ),
    Case(
        "pickup store with stock fulfils the pickup",
        lines=(("MUG", 2),),
        stock={"MUG": {"store-berlin": 2, "wh-dortmund": 9}},
        destination=None,
        pickup_store="store-berlin",
        expected={"store-berlin": (("MUG", 2),)},
        kinds={"store-berlin": "pickup"},
    ),
    Case(
        "pickup store without stock gets a transfer from the nearest source",
        lines=(("MUG", 2),),
        stock={"MUG": {"wh-dortmund": 9, "wh-munich": 9}},
        destination=None,
        pickup_store="store-berlin",
        policy=RoutingPolicy(ONLY_DISTANCE),
        expected={"wh-dortmund": (("MUG", 2),)},  # Dortmund-Berlin 420 km, Munich-Berlin 505 km
        kinds={"wh-dortmund": "transfer"},
        rejected={"store-berlin": "no_stock"},
    ),
    Case(
        "pickup store with part of the stock gets the rest transferred",
        lines=(("MUG", 3), ("CUP", 1)),
        stock={"MUG": {"store-berlin": 1, "wh-munich": 9}, "CUP": {"store-berlin": 1}},
        destination=None,
        pickup_store="store-berlin",
        expected={"store-berlin": (("MUG", 1), ("CUP", 1)), "wh-munich": (("MUG", 2),)},
        kinds={"store-berlin": "pickup", "wh-munich": "transfer"},
    ),
    Case(
        "unknown pickup store backorders the order",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 9}},
        destination=None,
        pickup_store="store-atlantis",
        expected={},
        backorders=(("MUG", 1),),
        rejected={"store-atlantis": "unknown_location"},
    ),
    Case(
        "pickup store at capacity backorders instead of sending the customer elsewhere",
        lines=(("MUG", 1),),
        stock={"MUG": {"store-berlin": 9}},
        destination=None,
        pickup_store="store-berlin",
        orders_today={"store-berlin": 30},
        expected={},
        backorders=(("MUG", 1),),
        rejected={"store-berlin": "at_capacity"},
    ),
    Case(
        "a store without the pickup capability can not be the pickup store",
        lines=(("MUG", 1),),
        stock={"MUG": {"wh-dortmund": 9}},
        destination=None,
        pickup_store="wh-dortmund",
        expected={},
        backorders=(("MUG", 1),),
        rejected={"wh-dortmund": "lacks_capability"},
    ),
]


def route(case: Case) -> RoutingDecision:
    request = RoutingRequest(
        order_id="1042",
        channel=case.channel,
        lines=tuple(OrderLine(sku, quantity) for sku, quantity in case.lines),
        destination=case.destination,
        pickup_store=case.pickup_store,
    )
    return route_order(request, NETWORK, case.stock, case.orders_today, case.policy)


def allocated(decision: RoutingDecision) -> dict[str, tuple[tuple[str, int], ...]]:
    return {
        allocation.location: tuple((line.sku, line.quantity) for line in allocation.lines)
        for allocation in decision.allocations
    }


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_routing_table(case: Case) -> None:
    """Each row: the allocations, backorders and rejection reasons the rules call for."""
    decision = route(case)
    assert allocated(decision) == case.expected
    assert tuple((line.sku, line.quantity) for line in decision.backorders) == case.backorders
    reasons = {c.location: c.rejected for c in decision.candidates}
    for location, reason in case.rejected.items():
        assert reasons[location] == reason, decision.candidates
    for allocation in decision.allocations:
        assert allocation.kind == case.kinds.get(allocation.location, "ship")
        if allocation.kind == "transfer":
            assert allocation.deliver_to == case.pickup_store
    selected = {c.location for c in decision.candidates if c.selected}
    assert selected == set(case.expected)


def test_every_location_is_assessed_once_with_a_reason_or_a_score() -> None:
    """The stored decision explains every location: rejected with a reason, or scored."""
    decision = route(CASES[0])
    assert [c.location for c in decision.candidates] == list(NETWORK.location_names)
    for candidate in decision.candidates:
        assert (candidate.rejected is None) == (candidate.score is not None)
        if candidate.score is not None:
            components = (
                candidate.distance_component,
                candidate.cost_component,
                candidate.speed_component,
                candidate.priority_component,
            )
            assert all(0.0 <= c <= 1.0 for c in components)


def test_lower_score_wins_and_components_are_ratios_to_the_largest() -> None:
    """Components divide by the largest eligible value; the chosen location scores lowest."""
    decision = route(CASES[0])
    scored = {c.location: c for c in decision.candidates if c.score is not None}
    munich, dortmund = scored["wh-munich"], scored["wh-dortmund"]
    assert dortmund.distance_component == 1.0
    assert munich.distance_km is not None
    assert dortmund.distance_km is not None
    assert munich.distance_component == pytest.approx(munich.distance_km / dortmund.distance_km)
    assert munich.selected
    assert munich.score is not None
    assert dortmund.score is not None
    assert munich.score < dortmund.score


def test_best_rate_for_the_destination_country_is_used() -> None:
    """Each location's carrier is its best rate to the destination country."""
    decision = route(CASES[0])  # to Munich (DE)
    munich = next(c for c in decision.candidates if c.location == "wh-munich")
    assert (munich.carrier, munich.cost, munich.days) == ("dhl", 4.5, 1.0)
    to_zurich = Case("", (("MUG", 1),), {"MUG": {"wh-munich": 1}}, {}, destination=ZURICH)
    swiss = route(to_zurich)
    assert allocated(swiss) == {"wh-munich": (("MUG", 1),)}
    assert swiss.allocations[0].carrier == "post-ch"


def test_decision_is_a_storable_event() -> None:
    """The decision encodes to JSON with its tag and decodes back to an equal value."""
    decision = route(CASES[6])
    encoded = msgspec.json.encode(decision)
    assert b'"type":"routing_decided"' in encoded
    assert msgspec.json.decode(encoded, type=RoutingDecision) == decision


def test_destination_source_records_how_the_customer_was_located() -> None:
    """Postcode region, country fallback, or a geocoded point from the shop."""
    assert route(CASES[0]).destination_source == "DE:80"
    france = RoutingRequest("1", "shop", (OrderLine("MUG", 1),), Destination("FR", "75001"))
    decision = route_order(france, NETWORK, {}, {}, RoutingPolicy())
    assert decision.destination_source == "FR"
    pinned = RoutingRequest(
        "1", "shop", (OrderLine("MUG", 1),), Destination(DE, None, GeoPoint(51.5, 7.4))
    )
    assert route_order(pinned, NETWORK, {}, {}, RoutingPolicy()).destination_source == "address"


def test_unknown_destination_drops_the_distance_component() -> None:
    """Without a centroid, distance can not rank anyone, so it scores 0 for everyone."""
    request = RoutingRequest("1", "shop", (OrderLine("MUG", 1),), Destination("ZZ", "1"))
    network = RoutingNetwork(
        [
            FulfilmentLocation(
                "wh", "warehouse", DE, 51.0, 7.0, frozenset({"ZZ"}), frozenset({"ship"})
            )
        ],
        {"shop": ["wh"]},
    )
    decision = route_order(request, network, {"MUG": {"wh": 1}}, {}, RoutingPolicy())
    assert decision.destination_source is None
    [candidate] = decision.candidates
    assert (candidate.distance_km, candidate.distance_component) == (None, 0.0)
    assert allocated(decision) == {"wh": (("MUG", 1),)}


@pytest.mark.parametrize(
    "request_",
    [
        RoutingRequest("1", "shop", (), DORTMUND),
        RoutingRequest("1", "shop", (OrderLine("MUG", 0),), DORTMUND),
        RoutingRequest("1", "shop", (OrderLine("MUG", 1),)),
        RoutingRequest("1", "shop", (OrderLine("MUG", 1),), DORTMUND, "store-berlin"),
    ],
    ids=["no lines", "zero quantity", "no destination", "both destination and pickup"],
)
def test_malformed_requests_are_refused(request_: RoutingRequest) -> None:
    """A request that is not a routable order is a caller bug, reported at once."""
    with pytest.raises(ValueError, match=r"line|quantity|exactly one"):
        route_order(request_, NETWORK, {}, {}, RoutingPolicy())


def test_policy_and_network_reject_bad_config() -> None:
    """Config errors name the key and the fix."""
    with pytest.raises(ValueError, match="max_locations"):
        RoutingPolicy(max_locations=0)
    with pytest.raises(ValueError, match=r"weights\.cost"):
        RoutingWeights(cost=-1)
    with pytest.raises(ValueError, match="not configured"):
        RoutingNetwork(LOCATIONS, {"shop": ["wh-nowhere"]})


# --- split search at scale ----------------------------------------------------------------


def grid_network(count: int) -> RoutingNetwork:
    """`count` warehouses on a rough grid over Germany, all serving "shop", shipping to DE."""
    locations = [
        FulfilmentLocation(
            name=f"wh-{n:02d}",
            kind="warehouse",
            country=DE,
            lat=47.5 + (n % 7) * 1.1,
            lon=6.5 + (n // 7) * 1.2,
            ships_to=frozenset({DE}),
            capabilities=frozenset({"ship"}),
            priority=1 + n % 3,
            rates=(ShippingRate("dhl", 4.5 + n % 4, 1 + n % 2),),
        )
        for n in range(count)
    ]
    return RoutingNetwork(locations, {"shop": [location.name for location in locations]})


def test_large_split_searches_fall_back_to_greedy_and_still_fill() -> None:
    """Beyond the exact-search budget the greedy search runs and respects max_locations."""
    network = grid_network(50)
    names = network.location_names
    # Every warehouse holds one unit of one of three SKUs: all 50 are candidates, and an order
    # of all three SKUs needs three of them.
    stock = {f"SKU-{k}": {name: 1 for n, name in enumerate(names) if n % 3 == k} for k in range(3)}
    request = RoutingRequest(
        "1", "shop", tuple(OrderLine(f"SKU-{k}", 1) for k in range(3)), DORTMUND
    )
    policy = RoutingPolicy(max_locations=3)
    decision = route_order(request, network, stock, {}, policy)
    assert decision.search == "greedy"
    assert decision.fill == "complete"
    assert len(decision.allocations) <= 3
    exact = route_order(request, network, stock, {}, RoutingPolicy(max_locations=2))
    assert exact.search == "exact"  # every pair of 50 locations fits the budget
    assert len(exact.allocations) == 2
    assert exact.fill == "partial"


def test_exact_budget_covers_every_pair_of_fifty_locations() -> None:
    """The default max_locations = 2 is always searched exactly for up to 50 locations."""
    assert EXACT_SEARCH_MAX_COMBINATIONS >= 50 + 50 * 49 // 2


def test_exact_split_prefers_the_lower_summed_score() -> None:
    """Among two-location covers, the pair with the lowest total score wins."""
    network = grid_network(6)
    names = network.location_names
    stock = {"A": {name: 1 for name in names}, "B": {name: 1 for name in names}}
    request = RoutingRequest("1", "shop", (OrderLine("A", 2), OrderLine("B", 1)), DORTMUND)
    decision = route_order(request, network, stock, {}, RoutingPolicy())
    assert decision.search == "exact"
    chosen = {a.location for a in decision.allocations}
    scores = {c.location: c.score for c in decision.candidates if c.score is not None}
    best_two = sorted(scores, key=lambda name: scores[name])[:2]
    assert chosen == set(best_two)


# --- properties ---------------------------------------------------------------------------

SKUS = ("A", "B", "C", "D")


@settings(max_examples=200, deadline=None)
@given(
    stock=st.dictionaries(
        st.sampled_from(SKUS),
        st.dictionaries(st.sampled_from(NETWORK.location_names), st.integers(-2, 4)),
    ),
    lines=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 5)), min_size=1, max_size=4),
    destination=st.sampled_from([DORTMUND, MUNICH, ZURICH, None]),
    allow_split=st.booleans(),
    max_locations=st.integers(1, 3),
    orders_today=st.dictionaries(st.sampled_from(NETWORK.location_names), st.integers(0, 900)),
)
def test_decisions_never_allocate_more_than_atp_and_account_for_every_unit(
    *,
    stock: dict[str, dict[str, int]],
    lines: list[tuple[str, int]],
    destination: Destination | None,
    allow_split: bool,
    max_locations: int,
    orders_today: dict[str, int],
) -> None:
    """Allocated + backordered = ordered; no location gets more than its ATP; only eligible
    locations are used; a delivery uses at most max_locations locations."""
    request = RoutingRequest(
        "1",
        "shop",
        tuple(OrderLine(sku, quantity) for sku, quantity in lines),
        destination,
        None if destination is not None else "store-berlin",
    )
    policy = RoutingPolicy(allow_split=allow_split, max_locations=max_locations)
    decision = route_order(request, NETWORK, stock, orders_today, policy)
    ordered: dict[str, int] = {}
    for sku, quantity in lines:
        ordered[sku] = ordered.get(sku, 0) + quantity
    accounted: dict[str, int] = {}
    for allocation in (*decision.allocations, Allocation("backorder", "ship", decision.backorders)):
        for line in allocation.lines:
            accounted[line.sku] = accounted.get(line.sku, 0) + line.quantity
            if allocation.location != "backorder":
                assert line.quantity <= max(stock.get(line.sku, {}).get(allocation.location, 0), 0)
    assert accounted == ordered
    eligible = {c.location for c in decision.candidates if c.rejected is None}
    sources = [a for a in decision.allocations if a.kind != "pickup"]
    assert {a.location for a in decision.allocations} <= eligible
    assert len(sources) <= max_locations
    if not allow_split:
        assert len(sources) <= 1
        assert not (sources and decision.backorders) or destination is None

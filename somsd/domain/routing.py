"""Where an order is fulfilled: candidates, scores, one location or a split, backorders.

`route_order` takes an order's lines and destination (or the pickup store the customer chose),
the channel, ATP per SKU and location, today's order counts and the routing policy, and returns
a `RoutingDecision`. It decides and changes nothing: the inventory actor reserves what the
decision allocates (`atp.reserve_stock`, all-or-nothing per allocation) and the decision is
stored as an event, with every location's assessment, so "why did this go to Essen?" has an
answer later.

Candidates. Every configured location is assessed, in this order, and the first failed check is
its rejection reason: it serves the order's channel; it has the capability the order needs (ship
for deliveries and transfers, pickup for the pickup store); it ships to the destination country;
it is under today's capacity; it has ATP > 0 for at least one line.

Score (lower is better). score = sum(weight_k * component_k) over distance, cost, speed and
priority. Each component is the candidate's raw value divided by the largest raw value among the
order's eligible candidates, so it lies in [0, 1], a free or zero value scores 0, and proportions
survive: 100 km against 101 km stays a 1 % difference, where min-max scaling would turn it into
0 against 1. Raw values: great-circle km from the location to the destination's postcode centroid
(`geo`); cost and days of the location's best rate to the destination country; the configured
priority number (1 = most preferred). A component that is equal everywhere, or unknown everywhere
(no postcode centroid, no rate table), is 0 for everyone and drops out; a location without a rate
where others have one is charged the worst known cost and days. A weight of 0 turns a criterion
off; weight 2 counts twice as much as weight 1. Ties go to the lower priority number, then name.

Choice, in order of preference:
1. one location that can fill every line (fewest shipments), lowest score;
2. with `allow_split`: the set of at most `max_locations` locations that fills the most units,
   then uses the fewest locations, then has the lowest summed score. A line may be split over
   locations. Found by exhaustive search over combinations while there are at most
   `EXACT_SEARCH_MAX_COMBINATIONS` of them, otherwise greedily (take the location adding the
   most units, ties by score, `max_locations` times: O(max_locations x locations x lines));
3. what no allowed set can fill is backordered. Without `allow_split` an order no single
   location can fill is held whole (backordered), because shipping part now and the rest later
   is itself a split.
Filling now ranks above fewer parcels: a customer waits longer for a backorder than for a second
parcel.

Pickup orders: the pickup store allocates what it has; the rest is transferred to it from other
locations, chosen like a delivery to the store's coordinates and country (transfer sources count
against `max_locations`; the store does not). A pickup store that is unknown, does not serve the
channel, lacks the pickup capability or is at capacity gets nothing and the order is backordered
with that reason: the customer chose the store, so no other store may stand in.

Lines are identified by SKU; two lines of the same SKU are merged (and must be, or each would be
checked against the same ATP alone).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from math import comb
from typing import Literal

import msgspec

from somsd.domain.geo import (
    SHIPPED_CENTROIDS,
    Centroid,
    CentroidTable,
    GeoPoint,
    haversine_km,
    normalise_country,
)

__all__ = [
    "EXACT_SEARCH_MAX_COMBINATIONS",
    "Allocation",
    "CandidateAssessment",
    "Destination",
    "FulfilmentLocation",
    "OrderLine",
    "RoutingDecision",
    "RoutingNetwork",
    "RoutingPolicy",
    "RoutingRequest",
    "RoutingWeights",
    "ShippingRate",
    "route_order",
]

# Exhaustive split search stops being worth it past this many location sets. Measured with
# bench/routing.py's machine (one Xeon core, CPython 3.11): a set costs ~0.4 us once pruned and
# ~0.8 us when its lines are summed, and a split decision over all 1,275 sets of 50 locations
# (pairs plus singles) took at most ~1 ms including screening. 2,000 keeps the worst exact search
# near 1.5 ms and covers every pair of 50 locations - the contract's default `max_locations = 2`
# is always exact - while max_locations >= 3 over more than 22 stocked locations goes greedy.
EXACT_SEARCH_MAX_COMBINATIONS = 2_000

LocationKind = Literal["warehouse", "store"]
Capability = Literal["ship", "pickup"]


# --------------------------------------------------------------------------------------------
# Configuration (built by the composition root from `[[location]]`, `[[channel]]`, `[routing]`)


class ShippingRate(msgspec.Struct, frozen=True):
    """One carrier service from a location: `cost` per parcel (currency units, used only to
    rank, never to bill) and `days` to deliver. `countries=None` means every country the
    location ships to."""

    carrier: str
    cost: float
    days: float
    countries: frozenset[str] | None = None


class FulfilmentLocation(msgspec.Struct, frozen=True):
    """The routing view of one `[[location]]`."""

    name: str
    kind: LocationKind
    country: str
    lat: float
    lon: float
    ships_to: frozenset[str]
    capabilities: frozenset[Capability]
    priority: int = 1
    daily_capacity: int | None = None  # None: no limit
    rates: tuple[ShippingRate, ...] = ()


class RoutingWeights(msgspec.Struct, frozen=True):
    """How much each normalised component counts; 0 turns one off."""

    distance: float = 1.0
    cost: float = 1.0
    speed: float = 1.0
    priority: float = 1.0

    def __post_init__(self) -> None:
        for name in ("distance", "cost", "speed", "priority"):
            if getattr(self, name) < 0:
                raise ValueError(f"routing.weights.{name} must be >= 0 (0 turns it off)")


class RoutingPolicy(msgspec.Struct, frozen=True):
    """`[routing]` from the config."""

    weights: RoutingWeights = RoutingWeights()
    allow_split: bool = True
    max_locations: int = 2

    def __post_init__(self) -> None:
        if self.max_locations < 1:
            raise ValueError("routing.max_locations must be >= 1")


class _Site:
    """A location's features precomputed once per config, so a decision only looks them up."""

    __slots__ = (
        "can_pickup",
        "can_ship",
        "capacity",
        "channels",
        "country",
        "index",
        "name",
        "point",
        "priority",
        "rates_by_country",
        "rates_everywhere",
        "ships_to",
    )

    def __init__(self, index: int, location: FulfilmentLocation, channels: frozenset[str]) -> None:
        if location.priority < 0:
            raise ValueError(f"location {location.name!r}: priority must be >= 0")
        self.index = index
        self.name = location.name
        self.country = normalise_country(location.country)
        self.point = GeoPoint(location.lat, location.lon)
        self.ships_to = frozenset(normalise_country(code) for code in location.ships_to)
        self.can_ship = "ship" in location.capabilities
        self.can_pickup = "pickup" in location.capabilities
        self.capacity = location.daily_capacity
        self.priority = location.priority
        self.channels = channels
        everywhere: list[tuple[str, float, float]] = []
        by_country: dict[str, list[tuple[str, float, float]]] = {}
        for rate in location.rates:
            entry = (rate.carrier, rate.cost, rate.days)
            if rate.countries is None:
                everywhere.append(entry)
            else:
                for code in rate.countries:
                    by_country.setdefault(normalise_country(code), []).append(entry)
        self.rates_everywhere = tuple(everywhere)
        self.rates_by_country = {code: tuple(rates) for code, rates in by_country.items()}

    def rates_to(self, country: str) -> tuple[tuple[str, float, float], ...]:
        return self.rates_by_country.get(country, ()) + self.rates_everywhere


class RoutingNetwork:
    """Locations, who serves which channel, and distances to every known centroid.

    Build once per config (load and reload). Distances from each location to every point of
    the centroid table and to every location are computed here - about 17,000 haversines for
    50 locations, ~10 ms - so a decision reads a tuple instead of doing 50 trigonometric
    evaluations.
    """

    __slots__ = ("_by_name", "_centroids", "_distances", "_sites")

    def __init__(
        self,
        locations: Sequence[FulfilmentLocation],
        channel_locations: Mapping[str, Iterable[str]],
        centroids: CentroidTable = SHIPPED_CENTROIDS,
    ) -> None:
        names = [location.name for location in locations]
        if len(set(names)) != len(names):
            raise ValueError("location names must be unique")
        serves: dict[str, set[str]] = {name: set() for name in names}
        for channel, members in channel_locations.items():
            for member in members:
                if member not in serves:
                    raise ValueError(
                        f"channel {channel!r} lists location {member!r}, which is not configured"
                    )
                serves[member].add(channel)
        self._sites = tuple(
            _Site(index, location, frozenset(serves[location.name]))
            for index, location in enumerate(locations)
        )
        self._by_name = {site.name: site for site in self._sites}
        self._centroids = centroids
        # Customers are located on centroid points; transfers go to a location's own point.
        targets = {*centroids.points(), *(site.point for site in self._sites)}
        self._distances: dict[GeoPoint, tuple[float, ...]] = {
            point: tuple(haversine_km(site.point, point) for site in self._sites)
            for point in targets
        }

    @property
    def location_names(self) -> tuple[str, ...]:
        return tuple(site.name for site in self._sites)

    def locate(self, country: str, postcode: str | None) -> Centroid | None:
        return self._centroids.locate(country, postcode)

    def distances_to(self, point: GeoPoint) -> tuple[float, ...]:
        """km from every location (in config order) to a point."""
        known = self._distances.get(point)
        if known is not None:
            return known
        return tuple(haversine_km(site.point, point) for site in self._sites)


# --------------------------------------------------------------------------------------------
# Request and decision


class OrderLine(msgspec.Struct, frozen=True):
    sku: str
    quantity: int


class Destination(msgspec.Struct, frozen=True):
    """Where a delivery goes. `point` (if the shop geocoded the address) beats the postcode."""

    country: str
    postcode: str | None = None
    point: GeoPoint | None = None


class RoutingRequest(msgspec.Struct, frozen=True):
    """One order to route: a delivery (`destination`) or a pickup (`pickup_store`), not both."""

    order_id: str
    channel: str
    lines: tuple[OrderLine, ...]
    destination: Destination | None = None
    pickup_store: str | None = None


AllocationKind = Literal["ship", "pickup", "transfer"]


class Allocation(msgspec.Struct, frozen=True, omit_defaults=True):
    """Lines one location fulfils. A transfer goes to `deliver_to` (the pickup store)."""

    location: str
    kind: AllocationKind
    lines: tuple[OrderLine, ...]
    carrier: str | None = None
    deliver_to: str | None = None


RejectionReason = Literal[
    "unknown_location",
    "not_serving_channel",
    "lacks_capability",
    "does_not_ship_to_country",
    "at_capacity",
    "no_stock",
]
CandidateRole = Literal["ship", "pickup", "transfer"]


class CandidateAssessment(msgspec.Struct, frozen=True, omit_defaults=True):
    """One location as the router saw it: why it was rejected, or its score and components.

    Raw values (km, cost, days, priority) sit next to their normalised components so a stored
    decision can be re-explained without the config it was made under. `omit_defaults` because
    every decision stores one per location: a rejected one encodes to ~70 bytes, not ~300.
    """

    location: str
    role: CandidateRole
    rejected: RejectionReason | None
    selected: bool
    fillable_units: int = 0
    fills_order: bool = False
    distance_km: float | None = None
    carrier: str | None = None
    cost: float | None = None
    days: float | None = None
    priority: int | None = None
    distance_component: float = 0.0
    cost_component: float = 0.0
    speed_component: float = 0.0
    priority_component: float = 0.0
    score: float | None = None


SearchKind = Literal["single", "exact", "greedy", "none"]
Fill = Literal["complete", "partial", "none"]


class RoutingDecision(msgspec.Struct, frozen=True, tag="routing_decided"):
    """The router's answer, stored as an event.

    `search` says how the allocation was found: "single" (one location filled everything, or
    splitting was not allowed), "exact"/"greedy" (split search), "none" (nobody eligible).
    `destination_source` names the centroid row used for distances (`DE:44`, `FR`), or None
    when the destination could not be located.
    """

    order_id: str
    channel: str
    fill: Fill
    search: SearchKind
    allocations: tuple[Allocation, ...]
    backorders: tuple[OrderLine, ...]
    candidates: tuple[CandidateAssessment, ...]
    destination_source: str | None
    weights: RoutingWeights
    allow_split: bool
    max_locations: int


# --------------------------------------------------------------------------------------------
# Assessment


class _Candidate:
    """A location that passed every filter, with what it can fill and how it scores."""

    __slots__ = (
        "carrier",
        "components",
        "cost",
        "days",
        "distance",
        "fills",
        "fills_order",
        "rank",
        "score",
        "site",
        "units",
    )

    def __init__(self, site: _Site, fills: tuple[int, ...], units: int, fills_order: bool) -> None:
        self.site = site
        self.fills = fills  # per line: min(quantity, ATP here)
        self.units = units
        self.fills_order = fills_order
        self.distance: float | None = None
        self.carrier: str | None = None
        self.cost: float | None = None
        self.days: float | None = None
        self.components = (0.0, 0.0, 0.0, 0.0)
        self.score = 0.0
        self.rank: tuple[float, int, str] = (0.0, 0, "")


def _screen(
    network: RoutingNetwork,
    *,
    channel: str,
    country: str,
    exclude: str | None,
    lines: Sequence[tuple[str, int]],
    availability: Mapping[str, Mapping[str, int]],
    orders_today: Mapping[str, int],
) -> tuple[list[_Candidate], dict[str, RejectionReason]]:
    """Split every location that could ship (except `exclude`) into candidates and rejections.

    Pickup stores are checked in `_route_pickup`; everything screened here ships (to the
    customer or, as a transfer, to the pickup store).
    """
    per_line = [availability.get(sku, {}) for sku, _ in lines]
    quantities = [quantity for _, quantity in lines]
    total = sum(quantities)
    eligible: list[_Candidate] = []
    rejected: dict[str, RejectionReason] = {}
    for site in network._sites:
        name = site.name
        if name == exclude:
            continue
        if channel not in site.channels:
            rejected[name] = "not_serving_channel"
        elif not site.can_ship:
            rejected[name] = "lacks_capability"
        elif country not in site.ships_to:
            rejected[name] = "does_not_ship_to_country"
        elif site.capacity is not None and orders_today.get(name, 0) >= site.capacity:
            rejected[name] = "at_capacity"
        else:
            fills = tuple(
                min(quantity, max(stock.get(name, 0), 0))
                for quantity, stock in zip(quantities, per_line, strict=True)
            )
            units = sum(fills)
            if units == 0:
                rejected[name] = "no_stock"
            else:
                eligible.append(_Candidate(site, fills, units, units == total))
    return eligible, rejected


def _score(
    candidates: Sequence[_Candidate],
    *,
    distances: tuple[float, ...] | None,
    country: str,
    weights: RoutingWeights,
) -> None:
    """Pick each candidate's rate and compute its normalised components and score."""
    if not candidates:
        return
    offers = [candidate.site.rates_to(country) for candidate in candidates]
    max_cost = max((cost for rates in offers for _, cost, _ in rates), default=0.0)
    max_days = max((days for rates in offers for _, _, days in rates), default=0.0)

    def normalise(value: float, largest: float) -> float:
        return value / largest if largest > 0 else 0.0

    for candidate, rates in zip(candidates, offers, strict=True):
        if rates:
            carrier, cost, days = min(
                rates,
                key=lambda rate: (
                    weights.cost * normalise(rate[1], max_cost)
                    + weights.speed * normalise(rate[2], max_days),
                    rate[1],
                    rate[0],
                ),
            )
            candidate.carrier, candidate.cost, candidate.days = carrier, cost, days
        if distances is not None:
            candidate.distance = distances[candidate.site.index]
    max_distance = max((c.distance or 0.0 for c in candidates), default=0.0)
    max_priority = max(c.site.priority for c in candidates)
    for candidate in candidates:
        # Unknown cost/days where others are known: charged the worst known (component 1).
        distance_c = normalise(candidate.distance or 0.0, max_distance)
        cost_c = normalise(max_cost if candidate.cost is None else candidate.cost, max_cost)
        speed_c = normalise(max_days if candidate.days is None else candidate.days, max_days)
        priority_c = normalise(candidate.site.priority, max_priority)
        candidate.components = (distance_c, cost_c, speed_c, priority_c)
        candidate.score = (
            weights.distance * distance_c
            + weights.cost * cost_c
            + weights.speed * speed_c
            + weights.priority * priority_c
        )
        candidate.rank = (candidate.score, candidate.site.priority, candidate.site.name)


# --------------------------------------------------------------------------------------------
# Choosing locations


def _set_fill(members: Sequence[_Candidate], quantities: Sequence[int]) -> int:
    filled = 0
    for line, quantity in enumerate(quantities):
        available = 0
        for member in members:
            available += member.fills[line]
        filled += quantity if available >= quantity else available
    return filled


def _exact_split(
    candidates: Sequence[_Candidate], quantities: Sequence[int], max_locations: int
) -> list[_Candidate]:
    """The set that fills most, then is smallest, then has the lowest summed score."""
    reachable = _set_fill(candidates, quantities)  # what all candidates together could fill
    scores = [candidate.score for candidate in candidates]
    units = [candidate.units for candidate in candidates]
    best: tuple[int, ...] = ()
    best_key: tuple[int, int, float] | None = None
    for size in range(1, max_locations + 1):
        for members in combinations(range(len(candidates)), size):
            score = sum(map(scores.__getitem__, members))
            # A set fills at most the sum of what its members fill alone. Skipping sets that
            # can not beat the best even at that bound spares most of them the per-line work:
            # candidates are sorted by score, so the first sets seen are the cheapest and set a
            # tight bar early.
            bound = sum(map(units.__getitem__, members))
            if best_key is not None and (-bound, size, score) >= best_key:
                continue
            filled = _set_fill([candidates[index] for index in members], quantities)
            key = (-filled, size, score)
            if best_key is None or key < best_key:
                best, best_key = members, key
        if best_key is not None and -best_key[0] == reachable:
            break  # a larger set can not fill more, and smaller sets win ties
    return [candidates[index] for index in best]


def _greedy_split(
    candidates: Sequence[_Candidate], quantities: Sequence[int], max_locations: int
) -> list[_Candidate]:
    """Repeatedly take the location adding the most units (ties: better score)."""
    remaining = list(quantities)
    chosen: list[_Candidate] = []
    pool = list(candidates)
    for _ in range(max_locations):
        best: _Candidate | None = None
        best_key: tuple[int, tuple[float, int, str]] | None = None
        for candidate in pool:
            adds = sum(
                min(want, have) for want, have in zip(remaining, candidate.fills, strict=True)
            )
            if adds == 0:
                continue
            key = (-adds, candidate.rank)
            if best_key is None or key < best_key:
                best, best_key = candidate, key
        if best is None:
            break
        chosen.append(best)
        pool.remove(best)
        remaining = [
            want - min(want, have) for want, have in zip(remaining, best.fills, strict=True)
        ]
        if not any(remaining):
            break
    return chosen


def _split_combinations(candidate_count: int, max_locations: int) -> int:
    return sum(comb(candidate_count, size) for size in range(1, max_locations + 1))


def _assign(
    members: Sequence[_Candidate], lines: Sequence[tuple[str, int]]
) -> tuple[dict[str, list[OrderLine]], list[OrderLine]]:
    """Give each line to the best-scored member holding all of it, else spread it by score."""
    ordered = sorted(members, key=lambda member: member.rank)
    assigned: dict[str, list[OrderLine]] = {}
    backorders: list[OrderLine] = []
    for line, (sku, quantity) in enumerate(lines):
        whole = next((m for m in ordered if m.fills[line] >= quantity), None)
        if whole is not None:
            assigned.setdefault(whole.site.name, []).append(OrderLine(sku, quantity))
            continue
        remaining = quantity
        for member in ordered:
            take = min(remaining, member.fills[line])
            if take:
                assigned.setdefault(member.site.name, []).append(OrderLine(sku, take))
                remaining -= take
        if remaining:
            backorders.append(OrderLine(sku, remaining))
    return assigned, backorders


def _choose(
    candidates: Sequence[_Candidate], lines: Sequence[tuple[str, int]], policy: RoutingPolicy
) -> tuple[list[_Candidate], SearchKind]:
    """The locations to use, and how they were found."""
    if not candidates:
        return [], "none"
    complete = [candidate for candidate in candidates if candidate.fills_order]
    if complete:
        return [min(complete, key=lambda candidate: candidate.rank)], "single"
    if not policy.allow_split:
        return [], "single"
    quantities = [quantity for _, quantity in lines]
    limit = min(policy.max_locations, len(candidates))
    # Best-ranked first, so among equal keys the exhaustive search keeps the better-ranked set.
    ranked = sorted(candidates, key=lambda candidate: candidate.rank)
    if _split_combinations(len(ranked), limit) <= EXACT_SEARCH_MAX_COMBINATIONS:
        return _exact_split(ranked, quantities, limit), "exact"
    return _greedy_split(ranked, quantities, limit), "greedy"


# --------------------------------------------------------------------------------------------
# Decision


def _merge(lines: Iterable[OrderLine]) -> list[tuple[str, int]]:
    merged: dict[str, int] = {}
    for line in lines:
        if line.quantity <= 0:
            raise ValueError(f"order line {line.sku!r}: quantity must be positive")
        merged[line.sku] = merged.get(line.sku, 0) + line.quantity
    if not merged:
        raise ValueError("an order to route needs at least one line")
    return list(merged.items())


def _assessments(
    role: CandidateRole,
    candidates: Sequence[_Candidate],
    rejected: Mapping[str, RejectionReason],
    selected: Iterable[str],
    network: RoutingNetwork,
) -> list[CandidateAssessment]:
    """One assessment per location, in config order."""
    chosen = set(selected)
    by_name = {candidate.site.name: candidate for candidate in candidates}
    out: list[CandidateAssessment] = []
    for site in network._sites:
        candidate = by_name.get(site.name)
        if candidate is not None:
            distance_c, cost_c, speed_c, priority_c = candidate.components
            out.append(
                CandidateAssessment(
                    location=site.name,
                    role=role,
                    rejected=None,
                    selected=site.name in chosen,
                    fillable_units=candidate.units,
                    fills_order=candidate.fills_order,
                    distance_km=candidate.distance,
                    carrier=candidate.carrier,
                    cost=candidate.cost,
                    days=candidate.days,
                    priority=site.priority,
                    distance_component=distance_c,
                    cost_component=cost_c,
                    speed_component=speed_c,
                    priority_component=priority_c,
                    score=candidate.score,
                )
            )
        elif site.name in rejected:
            out.append(CandidateAssessment(site.name, role, rejected[site.name], False))
    return out


def _fill_of(lines: Sequence[tuple[str, int]], backorders: Sequence[OrderLine]) -> Fill:
    if not backorders:
        return "complete"
    if sum(line.quantity for line in backorders) == sum(quantity for _, quantity in lines):
        return "none"
    return "partial"


def _route_from_sources(
    network: RoutingNetwork,
    *,
    channel: str,
    country: str,
    point: GeoPoint | None,
    kind: AllocationKind,
    deliver_to: str | None,
    lines: Sequence[tuple[str, int]],
    availability: Mapping[str, Mapping[str, int]],
    orders_today: Mapping[str, int],
    policy: RoutingPolicy,
) -> tuple[list[Allocation], list[OrderLine], list[CandidateAssessment], SearchKind]:
    """Screen, score, choose and assign for a delivery to `country`/`point`."""
    candidates, rejected = _screen(
        network,
        channel=channel,
        country=country,
        exclude=deliver_to,
        lines=lines,
        availability=availability,
        orders_today=orders_today,
    )
    distances = network.distances_to(point) if point is not None else None
    _score(candidates, distances=distances, country=country, weights=policy.weights)
    members, search = _choose(candidates, lines, policy)
    if members:
        assigned, backorders = _assign(members, lines)
    else:
        assigned, backorders = {}, [OrderLine(sku, quantity) for sku, quantity in lines]
    carrier_of = {member.site.name: member.carrier for member in members}
    allocations = [
        Allocation(name, kind, tuple(assigned_lines), carrier_of[name], deliver_to)
        for name, assigned_lines in assigned.items()
    ]
    role: CandidateRole = "transfer" if kind == "transfer" else "ship"
    assessments = _assessments(role, candidates, rejected, assigned, network)
    return allocations, backorders, assessments, search


def _route_pickup(
    request: RoutingRequest,
    network: RoutingNetwork,
    *,
    store_name: str,
    lines: Sequence[tuple[str, int]],
    availability: Mapping[str, Mapping[str, int]],
    orders_today: Mapping[str, int],
    policy: RoutingPolicy,
) -> RoutingDecision:
    store = network._by_name.get(store_name)
    reason: RejectionReason | None = None
    if store is None:
        reason = "unknown_location"
    elif request.channel not in store.channels:
        reason = "not_serving_channel"
    elif not store.can_pickup:
        reason = "lacks_capability"
    elif store.capacity is not None and orders_today.get(store_name, 0) >= store.capacity:
        reason = "at_capacity"
    if store is None or reason is not None:
        return RoutingDecision(
            order_id=request.order_id,
            channel=request.channel,
            fill="none",
            search="none",
            allocations=(),
            backorders=tuple(OrderLine(sku, quantity) for sku, quantity in lines),
            candidates=(CandidateAssessment(store_name, "pickup", reason, False),),
            destination_source=None,
            weights=policy.weights,
            allow_split=policy.allow_split,
            max_locations=policy.max_locations,
        )
    at_store: list[OrderLine] = []
    missing: list[tuple[str, int]] = []
    for sku, quantity in lines:
        have = max(availability.get(sku, {}).get(store_name, 0), 0)
        take = min(quantity, have)
        if take:
            at_store.append(OrderLine(sku, take))
        if quantity > take:
            missing.append((sku, quantity - take))
    allocations: list[Allocation] = []
    if at_store:
        allocations.append(Allocation(store_name, "pickup", tuple(at_store)))
    store_assessment = CandidateAssessment(
        store_name,
        "pickup",
        None if at_store else "no_stock",
        selected=bool(at_store),
        fillable_units=sum(line.quantity for line in at_store),
        fills_order=not missing,
        distance_km=0.0,
        priority=store.priority,
        score=0.0,
    )
    backorders: list[OrderLine] = []
    transfer_assessments: list[CandidateAssessment] = []
    search: SearchKind = "single"
    if missing:
        transfers, backorders, transfer_assessments, search = _route_from_sources(
            network,
            channel=request.channel,
            country=store.country,
            point=store.point,
            kind="transfer",
            deliver_to=store_name,
            lines=missing,
            availability=availability,
            orders_today=orders_today,
            policy=policy,
        )
        allocations.extend(transfers)
    return RoutingDecision(
        order_id=request.order_id,
        channel=request.channel,
        fill=_fill_of(lines, backorders),
        search=search,
        allocations=tuple(allocations),
        backorders=tuple(backorders),
        candidates=(store_assessment, *transfer_assessments),
        destination_source=f"location:{store_name}",
        weights=policy.weights,
        allow_split=policy.allow_split,
        max_locations=policy.max_locations,
    )


def route_order(
    request: RoutingRequest,
    network: RoutingNetwork,
    availability: Mapping[str, Mapping[str, int]],
    orders_today: Mapping[str, int],
    policy: RoutingPolicy,
) -> RoutingDecision:
    """Decide which locations fulfil an order; see the module docstring for the rules.

    `availability` is {sku: {location: ATP}} for (at least) the order's SKUs - e.g.
    `StockBook.available_by_location(sku)` per line; missing or negative entries mean 0.
    `orders_today` is {location: orders allocated today} for the capacity check.
    Raises ValueError for a request that is not an order (no lines, a quantity <= 0, neither or
    both of destination and pickup store).
    """
    lines = _merge(request.lines)
    destination, store_name = request.destination, request.pickup_store
    if destination is not None and store_name is None:
        return _route_delivery(
            request,
            network,
            destination=destination,
            lines=lines,
            availability=availability,
            orders_today=orders_today,
            policy=policy,
        )
    if destination is None and store_name is not None:
        return _route_pickup(
            request,
            network,
            store_name=store_name,
            lines=lines,
            availability=availability,
            orders_today=orders_today,
            policy=policy,
        )
    raise ValueError(f"order {request.order_id!r}: give exactly one of destination or pickup_store")


def _route_delivery(
    request: RoutingRequest,
    network: RoutingNetwork,
    *,
    destination: Destination,
    lines: Sequence[tuple[str, int]],
    availability: Mapping[str, Mapping[str, int]],
    orders_today: Mapping[str, int],
    policy: RoutingPolicy,
) -> RoutingDecision:
    country = normalise_country(destination.country)
    point = destination.point
    source: str | None = "address" if point is not None else None
    if point is None:
        centroid = network.locate(country, destination.postcode)
        if centroid is not None:
            point, source = centroid.point, centroid.source
    allocations, backorders, assessments, search = _route_from_sources(
        network,
        channel=request.channel,
        country=country,
        point=point,
        kind="ship",
        deliver_to=None,
        lines=lines,
        availability=availability,
        orders_today=orders_today,
        policy=policy,
    )
    return RoutingDecision(
        order_id=request.order_id,
        channel=request.channel,
        fill=_fill_of(lines, backorders),
        search=search,
        allocations=tuple(allocations),
        backorders=tuple(backorders),
        candidates=tuple(assessments),
        destination_source=source,
        weights=policy.weights,
        allow_split=policy.allow_split,
        max_locations=policy.max_locations,
    )

"""ATP by example: reports, reservations, shipments, rejections, channel views, debouncing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from somsd.domain.atp import (
    MAX_ON_HAND,
    AvailabilityChange,
    ChannelStockPolicy,
    DebouncePolicy,
    Oversold,
    PendingPush,
    ReservationRejected,
    ReservationReleased,
    SafetyStock,
    Shortfall,
    StockBook,
    StockCount,
    StockCounted,
    StockEvent,
    StockLine,
    StockRefused,
    StockReport,
    StockReserved,
    StockShipped,
    affected_skus,
    apply_stock_event,
    availability_changes,
    channel_availability,
    due_pushes,
    note_pending_push,
    rebuild_stock_book,
    receive_stock_report,
    reject_stock,
    release_stock,
    reserve_stock,
    ship_stock,
)

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def count(book: StockBook, location: str, minutes: int, **on_hand: int) -> StockCounted | None:
    report = StockReport(
        location, at(minutes), tuple(StockCount(sku, qty) for sku, qty in on_hand.items())
    )
    decision = receive_stock_report(book, report)
    if decision.counted is not None:
        apply_stock_event(book, decision.counted)
    return decision.counted


def reserve(book: StockBook, rid: str, location: str, **lines: int) -> StockReserved:
    event = reserve_stock(book, rid, location, [StockLine(s, q) for s, q in lines.items()])
    assert isinstance(event, StockReserved), event
    apply_stock_event(book, event)
    return event


# --- reports ------------------------------------------------------------------------------


def test_report_sets_on_hand_and_atp_subtracts_reserved_and_safety() -> None:
    """ATP = on hand - reserved - safety stock."""
    book = StockBook(SafetyStock(location_defaults={"wh": 2}))
    count(book, "wh", 0, MUG=10)
    reserve(book, "r1", "wh", MUG=3)
    position = book.position("MUG", "wh")
    assert (position.on_hand, position.reserved, position.safety, position.atp) == (10, 3, 2, 5)
    assert position.as_of == at(0)


def test_report_older_than_the_applied_one_is_ignored_and_listed() -> None:
    """A late-arriving older report must not overwrite a newer count; the decision says so."""
    book = StockBook()
    count(book, "wh", 10, MUG=4)
    decision = receive_stock_report(
        book, StockReport("wh", at(5), (StockCount("MUG", 99), StockCount("CUP", 7)))
    )
    assert [(s.sku, s.reported_as_of, s.newest_as_of) for s in decision.stale] == [
        ("MUG", at(5), at(10))
    ]
    assert decision.counted == StockCounted("wh", at(5), (StockCount("CUP", 7),))
    apply_stock_event(book, decision.counted)
    assert book.position("MUG", "wh").on_hand == 4
    assert book.position("CUP", "wh").on_hand == 7


def test_report_with_the_same_time_is_applied() -> None:
    """Equal as_of is not older: a redelivered report is applied again and changes nothing."""
    book = StockBook()
    count(book, "wh", 10, MUG=4)
    assert count(book, "wh", 10, MUG=4) is not None
    assert book.position("MUG", "wh").on_hand == 4


def test_report_taken_before_a_shipment_does_not_put_shipped_units_back() -> None:
    """A count as of 08:00 arriving after an 08:05 shipment still has those units in it."""
    book = StockBook()
    count(book, "wh", 0, MUG=10)
    reserve(book, "r1", "wh", MUG=3)
    shipped = ship_stock(book, "r1", at(5))
    assert isinstance(shipped, StockShipped)
    apply_stock_event(book, shipped)
    assert book.position("MUG", "wh").on_hand == 7
    count(book, "wh", 2, MUG=10)  # counted before the shipment, delivered after it
    assert book.position("MUG", "wh").on_hand == 7
    count(book, "wh", 6, MUG=7)  # counted after the shipment: it is included now
    assert book.position("MUG", "wh").on_hand == 7


def test_shipment_dated_before_the_latest_count_is_not_subtracted_twice() -> None:
    """A shipment reported late, already reflected in a newer count, only consumes the
    reservation."""
    book = StockBook()
    count(book, "wh", 0, MUG=10)
    reserve(book, "r1", "wh", MUG=3)
    count(book, "wh", 10, MUG=7)  # the warehouse shipped at minute 5 and counted at 10
    shipped = ship_stock(book, "r1", at(5))
    assert isinstance(shipped, StockShipped)
    apply_stock_event(book, shipped)
    position = book.position("MUG", "wh")
    assert (position.on_hand, position.reserved) == (7, 0)


def test_complete_report_counts_unlisted_skus_as_zero() -> None:
    """A full inventory snapshot that leaves a SKU out means the location has none of it."""
    book = StockBook()
    count(book, "wh", 0, MUG=5, CUP=3)
    count(book, "store", 0, CUP=9)
    decision = receive_stock_report(
        book, StockReport("wh", at(1), (StockCount("MUG", 4),), complete=True)
    )
    assert decision.counted is not None
    assert set(decision.counted.counts) == {StockCount("MUG", 4), StockCount("CUP", 0)}
    apply_stock_event(book, decision.counted)
    assert book.position("CUP", "wh").on_hand == 0
    assert book.position("CUP", "store").on_hand == 9


def test_report_below_reservations_is_flagged_as_oversold() -> None:
    """When a count shows less than is reserved, the decision names it so orders get re-routed."""
    book = StockBook()
    count(book, "wh", 0, MUG=5)
    reserve(book, "r1", "wh", MUG=4)
    decision = receive_stock_report(book, StockReport("wh", at(1), (StockCount("MUG", 1),)))
    assert decision.oversold == (Oversold("MUG", "wh", reserved=4, on_hand=1),)


def test_negative_on_hand_from_the_erp_is_kept_but_channels_see_zero() -> None:
    """ERPs book negative stock; the book keeps it, channel availability never goes below 0."""
    book = StockBook()
    count(book, "wh", 0, MUG=-3)
    count(book, "store", 0, MUG=2)
    shop = ChannelStockPolicy("shop", frozenset({"wh", "store"}))
    assert book.atp_for("MUG", "wh") == -3
    assert channel_availability(book, [shop]) == {"shop": {"MUG": 2}}


def test_counts_beyond_a_billion_are_refused_before_anything_is_stored() -> None:
    """A count SQLite cannot hold would crash the inventory actor at commit; refuse it here."""
    book = StockBook()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    for on_hand in (MAX_ON_HAND + 1, -MAX_ON_HAND - 1, 178504043752582127470369570816):
        with pytest.raises(ValueError, match=r"counts\[0\]\.on_hand"):
            receive_stock_report(book, StockReport("wh", at, (StockCount("MUG", on_hand),)))
    decision = receive_stock_report(book, StockReport("wh", at, (StockCount("MUG", MAX_ON_HAND),)))
    assert decision.counted is not None


def test_naive_times_are_refused_with_a_clear_error() -> None:
    """Comparing naive and aware datetimes fails later and obscurely; fail at the door."""
    book = StockBook()
    with pytest.raises(ValueError, match="timezone-aware"):
        receive_stock_report(book, StockReport("wh", datetime(2026, 1, 1), ()))


# --- reservations -------------------------------------------------------------------------


def test_two_reservations_can_not_take_the_last_unit() -> None:
    """The second reservation of the last unit is refused with the shortfall."""
    book = StockBook()
    count(book, "wh", 0, MUG=1)
    reserve(book, "r1", "wh", MUG=1)
    refused = reserve_stock(book, "r2", "wh", [StockLine("MUG", 1)])
    assert refused == StockRefused("reserve", "r2", "insufficient_stock", (Shortfall("MUG", 1, 0),))


def test_reservation_is_all_or_nothing() -> None:
    """One short line refuses the whole reservation and reserves nothing."""
    book = StockBook()
    count(book, "wh", 0, MUG=5, CUP=1)
    refused = reserve_stock(book, "r1", "wh", [StockLine("MUG", 2), StockLine("CUP", 2)])
    assert isinstance(refused, StockRefused)
    assert refused.shortfalls == (Shortfall("CUP", 2, 1),)
    assert book.position("MUG", "wh").reserved == 0


def test_repeated_sku_lines_are_checked_together() -> None:
    """Two lines of one SKU must not each pass against the same unit."""
    book = StockBook()
    count(book, "wh", 0, MUG=1)
    refused = reserve_stock(book, "r1", "wh", [StockLine("MUG", 1), StockLine("MUG", 1)])
    assert isinstance(refused, StockRefused)
    assert refused.reason == "insufficient_stock"


def test_safety_stock_is_held_back_and_the_most_specific_rule_wins() -> None:
    """(SKU, location) override beats SKU override beats location default."""
    safety = SafetyStock(
        location_defaults={"wh": 2, "store": 1},
        sku_overrides={"MUG": 5},
        sku_location_overrides={"MUG": {"store": 0}},
    )
    assert safety.safety_stock_for("MUG", "store") == 0
    assert safety.safety_stock_for("MUG", "wh") == 5
    assert safety.safety_stock_for("CUP", "wh") == 2
    assert safety.safety_stock_for("CUP", "elsewhere") == 0
    book = StockBook(safety)
    count(book, "wh", 0, MUG=6)
    assert isinstance(reserve_stock(book, "r1", "wh", [StockLine("MUG", 2)]), StockRefused)


def test_changed_safety_stock_applies_to_existing_levels() -> None:
    """A config reload re-resolves safety stock for everything already in the book."""
    book = StockBook()
    count(book, "wh", 0, MUG=6)
    book.change_safety_stock(SafetyStock(location_defaults={"wh": 4}))
    assert book.atp_for("MUG", "wh") == 2


@pytest.mark.parametrize(
    ("lines", "reason"),
    [([], "invalid_lines"), ([StockLine("MUG", 0)], "invalid_lines")],
)
def test_reservation_without_positive_lines_is_refused(lines: list[StockLine], reason: str) -> None:
    """Nothing to reserve is a refusal, not an empty reservation."""
    refused = reserve_stock(StockBook(), "r1", "wh", lines)
    assert isinstance(refused, StockRefused)
    assert refused.reason == reason


def test_duplicate_reservation_id_is_refused() -> None:
    """A redelivered reserve request must not reserve twice."""
    book = StockBook()
    count(book, "wh", 0, MUG=5)
    reserve(book, "r1", "wh", MUG=1)
    refused = reserve_stock(book, "r1", "wh", [StockLine("MUG", 1)])
    assert isinstance(refused, StockRefused)
    assert refused.reason == "duplicate_reservation"


# --- release, ship, reject ----------------------------------------------------------------


def test_release_without_lines_releases_everything_left() -> None:
    """`lines=None` is resolved into explicit lines, so the stored event replays exactly."""
    book = StockBook()
    count(book, "wh", 0, MUG=5, CUP=5)
    reserve(book, "r1", "wh", MUG=2, CUP=1)
    released = release_stock(book, "r1")
    assert released == ReservationReleased("r1", "wh", (StockLine("MUG", 2), StockLine("CUP", 1)))
    apply_stock_event(book, released)
    assert book.reservation("r1") is None
    assert book.position("MUG", "wh").reserved == 0


def test_partial_release_keeps_the_rest_reserved() -> None:
    """Releasing one line leaves the others."""
    book = StockBook()
    count(book, "wh", 0, MUG=5, CUP=5)
    reserve(book, "r1", "wh", MUG=2, CUP=1)
    released = release_stock(book, "r1", [StockLine("MUG", 1)])
    assert isinstance(released, ReservationReleased)
    apply_stock_event(book, released)
    held = book.reservation("r1")
    assert held is not None
    assert held.lines == (StockLine("MUG", 1), StockLine("CUP", 1))


@pytest.mark.parametrize("operation", ["release", "ship", "reject"])
def test_taking_more_than_reserved_is_refused(operation: str) -> None:
    """No operation can release, ship or reject units the reservation does not hold."""
    book = StockBook()
    count(book, "wh", 0, MUG=5)
    reserve(book, "r1", "wh", MUG=2)
    too_many = [StockLine("MUG", 3)]
    refused: object
    if operation == "release":
        refused = release_stock(book, "r1", too_many)
    elif operation == "ship":
        refused = ship_stock(book, "r1", at(1), too_many)
    else:
        refused = reject_stock(book, "r1", "declined", at(1), too_many)
    assert isinstance(refused, StockRefused)
    assert (refused.operation, refused.reason) == (operation, "exceeds_reservation")
    assert refused.shortfalls == (Shortfall("MUG", 3, 2),)


def test_operations_on_unknown_reservations_are_refused() -> None:
    """An unknown id (already shipped, never made) changes nothing."""
    book = StockBook()
    refused = ship_stock(book, "nope", at(1))
    assert isinstance(refused, StockRefused)
    assert refused.reason == "unknown_reservation"


def test_ship_consumes_reservation_and_on_hand() -> None:
    """Shipping takes units off both counters; ATP is unchanged by it."""
    book = StockBook()
    count(book, "wh", 0, MUG=5)
    reserve(book, "r1", "wh", MUG=2)
    atp_before = book.atp_for("MUG", "wh")
    shipped = ship_stock(book, "r1", at(1))
    assert isinstance(shipped, StockShipped)
    apply_stock_event(book, shipped)
    position = book.position("MUG", "wh")
    assert (position.on_hand, position.reserved, position.atp) == (3, 0, atp_before)


@pytest.mark.parametrize(
    ("reason", "on_hand_after"),
    [("stock_missing", 3), ("damaged", 3), ("declined", 5)],
)
def test_reject_writes_off_only_missing_or_damaged_stock(reason: str, on_hand_after: int) -> None:
    """A store that can not find the units tells us on hand was wrong; a declined line does not."""
    book = StockBook()
    count(book, "store", 0, MUG=5)
    reserve(book, "r1", "store", MUG=2)
    rejected = reject_stock(book, "r1", reason, at(1))  # type: ignore[arg-type]
    assert isinstance(rejected, ReservationRejected)
    assert rejected.written_off == (reason != "declined")
    apply_stock_event(book, rejected)
    position = book.position("MUG", "store")
    assert (position.on_hand, position.reserved) == (on_hand_after, 0)


def test_unconfirmed_moves_are_bounded_and_err_low() -> None:
    """Without reports, old moves merge; on hand after a report then errs low, never high."""
    book = StockBook()
    count(book, "wh", 0, MUG=10_000)
    for n in range(300):
        reserve(book, f"r{n}", "wh", MUG=1)
        shipped = ship_stock(book, f"r{n}", at(10 + n))
        assert isinstance(shipped, StockShipped)
        apply_stock_event(book, shipped)
    level = book.snapshot().levels["MUG"]["wh"]
    assert len(level.unconfirmed_moves) <= 256
    assert level.on_hand == 10_000 - 300
    # A count taken after the first 100 shipments: the true on hand is 9,900 - 200 = 9,700.
    count(book, "wh", 10 + 99, MUG=9_900)
    assert book.position("MUG", "wh").on_hand <= 9_700


# --- replay -------------------------------------------------------------------------------


def test_events_round_trip_through_json_and_rebuild_the_same_book() -> None:
    """Stored events decode into the union and replay to an identical book."""
    book = StockBook(SafetyStock(location_defaults={"wh": 1}))
    events: list[StockEvent] = []

    def record(event: StockEvent | StockRefused | None) -> None:
        assert event is not None
        assert not isinstance(event, StockRefused)
        apply_stock_event(book, event)
        events.append(event)

    record(count(book, "wh", 0, MUG=5, CUP=2))
    record(reserve_stock(book, "r1", "wh", [StockLine("MUG", 2), StockLine("CUP", 1)]))
    record(ship_stock(book, "r1", at(3), [StockLine("MUG", 1)]))
    record(reject_stock(book, "r1", "damaged", at(4), [StockLine("CUP", 1)]))
    record(release_stock(book, "r1"))
    stored = msgspec.json.encode(events)
    decoded = msgspec.json.decode(stored, type=list[StockEvent])
    assert decoded == events
    rebuilt = rebuild_stock_book(decoded, SafetyStock(location_defaults={"wh": 1}))
    assert rebuilt.snapshot() == book.snapshot()


def test_affected_skus_names_every_sku_of_an_event() -> None:
    """Availability is recomputed for exactly these SKUs after an event."""
    event = StockReserved("r1", "wh", (StockLine("MUG", 1), StockLine("CUP", 2)))
    assert affected_skus(event) == {"MUG", "CUP"}


# --- channel availability -----------------------------------------------------------------


SHOP = ChannelStockPolicy("shop", frozenset({"wh", "store"}), low_stock_threshold=3)
B2B = ChannelStockPolicy("b2b", frozenset({"wh"}), hide_sold_out=False)


def test_channel_availability_sums_atp_of_the_locations_serving_it() -> None:
    """Each channel sees only its own locations' ATP."""
    book = StockBook()
    count(book, "wh", 0, MUG=4)
    count(book, "store", 0, MUG=2)
    count(book, "elsewhere", 0, MUG=100)
    assert channel_availability(book, [SHOP, B2B]) == {"shop": {"MUG": 6}, "b2b": {"MUG": 4}}
    assert channel_availability(book, [SHOP], skus=["MUG", "UNKNOWN"]) == {
        "shop": {"MUG": 6, "UNKNOWN": 0}
    }


def test_availability_is_clamped_per_location_before_summing() -> None:
    """A store under its safety stock must not hide units the warehouse has."""
    book = StockBook(SafetyStock(location_defaults={"store": 5}))
    count(book, "wh", 0, MUG=4)
    count(book, "store", 0, MUG=1)
    assert channel_availability(book, [SHOP])["shop"]["MUG"] == 4


@pytest.mark.parametrize(
    ("before", "after", "transition", "shop_visibility", "b2b_visibility"),
    [
        (5, 0, "sold_out", "hide", None),
        (0, 5, "back_in_stock", "show", None),
        (5, 3, "low_stock", None, None),
        (5, 4, "quantity", None, None),
        (3, 2, "quantity", None, None),  # already low: no second alert
        (2, 8, "quantity", None, None),
    ],
)
def test_availability_changes_classify_transitions_and_listing_decisions(
    before: int, after: int, transition: str, shop_visibility: str | None, b2b_visibility: None
) -> None:
    """Sold out hides (if the channel hides sold-out items), back in stock shows again."""
    changes = availability_changes(
        {"shop": {"MUG": before}, "b2b": {"MUG": before}},
        {"shop": {"MUG": after}, "b2b": {"MUG": after}},
        [SHOP, B2B],
    )
    by_channel = {change.channel: change for change in changes}
    assert by_channel["shop"] == AvailabilityChange(
        "shop",
        "MUG",
        before,
        after,
        transition,  # type: ignore[arg-type]
        shop_visibility,  # type: ignore[arg-type]
    )
    assert by_channel["b2b"].visibility == b2b_visibility


def test_unchanged_quantities_produce_no_changes_and_missing_skus_count_as_zero() -> None:
    """Only differences are reported; a SKU absent from a snapshot has 0 units."""
    changes = availability_changes(
        {"shop": {"MUG": 2, "GONE": 1}}, {"shop": {"MUG": 2, "NEW": 1}}, [SHOP]
    )
    assert {(c.sku, c.transition) for c in changes} == {
        ("GONE", "sold_out"),
        ("NEW", "back_in_stock"),
    }


def test_reservation_selling_the_last_unit_hides_the_product() -> None:
    """End to end: recompute only affected SKUs around one event and diff."""
    book = StockBook()
    count(book, "wh", 0, MUG=1)
    event = reserve_stock(book, "r1", "wh", [StockLine("MUG", 1)])
    assert isinstance(event, StockReserved)
    skus = affected_skus(event)
    before = channel_availability(book, [SHOP], skus)
    apply_stock_event(book, event)
    after = channel_availability(book, [SHOP], skus)
    [change] = availability_changes(before, after, [SHOP])
    assert (change.transition, change.visibility) == ("sold_out", "hide")


# --- debouncing ---------------------------------------------------------------------------

POLICY = DebouncePolicy(quiet_seconds=2.0, max_delay_seconds=30.0)


def test_a_burst_of_changes_to_one_sku_yields_one_push_after_it_goes_quiet() -> None:
    """Ten changes 0.1 s apart are pushed once, 2 s after the last."""
    pending: dict[str, PendingPush] = {}
    for n in range(10):
        pending["MUG"] = note_pending_push(pending.get("MUG"), 100.0 + n * 0.1, urgent=False)
        assert due_pushes(pending, 100.0 + n * 0.1, POLICY).due == ()
    waiting = due_pushes(pending, 101.0, POLICY)
    assert waiting.due == ()
    assert waiting.next_due_at == pytest.approx(102.9)
    assert due_pushes(pending, 102.9, POLICY).due == ("MUG",)


def test_a_sku_that_never_stops_changing_is_pushed_after_the_max_delay() -> None:
    """A flash sale's SKU is still pushed every 30 s."""
    pending = {"MUG": PendingPush(first_change_at=0.0, last_change_at=29.5, urgent=False)}
    assert due_pushes(pending, 29.9, POLICY).due == ()
    assert due_pushes(pending, 30.0, POLICY).due == ("MUG",)


def test_urgent_changes_are_pushed_at_once() -> None:
    """A sold-out SKU is pushed immediately, even mid-burst: waiting risks overselling."""
    pending = {"MUG": note_pending_push(None, 5.0, urgent=False)}
    pending["MUG"] = note_pending_push(pending["MUG"], 5.1, urgent=True)
    pending["CUP"] = note_pending_push(None, 5.1, urgent=False)
    decision = due_pushes(pending, 5.1, POLICY)
    assert decision.due == ("MUG",)
    assert decision.next_due_at == pytest.approx(7.1)


def test_nothing_pending_means_no_wakeup() -> None:
    """An idle debouncer asks to be woken only when something changes."""
    assert due_pushes({}, 0.0, POLICY) == due_pushes({}, 0.0)
    assert due_pushes({}, 0.0, POLICY).next_due_at is None


def test_a_broken_event_log_fails_loudly_instead_of_guessing() -> None:
    """Replaying a log that opens a reservation twice or over-settles one raises."""
    book = StockBook()
    reserved = StockReserved("r1", "wh", (StockLine("MUG", 1),))
    apply_stock_event(book, reserved)
    with pytest.raises(ValueError, match="opened twice"):
        apply_stock_event(book, reserved)
    with pytest.raises(ValueError, match="inconsistent"):
        apply_stock_event(book, ReservationReleased("r1", "wh", (StockLine("MUG", 2),)))
    with pytest.raises(KeyError):
        apply_stock_event(book, ReservationReleased("r9", "wh", (StockLine("MUG", 1),)))


def test_positions_list_every_location_of_a_sku_for_the_inventory_api() -> None:
    """`GET /v1/inventory/{sku}` shows on hand, reserved, safety and ATP per location."""
    book = StockBook(SafetyStock(location_defaults={"wh": 1}))
    count(book, "wh", 0, MUG=4)
    count(book, "store", 0, MUG=2)
    assert [(p.location, p.on_hand, p.safety, p.atp) for p in book.positions("MUG")] == [
        ("store", 2, 0, 2),
        ("wh", 4, 1, 3),
    ]
    assert book.positions("UNKNOWN") == ()
    assert set(book.skus()) == {"MUG"}

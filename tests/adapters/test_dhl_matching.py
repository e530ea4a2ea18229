"""Properties of the pure helpers behind the DHL lookup after a lost answer.

`manifest_candidates` decides which shipments a lookup reprints, `match_reprint` what a
reprint answer proves; a mistake in either buys a second label or adopts a stranger's.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.dhl.mapping import batches, manifest_candidates, match_reprint
from adapters.dhl.wire import Document, ManifestItem, RequestStatus, ResponseItem

numbers = st.text(alphabet="0123456789", min_size=1, max_size=4).map(lambda n: "0034" + n)
REFERENCE = "f-ours-000001"


@settings(max_examples=200, deadline=None)
@given(listed=st.lists(numbers, max_size=40), known=st.sets(numbers, max_size=10))
def test_candidates_are_the_unknown_listed_shipments_once_each_in_dhls_order(
    listed: list[str], known: set[str]
) -> None:
    items = [ManifestItem(shipmentNo=number) for number in listed]
    candidates = manifest_candidates(items, known)
    assert set(candidates) == set(listed) - known
    assert len(candidates) == len(set(candidates))
    assert candidates == sorted(candidates, key=listed.index)


@settings(max_examples=100, deadline=None)
@given(
    listed=st.lists(numbers, max_size=10),
    hole=st.sampled_from([None, "", "  "]),
    at=st.integers(min_value=0, max_value=10),
)
def test_a_manifest_with_a_hole_proves_nothing(
    listed: list[str], hole: str | None, at: int
) -> None:
    items = [ManifestItem(shipmentNo=number) for number in listed]
    items.insert(min(at, len(items)), ManifestItem(shipmentNo=hole))
    with pytest.raises(ValueError, match="no shipmentNo"):
        manifest_candidates(items, known=())


@given(st.lists(numbers, max_size=100), st.integers(min_value=1, max_value=30))
def test_batches_cover_every_number_in_order_within_the_size(listed: list[str], size: int) -> None:
    chunks = list(batches(listed, size))
    assert [n for chunk in chunks for n in chunk] == listed
    assert all(1 <= len(chunk) <= size for chunk in chunks)


# One reprinted shipment: (DHL's status for it, its shipmentRefNo, whether a label came back).
outcomes = st.tuples(
    st.sampled_from([200, None, 400, 404]),
    st.sampled_from([REFERENCE, "f-someone-01", None]),
    st.booleans(),
)


def _item(number: str, status: int | None, ref_no: str | None, label: bool) -> ResponseItem:
    return ResponseItem(
        sstatus=RequestStatus(title="", statusCode=status or 0, status=status),
        shipmentNo=number,
        shipmentRefNo=ref_no,
        label=Document(zpl2="^XA^XZ") if label else None,
    )


@settings(max_examples=300, deadline=None)
@given(
    asked=st.lists(numbers, min_size=1, max_size=30, unique=True),
    data=st.data(),
)
def test_a_reprint_answer_says_exactly_what_it_proves(
    asked: list[str], data: st.DataObject
) -> None:
    answer = [data.draw(outcomes) for _ in asked]
    items = [_item(n, *outcome) for n, outcome in zip(asked, answer, strict=True)]
    verdict = match_reprint(asked, items, REFERENCE)
    readable = [(n, o) for n, o in zip(asked, answer, strict=True) if o[0] in (None, 200)]
    # Only a reprinted shipment with our reference is ours; the first one is adopted.
    ours = [n for n, (_, ref_no, _) in readable if ref_no == REFERENCE]
    assert (verdict.found.shipmentNo if verdict.found else None) == (ours[0] if ours else None)
    # What DHL would not reprint is unknown: listed as such, never adopted.
    assert verdict.unreadable == tuple(
        n for n, o in zip(asked, answer, strict=True) if o[0] not in (None, 200)
    )
    # A shipment is proven open by a reprinted label or DHL's 200 for it.
    assert verdict.reprinted == any(status == 200 or label for _, (status, _, label) in readable)


@given(asked=st.lists(numbers, min_size=1, max_size=30, unique=True), cut=st.integers(0, 29))
def test_an_answer_that_does_not_fit_the_question_is_refused(asked: list[str], cut: int) -> None:
    items = [_item(n, 200, None, True) for n in asked]
    shorter = items[: min(cut, len(items) - 1)]
    with pytest.raises(ValueError, match="items for"):
        match_reprint(asked, shorter, REFERENCE)
    swapped = [*items[1:], items[0]] if len(items) > 1 else [_item("0099", 200, None, True)]
    with pytest.raises(ValueError, match="asked for"):
        match_reprint(asked, swapped, REFERENCE)

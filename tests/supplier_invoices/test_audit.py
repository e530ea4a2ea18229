"""The hash chain: intact as sealed, and any change to any entry is found."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from somsd.supplier_invoices.audit import GENESIS, AuditEntry, seal_all, verify_chain

steps = st.lists(
    st.tuples(
        st.sampled_from(["received", "extracted", "check", "decided"]),
        st.text(max_size=20),
        st.text(max_size=50),
    ),
    min_size=1,
    max_size=12,
)


@given(steps)
def test_a_sealed_chain_verifies(entries: list[tuple[str, str, str]]) -> None:
    chain = seal_all(None, entries)
    assert chain[0].previous == GENESIS
    assert verify_chain(chain) == []


@given(steps, st.data())
def test_changing_any_field_of_any_entry_is_detected(
    entries: list[tuple[str, str, str]], data: st.DataObject
) -> None:
    chain = seal_all(None, entries)
    position = data.draw(st.integers(0, len(chain) - 1))
    field = data.draw(st.sampled_from(["step", "at", "data", "previous", "index"]))
    entry = chain[position]
    value = entry.index + 1 if field == "index" else getattr(entry, field) + "x"
    chain[position] = msgspec.structs.replace(entry, **{field: value})
    assert verify_chain(chain)


@given(steps)
def test_a_removed_or_reordered_entry_is_detected(entries: list[tuple[str, str, str]]) -> None:
    chain = seal_all(None, [*entries, ("decided", "t", "{}")])
    assert verify_chain(chain[1:])
    assert verify_chain([chain[-1], *chain[:-1]])


def test_rehashing_a_changed_entry_still_breaks_the_next_link() -> None:
    chain = seal_all(None, [("received", "t1", "{}"), ("decided", "t2", '{"outcome":"held"}')])
    forged = seal_all(None, [("received", "t1", '{"forged":true}')])[0]
    assert isinstance(forged, AuditEntry)
    assert verify_chain([forged, chain[1]])

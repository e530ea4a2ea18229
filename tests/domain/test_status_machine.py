"""The status machine: standard edges, custom statuses from config, load-time validation."""

from __future__ import annotations

import msgspec
import pytest

from somsd.domain.errors import IllegalTransition, Problem, StatusConfigError
from somsd.domain.status import (
    FINAL_STATUSES,
    STANDARD_MACHINE,
    STANDARD_TRANSITIONS,
    CustomStatus,
    build_status_machine,
    status_config_problems,
)

LEGAL = [
    ("new", "pending"),
    ("new", "processing"),
    ("new", "on-hold"),
    ("new", "canceled"),
    ("pending", "processing"),
    ("pending", "on-hold"),
    ("pending", "canceled"),
    ("processing", "complete"),
    ("processing", "on-hold"),
    ("processing", "canceled"),
    ("on-hold", "canceled"),
    ("complete", "closed"),
    ("canceled", "closed"),
]


def test_standard_edges_are_exactly_the_documented_ones() -> None:
    """Every pair of standard statuses is legal if and only if it is in the documented table."""
    for current in STANDARD_TRANSITIONS:
        for target in STANDARD_TRANSITIONS:
            assert STANDARD_MACHINE.can(current, target) == ((current, target) in LEGAL), (
                current,
                target,
            )


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("complete", "pending", ("closed",)),
        ("pending", "complete", ("processing", "on-hold", "canceled")),
        ("closed", "pending", ()),
        ("canceled", "processing", ("closed",)),
        ("pending", "new", ("processing", "on-hold", "canceled")),
        ("pending", "pending", ("processing", "on-hold", "canceled")),
        ("pending", "shipped", ("processing", "on-hold", "canceled")),
    ],
)
def test_illegal_transition_lists_the_allowed_targets(
    current: str, target: str, allowed: tuple[str, ...]
) -> None:
    """A refused move tells the operator where the order can go instead (HTTP 409 body)."""
    with pytest.raises(IllegalTransition) as caught:
        STANDARD_MACHINE.check(current, target)
    error = caught.value
    assert (error.current, error.target, error.allowed) == (current, target, allowed)
    assert error.code == "illegal_transition"
    assert f'from "{current}" to "{target}"' in str(error)


def test_closed_is_the_only_status_without_a_way_out() -> None:
    dead_ends = [
        status for status in STANDARD_MACHINE.statuses if not STANDARD_MACHINE.allowed(status)
    ]
    assert dead_ends == ["closed"]
    assert {"complete", "canceled", "closed"} == FINAL_STATUSES


def test_custom_status_adds_edges_in_and_out() -> None:
    machine = build_status_machine(
        [CustomStatus("awaiting-stock", from_=("pending",), to=("processing", "canceled"))]
    )
    assert machine.can("pending", "awaiting-stock")
    assert machine.allowed("awaiting-stock") == ("processing", "canceled")
    assert machine.allowed("pending") == ("processing", "on-hold", "canceled", "awaiting-stock")
    assert machine.statuses[-1] == "awaiting-stock"
    assert not machine.can("awaiting-stock", "complete")


def test_contract_example_on_hold_config_extends_the_built_in_hold() -> None:
    """The contract's `[[status]] name = "on-hold"` is valid and lets a release go to processing."""
    machine = build_status_machine(
        [CustomStatus("on-hold", from_=("pending",), to=("processing", "canceled"))]
    )
    assert machine.allowed("on-hold") == ("canceled", "processing")
    assert machine.can("new", "on-hold"), "built-in edges stay"


def test_custom_statuses_may_lead_to_each_other_in_any_declaration_order() -> None:
    machine = build_status_machine(
        [
            CustomStatus("packed", from_=("picking",), to=("processing",)),
            CustomStatus("picking", from_=("processing",), to=("packed",)),
        ]
    )
    assert machine.can("processing", "picking")
    assert machine.can("picking", "packed")
    assert machine.can("packed", "processing")


def test_config_table_decodes_from_toml_shaped_data() -> None:
    """`from` is a Python keyword; the config key is still spelled `from`."""
    status = msgspec.convert(
        {"name": "on-hold", "from": ["pending"], "to": ["processing", "canceled"]}, CustomStatus
    )
    assert status == CustomStatus("on-hold", from_=("pending",), to=("processing", "canceled"))
    with pytest.raises(msgspec.ValidationError, match="unknown field `form`"):
        msgspec.convert({"name": "x", "form": []}, CustomStatus)


# (config, expected problems as "path: message" prefixes)
CONFIG_ERRORS: list[tuple[list[CustomStatus], list[str]]] = [
    (
        [CustomStatus("review", from_=("pending", "pendng"), to=("processing",))],
        ['status[0].from[1]: unknown status "pendng"; did you mean "pending"?'],
    ),
    (
        [CustomStatus("review", from_=("pending",), to=("zzz",))],
        ['status[0].to[0]: unknown status "zzz"; known: new, pending'],
    ),
    (
        [CustomStatus("pending", from_=("new",), to=("processing",))],
        ['status[0].name: "pending" is a standard status'],
    ),
    (
        [
            CustomStatus("review", from_=("pending",), to=("processing",)),
            CustomStatus("review", from_=("processing",), to=("complete",)),
        ],
        ['status[1].name: "review" is already declared in status[0]'],
    ),
    (
        [CustomStatus("Needs Review", from_=("pending",), to=("processing",))],
        ['status[0].name: "Needs Review" is not a status name'],
    ),
    (
        [CustomStatus("review", from_=("closed",), to=("processing",))],
        ['status[0].from[0]: "closed" is terminal'],
    ),
    (
        [CustomStatus("review", from_=("pending",), to=("new",))],
        ['status[0].to[0]: "new" is where orders start'],
    ),
    (
        [CustomStatus("review", from_=("review",), to=("processing",))],
        ["status[0].from[0]: a status cannot follow itself"],
    ),
    (
        [CustomStatus("orphan", from_=(), to=("processing",))],
        ['status[0].from: "orphan" cannot be reached from "new"'],
    ),
    (
        [CustomStatus("limbo", from_=("pending",), to=())],
        ['status[0].to: "limbo" cannot reach a final status'],
    ),
    (
        [
            CustomStatus("loop-a", from_=("pending", "loop-b"), to=("loop-b",)),
            CustomStatus("loop-b", from_=(), to=("loop-a",)),
        ],
        [
            'status[0].to: "loop-a" cannot reach a final status',
            'status[1].to: "loop-b" cannot reach a final status',
        ],
    ),
    (
        [
            CustomStatus("island-a", from_=("island-b",), to=("processing",)),
            CustomStatus("island-b", from_=("island-a",), to=("processing",)),
        ],
        [
            'status[0].from: "island-a" cannot be reached from "new"',
            'status[1].from: "island-b" cannot be reached from "new"',
        ],
    ),
]


@pytest.mark.parametrize(("config", "expected"), CONFIG_ERRORS)
def test_config_problems_carry_their_key_path(
    config: list[CustomStatus], expected: list[str]
) -> None:
    """`somsd check-config` prints each problem as `status[i].key[j]: message`."""
    problems = [str(problem) for problem in status_config_problems(config)]
    assert len(problems) == len(expected), problems
    for problem, prefix in zip(problems, expected, strict=True):
        assert problem.startswith(prefix), problem
    with pytest.raises(StatusConfigError) as caught:
        build_status_machine(config)
    assert [str(problem) for problem in caught.value.problems] == problems


def test_every_config_problem_is_reported_at_once() -> None:
    problems = status_config_problems(
        [
            CustomStatus("pending", from_=("new",), to=("processing",)),
            CustomStatus("review", from_=("pendng",), to=("nwe",)),
        ]
    )
    assert [problem.path for problem in problems] == [
        "status[0].name",
        "status[1].from[0]",
        "status[1].to[0]",
    ]
    assert isinstance(problems[0], Problem)

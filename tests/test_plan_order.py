"""plan.steps(): dependency order from the ORDER table; Plan: summary, data loss and the safety check."""

from __future__ import annotations

import random

import pytest

from topo.diff import Action, Change
from topo.errors import UnsafePlan
from topo.plan import Held, Plan, Step, steps
from topo.state import Key, Kind

C, U, R, D = Action.CREATE, Action.UPDATE, Action.REPLACE, Action.DELETE


def change(action: Action, kind: Kind, name: str, vhost: str = "/") -> Change:
    before = None if action is Action.CREATE else {"x": 1}
    after = None if action is Action.DELETE else {"x": 2}
    return Change(action, Key(kind, vhost, name), before, after)


def plan_with_counts(changes: list[tuple[Change, int | None]]) -> Plan:
    """A plan with the message counts the broker reported beside its changes (None: not counted)."""
    held = {c.key: Held(count) for c, count in changes if count is not None}
    return Plan([c for c, _ in changes], held=held)


def as_tuples(result: list[Step]) -> list[tuple[Action, Kind, str]]:
    return [(s.phase, s.change.kind, s.change.key.name) for s in result]


def all_changes() -> list[Change]:
    """Every (action, kind) pair that diff can produce."""
    return [
        change(C, Kind.VHOST, "new", vhost="new"),
        change(U, Kind.VHOST, "/"),
        change(D, Kind.VHOST, "old", vhost="old"),
        change(C, Kind.VHOST_LIMIT, "max-queues"),
        change(U, Kind.VHOST_LIMIT, "max-connections"),
        change(D, Kind.VHOST_LIMIT, "max-channels"),
        change(C, Kind.POLICY, "p-new"),
        change(U, Kind.POLICY, "p-changed"),
        change(D, Kind.POLICY, "p-old"),
        change(C, Kind.OPERATOR_POLICY, "op-new"),
        change(U, Kind.OPERATOR_POLICY, "op-changed"),
        change(D, Kind.OPERATOR_POLICY, "op-old"),
        change(C, Kind.EXCHANGE, "x-new"),
        change(R, Kind.EXCHANGE, "x-replaced"),
        change(D, Kind.EXCHANGE, "x-old"),
        change(C, Kind.QUEUE, "q-new"),
        change(R, Kind.QUEUE, "q-replaced"),
        change(D, Kind.QUEUE, "q-old"),
        change(C, Kind.BINDING, "b-new"),
        change(D, Kind.BINDING, "b-old"),
    ]


EXPECTED_STEPS: list[tuple[Action, Kind, str]] = [
    (U, Kind.VHOST, "/"),
    (C, Kind.VHOST, "new"),
    (U, Kind.VHOST_LIMIT, "max-connections"),
    (C, Kind.VHOST_LIMIT, "max-queues"),
    (U, Kind.POLICY, "p-changed"),
    (C, Kind.POLICY, "p-new"),
    (U, Kind.OPERATOR_POLICY, "op-changed"),
    (C, Kind.OPERATOR_POLICY, "op-new"),
    (D, Kind.BINDING, "b-old"),
    (D, Kind.QUEUE, "q-old"),
    (D, Kind.QUEUE, "q-replaced"),
    (D, Kind.EXCHANGE, "x-old"),
    (D, Kind.EXCHANGE, "x-replaced"),
    (C, Kind.EXCHANGE, "x-new"),
    (C, Kind.EXCHANGE, "x-replaced"),
    (C, Kind.QUEUE, "q-new"),
    (C, Kind.QUEUE, "q-replaced"),
    (C, Kind.BINDING, "b-new"),
    (D, Kind.OPERATOR_POLICY, "op-old"),
    (D, Kind.POLICY, "p-old"),
    (D, Kind.VHOST_LIMIT, "max-channels"),
    (D, Kind.VHOST, "old"),
]


def test_full_step_order() -> None:
    assert as_tuples(steps(all_changes())) == EXPECTED_STEPS


def test_every_change_becomes_steps_and_a_replace_becomes_two() -> None:
    changes = all_changes()
    result = steps(changes)
    replaces = sum(1 for c in changes if c.action is R)
    assert len(result) == len(changes) + replaces
    for c in changes:
        phases = [s.phase for s in result if s.change is c]
        assert phases == ([D, C] if c.action is R else [c.action])
    assert all(s.phase is not R for s in result)


@pytest.mark.parametrize("seed", range(5))
def test_order_is_deterministic_whatever_the_input_order(seed: int) -> None:
    changes = all_changes()
    random.Random(seed).shuffle(changes)
    assert as_tuples(steps(changes)) == EXPECTED_STEPS


def position(result: list[Step], phase: Action, kind: Kind, name: str) -> int:
    return as_tuples(result).index((phase, kind, name))


def test_vhost_first_then_exchanges_and_queues_then_bindings() -> None:
    changes = [
        change(C, Kind.BINDING, "b", vhost="v"),
        change(C, Kind.QUEUE, "q", vhost="v"),
        change(C, Kind.EXCHANGE, "x", vhost="v"),
        change(C, Kind.POLICY, "p", vhost="v"),
        change(C, Kind.VHOST, "v", vhost="v"),
    ]
    assert as_tuples(steps(changes)) == [
        (C, Kind.VHOST, "v"),
        (C, Kind.POLICY, "p"),  # before the queues it applies to exist
        (C, Kind.EXCHANGE, "x"),
        (C, Kind.QUEUE, "q"),
        (C, Kind.BINDING, "b"),
    ]


def test_deletes_run_bindings_queues_exchanges_then_vhost() -> None:
    changes = [
        change(D, Kind.VHOST, "v", vhost="v"),
        change(D, Kind.EXCHANGE, "x", vhost="v"),
        change(D, Kind.QUEUE, "q", vhost="v"),
        change(D, Kind.BINDING, "b", vhost="v"),
        change(D, Kind.POLICY, "p", vhost="v"),
    ]
    assert as_tuples(steps(changes)) == [
        (D, Kind.BINDING, "b"),
        (D, Kind.QUEUE, "q"),
        (D, Kind.EXCHANGE, "x"),
        (D, Kind.POLICY, "p"),
        (D, Kind.VHOST, "v"),
    ]


def test_replace_is_delete_then_create_around_bindings() -> None:
    changes = [
        change(R, Kind.QUEUE, "q"),
        change(R, Kind.EXCHANGE, "x"),
        change(C, Kind.BINDING, "b-recreated"),
        change(D, Kind.BINDING, "b-dropped"),
    ]
    result = steps(changes)
    assert as_tuples(result) == [
        (D, Kind.BINDING, "b-dropped"),
        (D, Kind.QUEUE, "q"),
        (D, Kind.EXCHANGE, "x"),
        (C, Kind.EXCHANGE, "x"),
        (C, Kind.QUEUE, "q"),
        (C, Kind.BINDING, "b-recreated"),
    ]
    # Both steps of a replace carry the same change, so the create knows the new attributes.
    assert result[1].change is result[4].change


def test_within_a_slot_steps_are_sorted_by_vhost_then_name() -> None:
    changes = [change(C, Kind.QUEUE, name, vhost) for vhost, name in [("b", "a"), ("a", "z"), ("a", "b"), ("b", "0")]]
    assert [(s.change.key.vhost, s.change.key.name) for s in steps(changes)] == [
        ("a", "b"),
        ("a", "z"),
        ("b", "0"),
        ("b", "a"),
    ]


def test_no_changes_no_steps() -> None:
    assert steps([]) == []


# ---- Plan ------------------------------------------------------------------------------------------------


def test_summary_counts() -> None:
    plan = Plan(all_changes())
    assert plan.summary() == {"add": 7, "change": 4, "replace": 2, "destroy": 7}
    assert not plan.empty


def test_empty_plan() -> None:
    plan = Plan()
    assert plan.empty
    assert plan.summary() == {"add": 0, "change": 0, "replace": 0, "destroy": 0}
    assert plan.data_loss() == []
    plan.raise_if_unsafe(allow_data_loss=False)


def test_plan_sorts_changes_for_display() -> None:
    plan = Plan(
        [
            change(C, Kind.BINDING, "b", vhost="a"),
            change(D, Kind.QUEUE, "q2", vhost="a"),
            change(C, Kind.QUEUE, "q1", vhost="a"),
            change(C, Kind.EXCHANGE, "x", vhost="a"),
            change(U, Kind.VHOST, "a", vhost="a"),
            change(C, Kind.QUEUE, "q0", vhost="0"),
        ]
    )
    assert [(c.key.vhost, c.kind, c.key.name) for c in plan.changes] == [
        ("0", Kind.QUEUE, "q0"),
        ("a", Kind.VHOST, "a"),
        ("a", Kind.EXCHANGE, "x"),
        ("a", Kind.QUEUE, "q1"),
        ("a", Kind.QUEUE, "q2"),
        ("a", Kind.BINDING, "b"),
    ]


def lossy_plan() -> Plan:
    return plan_with_counts(
        [
            (change(D, Kind.QUEUE, "orders"), 5),
            (change(R, Kind.QUEUE, "payments"), 3),
            (change(D, Kind.QUEUE, "empty"), 0),
            (change(R, Kind.QUEUE, "uncounted"), None),
            (change(D, Kind.VHOST, "old", vhost="old"), 10),
            (change(C, Kind.QUEUE, "fresh"), None),
        ]
    )


def test_data_loss_lists_only_destructive_changes_with_messages() -> None:
    plan = lossy_plan()
    losses = plan.data_loss()
    assert sorted((c.key.name, plan.messages(c)) for c in losses) == [("old", 10), ("orders", 5), ("payments", 3)]


def test_unsafe_plan_is_refused_without_the_flag() -> None:
    with pytest.raises(UnsafePlan) as caught:
        lossy_plan().raise_if_unsafe(allow_data_loss=False)
    message = str(caught.value)
    assert "--allow-data-loss" in message
    assert "delete queue 'orders' in vhost '/': 5 message(s)" in message
    assert "replace queue 'payments' in vhost '/': 3 message(s)" in message
    assert "delete vhost 'old': 10 message(s)" in message  # not "vhost 'old' in vhost 'old'"
    assert "'empty'" not in message


def test_unsafe_plan_is_allowed_with_the_flag() -> None:
    lossy_plan().raise_if_unsafe(allow_data_loss=True)


def test_deleting_empty_queues_is_safe() -> None:
    plan = plan_with_counts([(change(D, Kind.QUEUE, "empty"), 0), (change(R, Kind.QUEUE, "also-empty"), None)])
    assert plan.data_loss() == []
    plan.raise_if_unsafe(allow_data_loss=False)

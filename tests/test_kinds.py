"""The kind registry, the derived apply order, the plan as a value and loading from memory (no broker)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from topo.diff import Action, Change, diff
from topo.engine import adapt_to_broker
from topo.errors import TopoError, ValidationFailed
from topo.kinds import Kind, definition, registry
from topo.kinds.base import Phase
from topo.kinds.order import schedule
from topo.load import Source, load_topology
from topo.passwords import Password
from topo.plan import Held, Plan, stages
from topo.planfile import plan_from_data, plan_to_data
from topo.state import OFFLINE, Actual, Identity, Key


def test_every_kind_has_its_module() -> None:
    assert [d.kind for d in registry()] == list(Kind)
    for kind in Kind:
        assert definition(kind).kind is kind


def test_the_schedule_has_every_slot_once_and_honours_every_dependency() -> None:
    order = schedule()
    assert sorted(order) == sorted((kind, phase) for kind in Kind for phase in Phase)
    position = {slot: index for index, slot in enumerate(order)}
    for kind in registry():
        for dependency in kind.depends_on:
            assert position[(dependency, Phase.WRITE)] < position[(kind.kind, Phase.WRITE)]
            assert position[(kind.kind, Phase.DELETE)] < position[(dependency, Phase.DELETE)]
        if kind.immutable:
            assert position[(kind.kind, Phase.DELETE)] < position[(kind.kind, Phase.WRITE)]


def test_a_change_no_step_can_make_is_an_error_not_a_skip() -> None:
    binding = Change(Action.UPDATE, Key(Kind.BINDING, "/", "b"), {}, {})
    with pytest.raises(TopoError, match="no step can make it"):
        stages([binding])


def desired_with_default_type() -> object:
    text = "vhosts:\n  v:\n    default_queue_type: quorum\n    queues:\n      q: {}\n"
    return load_topology([], env={}, sources=[Source("t.yaml", text)]).desired


def test_adapting_to_an_old_broker_changes_nothing_it_was_given() -> None:
    desired = desired_with_default_type()
    before = {key: dict(obj.attrs) for key, obj in desired.objects.items()}
    actual = Actual(OFFLINE, vhosts={"v"}, version="3.10.8")
    adapted, warnings = adapt_to_broker(desired, actual)
    assert "default_queue_type" not in adapted.objects[Key(Kind.VHOST, "v", "v")].attrs
    assert warnings and "3.11+" in warnings[0]
    assert {key: obj.attrs for key, obj in desired.objects.items()} == before


def test_a_plan_is_a_frozen_value_with_counts_beside_its_changes() -> None:
    desired = desired_with_default_type()
    actual = Actual(OFFLINE, vhosts=set())
    changes = diff(desired, actual).changes
    one = Plan(changes, held={Key(Kind.QUEUE, "v", "q"): Held(0)})
    other = Plan(list(reversed(changes)), held={Key(Kind.QUEUE, "v", "q"): Held(0)})
    assert one == other
    assert one != Plan(changes, held={Key(Kind.QUEUE, "v", "q"): Held(1)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.changes[0].reason = "changed"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.me = "someone"  # type: ignore[misc]


def test_the_actual_state_needs_an_identity() -> None:
    with pytest.raises(TypeError):
        Actual()  # type: ignore[call-arg]
    assert Actual(Identity("ops", frozenset({"administrator"}))).me == "ops"


def test_files_and_in_memory_sources_load_together_and_problems_name_the_source(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("vhosts:\n  a: {}\n", encoding="utf-8")
    loaded = load_topology([str(path)], env={}, sources=[Source("generated.yaml", "vhosts:\n  b: {}\n")])
    assert loaded.desired.vhosts == ["a", "b"]
    assert loaded.files == [str(path), "generated.yaml"]
    with pytest.raises(ValidationFailed) as caught:
        load_topology([], env={}, sources=[Source("generated.yaml", "vhosts:\n  b: {durabel: true}\n")])
    assert caught.value.problems[0].file == "generated.yaml"


def test_a_plan_survives_json_and_keeps_no_plaintext_password() -> None:
    text = (
        "vhosts:\n  v:\n    queues:\n      q: {arguments: {x-message-ttl: 60000}}\n"
        "users:\n  app: {password: Pl41n-secret, tags: [management]}\n  ops: {password_hash: "
        '"AQIDBKmjPX3DJDtAeit+dvv4vb5TSAUZrWABshVvYP8haWRS"}\n'
    )
    desired = load_topology([], env={}, sources=[Source("t.yaml", text)]).desired
    changes = diff(desired, Actual(OFFLINE, vhosts=set())).changes
    plan = Plan(
        changes,
        warnings=("w",),
        me="ops",
        held={Key(Kind.QUEUE, "v", "q"): Held(2, unknown=True, consumers=3)},
        effective_policies={Key(Kind.QUEUE, "v", "q"): 'policy "p": max-length=5'},
    )
    saved = json.dumps(plan_to_data(plan))
    assert "Pl41n-secret" not in saved
    back = plan_from_data(json.loads(saved))
    assert back.held == plan.held and back.warnings == plan.warnings and back.me == "ops"
    assert back.effective_policies == plan.effective_policies
    # Equal but for the plaintext, which became the hash apply would have sent.
    without_plaintext = [c for c in plan.changes if c.key != Key(Kind.USER, "", "app")]
    assert [c for c in back.changes if c.key != Key(Kind.USER, "", "app")] == without_plaintext
    app = next(c for c in back.changes if c.key == Key(Kind.USER, "", "app"))
    plaintext = Password("", "rabbit_password_hashing_sha256", "Pl41n-secret")
    assert app.after is not None and app.after["password"].same_as(plaintext)
    with pytest.raises(TopoError):
        plan_from_data({"format": 99})

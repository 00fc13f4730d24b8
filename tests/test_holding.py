"""Holds (topo's on-broker record of the bindings a replace must restore): pure logic of reading them."""

from __future__ import annotations

from typing import Any

from topo import holding
from topo.diff import Action, diff
from topo.kinds.binding import from_fields as binding_from_fields
from topo.kinds.vhost import DEFAULTS as VHOST_DEFAULTS
from topo.ownership import out_of_scope
from topo.state import OFFLINE, Actual, Desired, Key, Kind, Obj


def _exchange(name: str, **arguments: Any) -> Obj:
    attrs = {"type": "fanout", "durable": True, "auto_delete": False, "internal": True, "arguments": arguments}
    return Obj(Key(Kind.EXCHANGE, "v", name), attrs)


def _queue(name: str) -> Obj:
    return Obj(Key(Kind.QUEUE, "v", name), {"type": "classic", "durable": True, "auto_delete": False, "arguments": {}})


def _binding(source: str, kind: str, destination: str, key: str) -> Obj:
    return binding_from_fields("v", source, kind, destination, key, {})


def _state(*objs: Obj) -> dict[Key, Obj]:
    return {obj.key: obj for obj in objs}


def _desired(*objs: Obj, prune: bool = True) -> Desired:
    return Desired(objects=_state(Obj(Key(Kind.VHOST, "v", "v"), {}), *objs), vhosts=["v"], prune={"v": prune})


def test_a_queue_hold_plans_its_missing_bindings_and_is_never_an_object_of_its_own() -> None:
    hold = _exchange("topo.hold.1", **{"x-topo-holds": "queue", "x-topo-name": "q"})
    actual = Actual(
        OFFLINE,
        objects=_state(
            Obj(Key(Kind.VHOST, "v", "v"), {}),
            _queue("q"),
            hold,
            _binding("amq.direct", "exchange", "topo.hold.1", "app.1"),
            _binding("amq.direct", "exchange", "topo.hold.1", "app.2"),
            _binding("amq.direct", "queue", "q", "app.2"),  # already back
        ),
        vhosts={"v"},
    )
    # With prune: neither the hold nor its bindings are deleted as undeclared (the binding back is declared),
    # and the recorded binding the files do not declare is not restored only to be pruned.
    declared = _binding("amq.direct", "queue", "q", "app.2")
    assert diff(_desired(_queue("q"), declared, prune=True), actual).changes == []
    result = diff(_desired(_queue("q"), declared, prune=False), actual)
    creates = [
        (c.action, c.key.kind, c.after["source"], c.after["destination"], c.after["routing_key"])
        for c in result.changes
    ]
    assert creates == [(Action.CREATE, Kind.BINDING, "amq.direct", "q", "app.1")]
    assert "interrupted replace" in (result.changes[0].reason or "")
    assert [h.name for h in result.holds] == ["topo.hold.1"]


def test_an_exchange_hold_restores_both_directions_and_self_bindings() -> None:
    into = _exchange("topo.hold.2", **{"x-topo-holds": "exchange", "x-topo-name": "x"})
    out = _exchange("topo.hold.2o", **{"x-topo-holds": "exchange-out", "x-topo-name": "x"})
    x = Obj(
        Key(Kind.EXCHANGE, "v", "x"),
        {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}},
    )
    actual = Actual(
        OFFLINE,
        objects=_state(
            Obj(Key(Kind.VHOST, "v", "v"), {}),
            x,
            _queue("q"),
            into,
            out,
            _binding("topo.hold.2o", "queue", "q", "out"),
            _binding("amq.topic", "exchange", "topo.hold.2", "in"),
            _binding("topo.hold.2o", "exchange", "topo.hold.2", "self"),
        ),
        vhosts={"v"},
    )
    result = diff(_desired(x, _queue("q"), prune=False), actual)
    restored = sorted(
        (c.after["source"], c.after["destination_type"], c.after["destination"], c.after["routing_key"])
        for c in result.changes
    )
    assert restored == [
        ("amq.topic", "exchange", "x", "in"),
        ("x", "exchange", "x", "self"),
        ("x", "queue", "q", "out"),
    ]
    assert result.unmanaged == []  # neither the hold nor its bindings show as unmanaged


def test_a_hold_for_an_object_that_is_gone_and_undeclared_plans_nothing_and_is_kept() -> None:
    hold = _exchange("topo.hold.3", **{"x-topo-holds": "queue", "x-topo-name": "gone"})
    actual = Actual(
        OFFLINE,
        objects=_state(
            Obj(Key(Kind.VHOST, "v", "v"), {}), hold, _binding("amq.direct", "exchange", "topo.hold.3", "k")
        ),
        vhosts={"v"},
    )
    result = diff(_desired(prune=True), actual)
    assert result.changes == [] and result.unmanaged == []
    (seen,) = result.holds
    assert not holding.satisfied(seen, _desired(prune=True), holding.split(actual)[0])  # never released


def _queue_hold_state(*extra: Obj) -> Actual:
    hold = _exchange("topo.hold.4", **{"x-topo-holds": "queue", "x-topo-name": "q"})
    return Actual(
        OFFLINE,
        objects=_state(
            Obj(Key(Kind.VHOST, "v", "v"), dict(VHOST_DEFAULTS)),
            _queue("q"),
            hold,
            _binding("amq.direct", "exchange", "topo.hold.4", "app.1"),
            *extra,
        ),
        vhosts={"v"},
    )


def test_a_recorded_binding_the_files_prune_or_declare_absent_is_not_restored() -> None:
    assert diff(_desired(_queue("q"), prune=True), _queue_hold_state()).changes == []
    absent = _desired(_queue("q"), prune=False)
    absent.absent.add(_binding("amq.direct", "queue", "q", "app.1").key)
    assert diff(absent, _queue_hold_state()).changes == []
    # Without prune it is the application's: restored.
    assert [c.action for c in diff(_desired(_queue("q"), prune=False), _queue_hold_state()).changes] == [Action.CREATE]


def test_a_hold_is_satisfied_only_when_what_it_records_is_back() -> None:
    desired = _desired(_queue("q"), prune=False)
    missing = _queue_hold_state()
    _, (hold,) = holding.split(missing)
    assert not holding.satisfied(hold, desired, holding.split(missing)[0])
    back = _queue_hold_state(_binding("amq.direct", "queue", "q", "app.1"))
    assert holding.satisfied(hold, desired, holding.split(back)[0])
    # Its object gone: nothing to restore onto yet, so it stays.
    gone = holding.split(back)[0]
    del gone.objects[Key(Kind.QUEUE, "v", "q")]
    assert not holding.satisfied(hold, desired, gone)


def test_holds_and_their_bindings_are_out_of_scope_as_topo_own() -> None:
    actual = _queue_hold_state()
    hold = actual.objects[Key(Kind.EXCHANGE, "v", "topo.hold.4")]
    bound = _binding("amq.direct", "exchange", "topo.hold.4", "app.1")
    assert "topo's own record" in (out_of_scope(hold, actual.objects, ()) or "")
    assert "topo.hold.4" in (out_of_scope(bound, actual.objects, ()) or "")


def test_export_leaves_holds_out_with_a_note() -> None:
    from topo.export import build_export

    result = build_export(_queue_hold_state(), ["v"], False, False, "test", [])
    assert "topo.hold" not in result.text
    assert any("topo.hold.* exchanges" in note for note in result.notes)

"""diff(): desired vs actual -> create / update / replace / delete, unmanaged, and the broker's quirks.

Desired objects are built from the models (as the loader does), actual objects from broker-shaped JSON
through the same normalize functions read.py uses, so both sides go through the real canonical form.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import pytest

from topo.diff import Action, Change, DiffResult, diff
from topo.kinds.binding import from_broker as binding_from_broker
from topo.kinds.binding import from_fields as binding_from_fields
from topo.kinds.exchange import from_broker as exchange_from_broker
from topo.kinds.exchange import from_spec as exchange_from_spec
from topo.kinds.policy import from_broker as policy_from_broker
from topo.kinds.policy import from_spec as policy_from_spec
from topo.kinds.queue import from_broker as queue_from_broker
from topo.kinds.queue import from_spec as queue_from_spec
from topo.kinds.vhost import from_broker as vhost_from_broker
from topo.kinds.vhost import from_spec as vhost_from_spec
from topo.kinds.vhost_limit import limit_obj
from topo.model import (
    ClassicQueueSpec,
    ExchangeSpec,
    PolicySpec,
    QuorumQueueSpec,
    StreamQueueSpec,
    VhostSpec,
)
from topo.read import add_definitions
from topo.state import OFFLINE, Actual, Desired, Key, Kind, Obj

V = "/"

# ---- builders --------------------------------------------------------------------------------------------


def want_vhost(name: str = V, **fields: Any) -> Obj:
    return vhost_from_spec(name, VhostSpec.model_validate(fields))


def want_exchange(name: str, vhost: str = V, **fields: Any) -> Obj:
    return exchange_from_spec(vhost, name, ExchangeSpec.model_validate(fields))


def want_queue(name: str, vhost: str = V, **fields: Any) -> Obj:
    spec: Any
    queue_type = fields.get("type", "classic")
    if queue_type == "quorum":
        spec = QuorumQueueSpec.model_validate(fields)
    elif queue_type == "stream":
        spec = StreamQueueSpec.model_validate(fields)
    else:
        spec = ClassicQueueSpec.model_validate(fields)
    return queue_from_spec(vhost, name, spec)


def want_binding(
    source: str,
    destination: str,
    routing_key: str = "",
    destination_type: str = "queue",
    arguments: dict[str, Any] | None = None,
    vhost: str = V,
) -> Obj:
    return binding_from_fields(vhost, source, destination_type, destination, routing_key, arguments or {})


def want_policy(name: str, vhost: str = V, kind: Kind = Kind.POLICY, **fields: Any) -> Obj:
    return policy_from_spec(kind, vhost, name, PolicySpec.model_validate(fields))


def desired(
    *objects: Obj,
    vhosts: Iterable[str] = (V,),
    absent: Iterable[Key] = (),
    external: Iterable[Key] = (),
    prune: bool | dict[str, bool] = False,
) -> Desired:
    result = Desired()
    result.vhosts = list(vhosts)
    for vhost in result.vhosts:
        key = Key(Kind.VHOST, vhost, vhost)
        if not any(o.key == key for o in objects):
            result.objects[key] = want_vhost(vhost)
    for obj in objects:
        result.objects[obj.key] = obj
    result.absent = set(absent)
    result.absent_vhosts = [k.vhost for k in result.absent if k.kind is Kind.VHOST]
    result.external = set(external)
    result.prune = prune if isinstance(prune, dict) else dict.fromkeys(result.vhosts, prune)
    return result


def broker_vhost(name: str = V, **item: Any) -> Obj:
    return vhost_from_broker({"name": name, "description": "", "tags": [], "tracing": False, **item})


def broker_exchange(name: str, vhost: str = V, **item: Any) -> Obj | None:
    return exchange_from_broker(
        vhost, {"name": name, "type": "direct", "durable": True, "auto_delete": False, "internal": False, **item}
    )


def broker_queue(name: str, vhost: str = V, **item: Any) -> Obj | None:
    return queue_from_broker(vhost, {"name": name, "durable": True, "auto_delete": False, "arguments": {}, **item})


def broker_binding(
    source: str,
    destination: str,
    routing_key: str = "",
    destination_type: str = "queue",
    arguments: dict[str, Any] | None = None,
    vhost: str = V,
) -> Obj | None:
    return binding_from_broker(
        vhost,
        {
            "source": source,
            "vhost": vhost,
            "destination": destination,
            "destination_type": destination_type,
            "routing_key": routing_key,
            "arguments": arguments or {},
            "properties_key": "~",
        },
    )


def broker_policy(name: str, vhost: str = V, kind: Kind = Kind.POLICY, **item: Any) -> Obj:
    return policy_from_broker(kind, vhost, {"name": name, "vhost": vhost, **item})


def actual(*objects: Obj | None, vhosts: Iterable[str] = (V,)) -> Actual:
    result = Actual(OFFLINE)
    result.vhosts = set(vhosts)
    for vhost in result.vhosts:
        result.objects[Key(Kind.VHOST, vhost, vhost)] = broker_vhost(vhost)
    for obj in objects:
        if obj is not None:
            result.objects[obj.key] = obj
    return result


def by_key(result: DiffResult) -> dict[Key, Change]:
    keys = [c.key for c in result.changes]
    assert len(keys) == len(set(keys)), "a key appears in two changes"
    return {c.key: c for c in result.changes}


def only(result: DiffResult) -> Change:
    assert len(result.changes) == 1, result.changes
    return result.changes[0]


def qkey(name: str, vhost: str = V) -> Key:
    return Key(Kind.QUEUE, vhost, name)


def xkey(name: str, vhost: str = V) -> Key:
    return Key(Kind.EXCHANGE, vhost, name)


# ---- classification --------------------------------------------------------------------------------------


def test_in_sync_means_no_changes() -> None:
    want = desired(
        want_exchange("orders", type="topic"),
        want_queue("orders.created", type="quorum", arguments={"x-delivery-limit": 5}),
        want_binding("orders", "orders.created", "order.created"),
        want_policy("ttl", pattern="^a", definition={"message-ttl": 1000}),
        want_policy("cap", kind=Kind.OPERATOR_POLICY, pattern=".*", definition={"max-length": 10}),
        limit_obj(V, "max-queues", 100),
    )
    have = actual(
        broker_exchange("orders", type="topic"),
        broker_queue("orders.created", arguments={"x-queue-type": "quorum", "x-delivery-limit": 5}),
        broker_binding("orders", "orders.created", "order.created"),
        broker_policy("ttl", pattern="^a", **{"apply-to": "all"}, priority=0, definition={"message-ttl": 1000}),
        broker_policy(
            "cap", kind=Kind.OPERATOR_POLICY, pattern=".*", **{"apply-to": "all"}, definition={"max-length": 10}
        ),
        limit_obj(V, "max-queues", 100),
    )
    result = diff(want, have)
    assert result.changes == []
    assert result.unmanaged == []


def test_everything_missing_is_created() -> None:
    objects = [
        want_vhost("new", description="fresh", tags=["b", "a"]),
        want_exchange("orders", vhost="new", type="topic"),
        want_queue("q", vhost="new"),
        want_binding("orders", "q", vhost="new"),
        want_policy("ttl", vhost="new", pattern="^q$", definition={"message-ttl": 5}),
        want_policy("cap", vhost="new", kind=Kind.OPERATOR_POLICY, pattern=".*", definition={"max-length": 1}),
        limit_obj("new", "max-connections", 10),
    ]
    result = diff(desired(*objects, vhosts=["new"]), actual(vhosts=[V]))
    changes = by_key(result)
    assert set(changes) == {o.key for o in objects}
    assert all(c.action is Action.CREATE and c.before is None for c in changes.values())
    # A new vhost gets every metadata field, the defaults filled in.
    assert changes[Key(Kind.VHOST, "new", "new")].after == {
        "description": "fresh",
        "tags": ["a", "b"],
        "tracing": False,
        "default_queue_type": None,
    }
    assert changes[xkey("orders", "new")].after == {
        "type": "topic",
        "durable": True,
        "auto_delete": False,
        "internal": False,
        "arguments": {},
    }


@pytest.mark.parametrize("kind", [Kind.POLICY, Kind.OPERATOR_POLICY])
def test_policy_difference_is_an_update(kind: Kind) -> None:
    want = desired(want_policy("ttl", kind=kind, pattern="^a", priority=2, definition={"message-ttl": 2000}))
    have = actual(broker_policy("ttl", kind=kind, pattern="^a", priority=1, definition={"message-ttl": 1000}))
    change = only(diff(want, have))
    assert change.action is Action.UPDATE
    assert change.key == Key(kind, V, "ttl")
    assert change.before == {"pattern": "^a", "apply-to": "all", "priority": 1, "definition": {"message-ttl": 1000}}
    assert change.after == {"pattern": "^a", "apply-to": "all", "priority": 2, "definition": {"message-ttl": 2000}}
    assert change.changed_fields() == ["definition", "priority"]


def test_limit_difference_is_an_update() -> None:
    change = only(diff(desired(limit_obj(V, "max-queues", 100)), actual(limit_obj(V, "max-queues", 50))))
    assert (change.action, change.before, change.after) == (Action.UPDATE, {"value": 50}, {"value": 100})


def test_queue_argument_change_is_a_replace_naming_the_argument() -> None:
    want = desired(want_queue("orders", arguments={"x-message-ttl": 120000}))
    have = actual(broker_queue("orders", arguments={"x-message-ttl": 60000}))
    change = only(diff(want, have))
    assert change.action is Action.REPLACE
    assert change.key == qkey("orders")
    assert change.reason == "arguments.x-message-ttl: 60000 → 120000 (immutable)"
    assert change.before is not None and change.before["arguments"] == {"x-message-ttl": 60000}
    assert change.after is not None and change.after["arguments"] == {"x-message-ttl": 120000}


def test_queue_argument_added_and_removed() -> None:
    want = desired(want_queue("orders", arguments={"x-max-length": 10}))
    have = actual(broker_queue("orders", arguments={"x-overflow": "reject-publish"}))
    change = only(diff(want, have))
    assert change.action is Action.REPLACE
    assert (
        change.reason
        == 'arguments.x-max-length: (none) → 10; arguments.x-overflow: "reject-publish" → (none) (immutable)'
    )


def test_queue_type_change_is_a_replace() -> None:
    want = desired(want_queue("orders", type="quorum"))
    have = actual(broker_queue("orders"))
    change = only(diff(want, have))
    assert change.action is Action.REPLACE
    assert change.reason == 'type: "classic" → "quorum" (immutable)'


def test_exchange_property_change_is_a_replace() -> None:
    want = desired(want_exchange("orders", type="topic", internal=True))
    have = actual(broker_exchange("orders", type="direct"))
    change = only(diff(want, have))
    assert change.action is Action.REPLACE
    assert change.key == xkey("orders")
    assert "internal: false → true" in (change.reason or "")
    assert 'type: "direct" → "topic"' in (change.reason or "")


def test_binding_with_other_routing_key_is_create_plus_unmanaged_not_update() -> None:
    want = desired(want_exchange("x"), want_queue("q"), want_binding("x", "q", "new.key"))
    old = broker_binding("x", "q", "old.key")
    have = actual(broker_exchange("x"), broker_queue("q"), old)
    result = diff(want, have)
    change = only(result)
    assert change.action is Action.CREATE
    assert change.after is not None and change.after["routing_key"] == "new.key"
    assert result.unmanaged == [old]


def test_binding_arguments_are_part_of_identity_in_any_key_order() -> None:
    want = desired(
        want_exchange("h", type="headers"),
        want_queue("q"),
        want_binding("h", "q", arguments={"x-match": "all", "kind": "order"}),
    )
    have = actual(
        broker_exchange("h", type="headers"),
        broker_queue("q"),
        broker_binding("h", "q", arguments={"kind": "order", "x-match": "all"}),
    )
    assert diff(want, have).changes == []
    have_other = actual(
        broker_exchange("h", type="headers"),
        broker_queue("q"),
        broker_binding("h", "q", arguments={"kind": "order", "x-match": "any"}),
    )
    result = diff(want, have_other)
    assert [c.action for c in result.changes] == [Action.CREATE]
    assert len(result.unmanaged) == 1


# ---- replace re-creates bindings -------------------------------------------------------------------------


def test_replacing_a_queue_recreates_its_bindings_declared_or_not() -> None:
    want = desired(
        want_exchange("orders", type="topic"),
        want_queue("orders.created", arguments={"x-message-ttl": 2}),
        want_queue("other"),
        want_binding("orders", "orders.created", "order.created"),
        want_binding("orders", "other", "x"),
    )
    declared = broker_binding("orders", "orders.created", "order.created")
    undeclared = broker_binding("orders", "orders.created", "legacy.#")
    builtin_source = broker_binding("amq.topic", "orders.created", "mqtt.#")
    untouched = broker_binding("orders", "other", "x")
    have = actual(
        broker_exchange("orders", type="topic"),
        broker_queue("orders.created", arguments={"x-message-ttl": 1}),
        broker_queue("other"),
        declared,
        undeclared,
        builtin_source,
        untouched,
    )
    result = diff(want, have)
    changes = by_key(result)
    assert changes.pop(qkey("orders.created")).action is Action.REPLACE
    recreated = [cast(Obj, b) for b in (declared, undeclared, builtin_source)]
    assert set(changes) == {b.key for b in recreated}
    for binding in recreated:
        change = changes[binding.key]
        assert change.action is Action.CREATE
        assert change.after == binding.attrs
        assert change.reason == "re-created: replacing queue 'orders.created' drops it"
    # Re-created bindings are changes, not "unmanaged".
    assert result.unmanaged == []


def test_replacing_an_exchange_recreates_bindings_on_both_sides() -> None:
    want = desired(
        want_exchange("hub", type="topic"),
        want_exchange("spoke", type="fanout"),
        want_queue("q"),
        want_binding("hub", "q", "a"),
        want_binding("hub", "spoke", "b", destination_type="exchange"),
    )
    out_of_hub = broker_binding("hub", "q", "a")
    hub_to_spoke = broker_binding("hub", "spoke", "b", destination_type="exchange")
    into_hub = broker_binding("amq.direct", "hub", "c", destination_type="exchange")
    have = actual(
        broker_exchange("hub", type="direct"),
        broker_exchange("spoke", type="fanout"),
        broker_queue("q"),
        out_of_hub,
        hub_to_spoke,
        into_hub,
    )
    changes = by_key(diff(want, have))
    assert changes.pop(xkey("hub")).action is Action.REPLACE
    assert {k: c.action for k, c in changes.items()} == {
        cast(Obj, b).key: Action.CREATE for b in (out_of_hub, hub_to_spoke, into_hub)
    }
    assert all(c.reason == "re-created: replacing exchange 'hub' drops it" for c in changes.values())


def test_replace_does_not_recreate_bindings_whose_other_end_is_deleted() -> None:
    # `old` is declared absent: its binding to the replaced queue goes with it and must not come back.
    want = desired(want_queue("q", type="quorum"), absent=[xkey("old")])
    doomed = broker_binding("old", "q")
    have = actual(broker_exchange("old"), broker_queue("q"), doomed)
    changes = by_key(diff(want, have))
    assert doomed is not None
    assert doomed.key not in changes
    assert {k: c.action for k, c in changes.items()} == {qkey("q"): Action.REPLACE, xkey("old"): Action.DELETE}


def test_replace_does_not_recreate_a_pruned_binding() -> None:
    want = desired(want_exchange("x"), want_queue("q", arguments={"x-max-length": 1}), prune=True)
    stray = broker_binding("x", "q", "stray")
    have = actual(broker_exchange("x"), broker_queue("q"), stray)
    changes = by_key(diff(want, have))
    assert stray is not None
    assert changes[stray.key].action is Action.DELETE
    assert changes[qkey("q")].action is Action.REPLACE


def test_new_binding_to_replaced_queue_is_created_once() -> None:
    want = desired(want_exchange("x"), want_queue("q", type="quorum"), want_binding("x", "q", "new"))
    have = actual(broker_exchange("x"), broker_queue("q"))
    result = diff(want, have)
    changes = by_key(result)
    binding = want_binding("x", "q", "new")
    assert changes[binding.key].action is Action.CREATE
    assert changes[binding.key].reason is None
    assert len(result.changes) == 2


# ---- vhost metadata --------------------------------------------------------------------------------------


def test_undeclared_vhost_metadata_is_not_managed() -> None:
    have = actual()
    have.objects[Key(Kind.VHOST, V, V)] = broker_vhost(V, description="set by hand", tags="x,y", tracing=True)
    assert diff(desired(), have).changes == []


def test_declared_vhost_metadata_difference_is_an_update_with_merged_after() -> None:
    have = actual()
    have.objects[Key(Kind.VHOST, V, V)] = broker_vhost(V, description="old", tags=["ops"], tracing=True)
    change = only(diff(desired(want_vhost(V, description="new")), have))
    assert change.action is Action.UPDATE
    assert change.before == {"description": "old", "tags": ["ops"], "tracing": True, "default_queue_type": None}
    assert change.after == {"description": "new", "tags": ["ops"], "tracing": True, "default_queue_type": None}
    assert change.changed_fields() == ["description"]


def test_vhost_tags_as_string_in_any_order_equal_a_list() -> None:
    have = actual()
    have.objects[Key(Kind.VHOST, V, V)] = broker_vhost(V, tags="b,a")
    assert diff(desired(want_vhost(V, tags=["a", "b"])), have).changes == []
    have.objects[Key(Kind.VHOST, V, V)] = broker_vhost(V, tags="b, c")
    assert only(diff(desired(want_vhost(V, tags=["a", "b"])), have)).action is Action.UPDATE


def test_vhost_metadata_from_the_metadata_object_and_undefined_queue_type() -> None:
    have = actual()
    have.objects[Key(Kind.VHOST, V, V)] = vhost_from_broker(
        {"name": V, "metadata": {"description": "d", "tags": ["t"], "default_queue_type": "quorum"}}
    )
    assert diff(desired(want_vhost(V, description="d", tags=["t"], default_queue_type="quorum")), have).changes == []
    have.objects[Key(Kind.VHOST, V, V)] = vhost_from_broker({"name": V, "default_queue_type": "undefined"})
    change = only(diff(desired(want_vhost(V, default_queue_type="classic")), have))
    assert change.before is not None and change.before["default_queue_type"] is None


# ---- unmanaged, prune, absent ----------------------------------------------------------------------------


def stray_objects(vhost: str = V) -> list[Obj]:
    objects = [
        broker_exchange("stray.x", vhost),
        broker_queue("stray.q", vhost),
        broker_binding("stray.x", "stray.q", vhost=vhost),
        broker_policy("stray.p", vhost, pattern=".*", definition={"max-length": 1}),
        broker_policy("stray.op", vhost, kind=Kind.OPERATOR_POLICY, pattern=".*", definition={"max-length": 1}),
        limit_obj(vhost, "max-connections", 5),
    ]
    return [o for o in objects if o is not None]


def test_undeclared_objects_are_listed_as_unmanaged_without_prune() -> None:
    strays = stray_objects()
    result = diff(desired(), actual(*strays))
    assert result.changes == []
    assert result.unmanaged == sorted(strays, key=lambda o: o.key)


def test_undeclared_objects_are_deleted_with_prune() -> None:
    strays = stray_objects()
    result = diff(desired(prune=True), actual(*strays))
    assert result.unmanaged == []
    changes = by_key(result)
    assert set(changes) == {o.key for o in strays}
    for obj in strays:
        change = changes[obj.key]
        assert (change.action, change.before, change.after) == (Action.DELETE, obj.attrs, None)
        assert change.reason == "not declared (prune)"


def test_prune_is_per_vhost_and_unmanaged_vhosts_are_out_of_scope() -> None:
    want = desired(vhosts=["a", "b"], prune={"a": True, "b": False})
    have = actual(*stray_objects("a"), *stray_objects("b"), *stray_objects("c"), vhosts=["a", "b", "c"])
    result = diff(want, have)
    assert {c.key.vhost for c in result.changes} == {"a"}
    assert all(c.action is Action.DELETE for c in result.changes)
    assert {o.key.vhost for o in result.unmanaged} == {"b"}


def test_external_objects_are_neither_unmanaged_nor_pruned() -> None:
    want = desired(want_queue("q"), want_binding("legacy", "q"), external=[xkey("legacy"), qkey("theirs")], prune=True)
    have = actual(broker_exchange("legacy", type="topic"), broker_queue("theirs"), broker_queue("q"))
    result = diff(want, have)
    assert [(c.action, c.kind) for c in result.changes] == [(Action.CREATE, Kind.BINDING)]
    assert result.unmanaged == []


def test_absent_object_is_deleted_only_if_present() -> None:
    want = desired(absent=[qkey("old"), xkey("never"), Key(Kind.POLICY, V, "oldpol")])
    have = actual(broker_queue("old"), broker_policy("oldpol", pattern=".*", definition={"a": 1}))
    changes = by_key(diff(want, have))
    assert set(changes) == {qkey("old"), Key(Kind.POLICY, V, "oldpol")}
    assert all(c.action is Action.DELETE and c.reason == "declared absent" for c in changes.values())
    assert changes[qkey("old")].before == {"type": "classic", "durable": True, "auto_delete": False, "arguments": {}}


def test_absent_binding_is_deleted_only_if_present() -> None:
    gone = want_binding("x", "q", "k")
    want = desired(want_exchange("x"), want_queue("q"), absent=[gone.key])
    assert diff(want, actual(broker_exchange("x"), broker_queue("q"))).changes == []
    change = only(diff(want, actual(broker_exchange("x"), broker_queue("q"), broker_binding("x", "q", "k"))))
    assert (change.action, change.key) == (Action.DELETE, gone.key)


def test_absent_vhost_is_deleted_only_if_present() -> None:
    key = Key(Kind.VHOST, "old", "old")
    want = desired(vhosts=[], absent=[key])
    change = only(diff(want, actual(vhosts=[V, "old"])))
    assert (change.action, change.key, change.after) == (Action.DELETE, key, None)
    assert diff(want, actual(vhosts=[V])).changes == []


# ---- broker quirks ---------------------------------------------------------------------------------------


def test_queue_without_x_queue_type_is_classic() -> None:
    want = desired(want_queue("q", type="classic"))
    assert diff(want, actual(broker_queue("q"))).changes == []
    assert diff(want, actual(broker_queue("q", arguments=None))).changes == []


def test_queue_type_from_argument_or_top_level_type() -> None:
    want = desired(want_queue("q", type="quorum", arguments={"x-max-length": 5}))
    from_argument = broker_queue("q", arguments={"x-queue-type": "quorum", "x-max-length": 5})
    from_type_field = broker_queue("q", type="quorum", arguments={"x-max-length": 5})
    assert diff(want, actual(from_argument)).changes == []
    assert diff(want, actual(from_type_field)).changes == []


def test_exchange_without_optional_fields_matches_defaults() -> None:
    have = actual(exchange_from_broker(V, {"name": "x", "type": "fanout"}))
    assert diff(desired(want_exchange("x", type="fanout")), have).changes == []


def test_integer_and_string_arguments_differ() -> None:
    want = desired(want_queue("q", arguments={"x-message-ttl": 60000}))
    change = only(diff(want, actual(broker_queue("q", arguments={"x-message-ttl": "60000"}))))
    assert change.action is Action.REPLACE
    assert change.reason == 'arguments.x-message-ttl: "60000" → 60000 (immutable)'


def test_true_and_one_differ() -> None:
    want = desired(want_policy("p", pattern=".*", definition={"flag": True}))
    change = only(diff(want, actual(broker_policy("p", pattern=".*", definition={"flag": 1}))))
    assert change.action is Action.UPDATE
    want_q = desired(want_queue("q", arguments={"x-single-active-consumer": True}))
    have_q = actual(broker_queue("q", arguments={"x-single-active-consumer": 1}))
    assert only(diff(want_q, have_q)).action is Action.REPLACE


def test_builtin_and_transient_objects_are_never_unmanaged_or_pruned() -> None:
    have = actual(
        broker_exchange(""),
        broker_exchange("amq.direct"),
        broker_exchange("amq.topic", type="topic"),
        broker_exchange("amq.rabbitmq.trace", type="topic", internal=True),
        broker_queue("amq.gen-JzTY20BRgKO-HjmUJj0wLg", durable=False, exclusive=True),
        broker_queue("mqtt-subscription-client1qos1"),
        broker_queue("amq.rabbitmq.reply-to"),
        broker_queue("client-named-exclusive", durable=False, exclusive=True),
        broker_binding("", "some-queue", "some-queue"),  # the default exchange's implicit binding
        broker_binding("amq.topic", "mqtt-subscription-client1qos1", "sensors.#"),
        broker_binding("amq.direct", "amq.gen-JzTY20BRgKO-HjmUJj0wLg", "rpc"),
    )
    assert len(have.objects) == 1  # only the vhost itself
    for prune in (False, True):
        result = diff(desired(prune=prune), have)
        assert result.changes == []
        assert result.unmanaged == []


def read_from(definitions: dict[str, Any], vhost: str = V) -> Actual:
    """The pure half of read_actual: a definitions export as the broker returns it -> actual state."""
    actual = Actual(OFFLINE, vhosts={vhost})
    vhost_obj = vhost_from_broker({"name": vhost, "description": "", "tags": [], "tracing": False})
    actual.objects[vhost_obj.key] = vhost_obj
    add_definitions(actual, definitions, default_vhost=vhost, keep={vhost})
    return actual


def test_binding_to_a_client_named_exclusive_queue_is_not_pruned() -> None:
    # Definitions leave exclusive queues out ("they cannot be restored") but list every explicit binding,
    # transient ones included: a binding whose destination queue is missing from the queue list belongs to
    # an exclusive queue of a connected client, and deleting it would break that client.
    definitions = {
        "exchanges": [{"name": "events", "vhost": V, "type": "fanout", "durable": True, "arguments": {}}],
        "queues": [],
        "bindings": [
            {
                "source": "events",
                "vhost": V,
                "destination": "worker-7.replies",
                "destination_type": "queue",
                "routing_key": "",
                "arguments": {},
            }
        ],
        "policies": [],
    }
    want = desired(want_exchange("events", type="fanout"), prune=True)
    result = diff(want, read_from(definitions))
    assert result.changes == []
    assert result.unmanaged == []


def test_read_actual_normalises_a_definitions_export() -> None:
    definitions = {
        "exchanges": [
            {"name": "orders", "vhost": V, "type": "topic", "durable": True, "auto_delete": False, "arguments": {}},
            {"name": "amq.direct", "vhost": V, "type": "direct", "durable": True, "arguments": {}},
        ],
        "queues": [
            {"name": "q", "vhost": V, "durable": True, "auto_delete": False, "arguments": {"x-queue-type": "quorum"}},
            {"name": "c", "vhost": V, "durable": True, "auto_delete": False, "arguments": {}},
        ],
        "bindings": [
            {"source": "orders", "vhost": V, "destination": "q", "destination_type": "queue", "routing_key": "#"},
        ],
        "policies": [{"name": "p", "vhost": V, "pattern": ".*", "apply-to": "queues", "priority": 1, "definition": {}}],
    }
    want = desired(
        want_exchange("orders", type="topic"),
        want_queue("q", type="quorum"),
        want_queue("c"),
        want_binding("orders", "q", "#"),
        want_policy("p", pattern=".*", priority=1, **{"apply-to": "queues"}, definition={"max-length": 1}),
    )
    result = diff(want, read_from(definitions))
    assert [(c.action, c.kind) for c in result.changes] == [(Action.UPDATE, Kind.POLICY)]
    assert result.unmanaged == []


def test_a_replace_does_not_recreate_an_interrupted_migrations_own_binding() -> None:
    # A kill between a migration's `route -> Q` and its removal leaves that binding; the migration makes and
    # removes it, so re-creating it after the migration deleted route would fail (404).
    route = "topo.migrate.0123456789ab.route"
    want = desired(want_exchange("orders", type="topic"), want_queue("jobs", arguments={"x-message-ttl": 2}))
    have = actual(
        broker_exchange("orders", type="topic"),
        broker_queue("jobs", arguments={"x-message-ttl": 1}),
        broker_binding(route, "jobs", ""),
        broker_binding("orders", "jobs", "order.*"),
    )
    changes = by_key(diff(want, have))
    assert changes.pop(qkey("jobs")).action is Action.REPLACE
    assert [(c.after or {})["source"] for c in changes.values()] == ["orders"]

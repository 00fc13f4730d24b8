"""Scope: what clients own at run time, what the files ignore, consumers as "in use", policy hints.

The broker-side objects are the ones a real Celery 5.7 worker and client declared on RabbitMQ 3.10
(listed from the management API), in the shape the broker reports them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_diff import (
    actual,
    broker_binding,
    broker_exchange,
    broker_policy,
    broker_queue,
    desired,
    qkey,
    want_binding,
    want_exchange,
    want_queue,
    xkey,
)

from topo.diff import Action, Change, diff
from topo.errors import UnsafePlan, ValidationFailed
from topo.export import ExportScope, build_export
from topo.hints import replace_hint
from topo.load import load_topology
from topo.ownership import client_owned, set_aside
from topo.plan import Held, Plan
from topo.render import plan_to_json, render_text
from topo.state import Key, Kind

WORKER = "w1@host.celery.pidbox"
EVENTS = "celeryev.d72f2057-f8be-4c0c-9cb5-597f3c8c3c7b"
RESULTS = "edb35abe-70af-3f4b-97d7-edf6125ac4c1"


def celery_broker(vhost: str = "/") -> list[Any]:
    """What `celery worker -E` plus an rpc:// client leave on the broker (exclusive queues included)."""
    return [
        broker_exchange("celery", vhost),
        broker_exchange("celeryev", vhost, type="topic"),
        broker_exchange("celery.pidbox", vhost, type="fanout", durable=False),
        broker_exchange("reply.celery.pidbox", vhost, durable=False),
        broker_queue("celery", vhost),
        broker_queue(WORKER, vhost, durable=False, auto_delete=True, exclusive=True,
                     arguments={"x-expires": 10000, "x-message-ttl": 300000}),
        broker_queue(EVENTS, vhost, durable=False, auto_delete=True, exclusive=True,
                     arguments={"x-expires": 60000, "x-message-ttl": 5000}),
        broker_queue(RESULTS, vhost, auto_delete=True, arguments={"x-expires": 86400000}),
        broker_binding("celery", "celery", "celery", vhost=vhost),
        broker_binding("celery.pidbox", WORKER, vhost=vhost),
        broker_binding("celeryev", EVENTS, "worker.#", vhost=vhost),
    ]  # fmt: skip


def test_prune_leaves_a_celery_workers_objects_alone() -> None:
    files = desired(
        want_exchange("celery"), want_queue("celery"), want_binding("celery", "celery", "celery"), prune=True
    )
    result = diff(files, actual(*celery_broker()))
    assert result.changes == []
    assert result.unmanaged == []


def test_celery_quorum_delayed_delivery_objects_are_the_clients() -> None:
    objects = [broker_exchange("celery_delayed_delivery", type="topic")]
    for level in range(28):
        objects.append(broker_exchange(f"celery_delayed_{level}", type="topic"))
        objects.append(
            broker_queue(f"celery_delayed_{level}", arguments={"x-queue-type": "quorum", "x-message-ttl": 1000})
        )
        objects.append(broker_binding(f"celery_delayed_{level}", f"celery_delayed_{level}", "1.#"))
    objects.append(broker_binding("celery_delayed_delivery", "tasks", "#.tasks"))
    objects.append(broker_queue("tasks", arguments={"x-queue-type": "quorum"}))
    objects.append(broker_queue("app_celery_delayed_3", arguments={"x-queue-type": "quorum"}))
    result = diff(desired(want_queue("tasks", type="quorum"), prune=True), actual(*objects))
    assert result.changes == [] and result.unmanaged == []


def test_pika_style_objects_the_clients_own_are_never_pruned_nor_listed() -> None:
    broker = actual(
        broker_exchange("events"),
        broker_exchange("per-host", auto_delete=True),
        broker_queue("host-7.replies", auto_delete=True),
        broker_queue("session", arguments={"x-expires": 30000}),
        broker_binding("events", "host-7.replies"),
        broker_binding("per-host", "session"),
    )
    result = diff(desired(want_exchange("events"), prune=True), broker)
    assert result.changes == [] and result.unmanaged == []


def test_non_durable_objects_are_pruned_only_with_prune_non_durable() -> None:
    broker = actual(
        broker_exchange("events"),
        broker_exchange("scratch-x", durable=False),
        broker_queue("scratch", durable=False),
        broker_queue("legacy"),
        broker_binding("events", "scratch"),
    )
    files = desired(want_exchange("events"), prune=True)
    result = diff(files, broker)
    assert [(c.action, c.key) for c in result.changes] == [(Action.DELETE, qkey("legacy"))]
    assert {o.key.name for o in result.unmanaged} == {"scratch-x", "scratch", '["events","queue","scratch","",{}]'}
    text = render_text(Plan(result.changes, result.unmanaged))
    assert "prune_non_durable: true deletes it" in text
    files.prune_non_durable.add("/")
    result = diff(files, broker)
    assert {c.key.name for c in result.changes if c.kind is not Kind.BINDING} == {"legacy", "scratch", "scratch-x"}
    assert all(c.action is Action.DELETE for c in result.changes) and result.unmanaged == []


def test_a_declared_object_is_managed_even_where_clients_would_own_it() -> None:
    celery = (want_exchange("celery"), want_queue("celery"), want_binding("celery", "celery", "celery"))
    files = desired(*celery, want_exchange("celeryev", type="topic", durable=False), prune=True)
    result = diff(files, actual(*celery_broker()))
    assert [(c.action, c.key.name) for c in result.changes] == [
        (Action.REPLACE, "celeryev"),
        (Action.CREATE, json.dumps(["celeryev", "queue", EVENTS, "worker.#", {}], separators=(",", ":"))),
    ]  # the replace puts back the worker's binding it drops


def test_hosting_providers_policies_are_theirs() -> None:
    policy = {"pattern": ".*", "apply-to": "all", "priority": 0, "definition": {"queue-version": 2}}
    broker = actual(
        broker_policy("AWS-DEFAULT-POLICY-SINGLE-INSTANCE", **policy),
        broker_policy("ha-all-AWS-OWNED-DO-NOT-DELETE", **policy),
        broker_policy("default_operator_policy_AWS_managed", kind=Kind.OPERATOR_POLICY, **policy),
        broker_policy("mine", **policy),
    )
    result = diff(desired(prune=True), broker)
    assert [(c.action, c.key.name) for c in result.changes] == [(Action.DELETE, "mine")]


def test_ignore_patterns_take_objects_and_their_bindings_out_of_scope() -> None:
    broker = actual(
        broker_exchange("legacy.in"),
        broker_queue("legacy.work"),
        broker_queue("stray"),
        broker_exchange("events"),
        broker_binding("events", "legacy.work"),
        broker_binding("legacy.in", "stray"),
        broker_policy("legacy-ttl", pattern="^legacy", definition={"message-ttl": 1}),
    )
    files = desired(want_exchange("events"), prune=True)
    files.ignore = {"/": ["legacy*"]}
    result = diff(files, broker)
    assert [(c.action, c.key) for c in result.changes] == [(Action.DELETE, qkey("stray"))]
    assert result.unmanaged == []


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "topology.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_loader_merges_top_level_ignore_into_every_vhost(tmp_path: Path) -> None:
    loaded = load_topology([write(tmp_path, "ignore: [a*]\nvhosts:\n  one: {ignore: [b?]}\n  two: {}\n")])
    assert loaded.desired.ignore == {"one": ["a*", "b?"], "two": ["a*"]}


def test_loader_refuses_a_declared_object_that_an_ignore_pattern_matches(tmp_path: Path) -> None:
    text = "vhosts:\n  app:\n    ignore: [celery*]\n    queues:\n      celery: {}\n"
    with pytest.raises(ValidationFailed) as caught:
        load_topology([write(tmp_path, text)])
    message = str(caught.value)
    assert "topology.yaml:3: vhosts.app.ignore[0]: queue 'celery'" in message
    assert "topology.yaml:5" in message and "cannot both manage and ignore" in message


def test_loader_needs_prune_beside_prune_non_durable(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match=r"vhosts\.app\.prune_non_durable: needs prune: true"):
        load_topology([write(tmp_path, "vhosts:\n  app: {prune_non_durable: true}\n")])
    loaded = load_topology([write(tmp_path, "prune: true\nvhosts:\n  app: {prune_non_durable: true}\n")])
    assert loaded.desired.prune_non_durable == {"app"}


def test_loader_refuses_an_empty_ignore_pattern(tmp_path: Path) -> None:
    with pytest.raises(ValidationFailed, match=r"ignore\[0\]"):
        load_topology([write(tmp_path, "ignore: ['']\n")])


# ---- consumers --------------------------------------------------------------------------------------------


def queue_change(action: Action, name: str, **after: Any) -> Change:
    before = {"type": "classic", "durable": True, "auto_delete": False, "arguments": {}}
    new = None if action is Action.DELETE else {**before, **after}
    return Change(action, qkey(name), before, new, "why")


def plan_of(*changes: tuple[Change, int, int]) -> Plan:
    """A plan whose destructive changes the broker reported as holding (messages, consumers)."""
    held = {change.key: Held(messages, False, consumers) for change, messages, consumers in changes}
    return Plan(tuple(change for change, _, _ in changes), held=held)


def test_apply_refuses_a_plan_that_cancels_consumers_naming_queue_count_and_flag() -> None:
    plan = plan_of((queue_change(Action.REPLACE, "orders"), 0, 2), (queue_change(Action.DELETE, "idle"), 0, 0))
    assert [c.key.name for c in plan.disruptions()] == ["orders"]
    with pytest.raises(UnsafePlan) as caught:
        plan.raise_if_unsafe(allow_data_loss=True)
    message = str(caught.value)
    assert "replace queue 'orders' in vhost '/': 2 consumers" in message and "--allow-disruption" in message
    assert "idle" not in message
    plan.raise_if_unsafe(allow_data_loss=False, allow_disruption=True)


def test_plan_shows_messages_and_consumers_of_every_queue_it_destroys() -> None:
    plan = plan_of((queue_change(Action.REPLACE, "orders"), 0, 1), (queue_change(Action.DELETE, "idle"), 0, 0))
    text = render_text(plan)
    assert "# 1 consumer subscribed: the broker would cancel them" in text
    assert "# not in use: no messages, no consumers" in text
    assert "Disruption: 1 consumer of 1 object would be cancelled (apply needs --allow-disruption)." in text
    data = plan_to_json(plan)
    assert [(c["name"], c["consumers"]) for c in data["disruption"]] == [("orders", 1)]


# ---- hints ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queue_type", "before", "after", "key"),
    [
        ("classic", {"x-message-ttl": 1000}, {"x-message-ttl": 2000}, "message-ttl"),
        ("classic", {}, {"x-dead-letter-exchange": "dlx"}, "dead-letter-exchange"),
        ("quorum", {"x-delivery-limit": 5}, {"x-delivery-limit": 10}, "delivery-limit"),
        ("stream", {"x-max-age": "7D"}, {"x-max-age": "1D"}, "max-age"),
        ("classic", {"x-max-priority": 5}, {"x-max-priority": 10}, None),
        ("quorum", {"x-quorum-initial-group-size": 3}, {"x-quorum-initial-group-size": 5}, None),
        ("stream", {"x-message-ttl": 1}, {"x-message-ttl": 2}, None),
    ],
)
def test_replace_hint_names_the_policy_key(queue_type: str, before: dict, after: dict, key: str | None) -> None:
    old = {"type": queue_type, "durable": True, "auto_delete": False, "arguments": before}
    change = Change(Action.REPLACE, qkey("q"), old, {**old, "arguments": after})
    hint = replace_hint(change)
    if key is None:
        assert hint is None
    else:
        assert hint is not None and json.dumps(key) in hint and "other differences" not in hint


def test_replace_hint_says_when_other_differences_need_the_replace_anyway() -> None:
    old = {"type": "classic", "durable": True, "auto_delete": False, "arguments": {"x-message-ttl": 1}}
    new = {**old, "durable": False, "arguments": {"x-message-ttl": 2}}
    hint = replace_hint(Change(Action.REPLACE, qkey("q"), old, new))
    assert hint is not None and "other differences still need this replace" in hint
    retyped = {**old, "type": "quorum", "arguments": {"x-message-ttl": 2}}
    assert replace_hint(Change(Action.REPLACE, qkey("q"), old, retyped)) is None
    exchange = {"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}}
    alternate = {**exchange, "arguments": {"alternate-exchange": "unrouted"}}
    hint = replace_hint(Change(Action.REPLACE, xkey("x"), exchange, alternate))
    assert hint is not None and '"alternate-exchange"' in hint


# ---- export -------------------------------------------------------------------------------------------------


def test_export_leaves_out_what_clients_own_and_says_why() -> None:
    state = actual(*celery_broker())
    owned, ignored = set_aside(dict(state.objects), ())
    names = {obj.key.name for obj, _ in owned if obj.kind is not Kind.BINDING}
    assert names == {"celeryev", "celery.pidbox", "reply.celery.pidbox", RESULTS} and ignored == 0
    result = build_export(state, ["/"], False, False, "a test", [])
    assert "celeryev" not in result.text and RESULTS not in result.text and "celery: {}" in result.text
    [note] = result.notes
    assert note.startswith("left out 6 objects that clients declare for themselves at run time")
    assert "--include-client-owned keeps them" in note
    assert f"queue \"{RESULTS}\" in vhost '/': auto-delete queue" in note


def test_export_can_include_client_objects_and_ignore_names() -> None:
    state = actual(*celery_broker())
    result = build_export(state, ["/"], False, False, "a test", [], ExportScope(True, ("celery*", "reply.*")))
    assert RESULTS in result.text and "celery" not in result.text.split("vhosts:")[1]
    assert result.notes == ["left out 8 objects matching --ignore patterns"]


def test_client_owned_reasons_name_the_framework() -> None:
    objects: dict[Key, Any] = {}
    assert "Celery's event exchange" in (client_owned(broker_exchange("celeryev"), objects) or "")
    assert "pidbox" in (client_owned(broker_queue("a@b.celery.pidbox"), objects) or "")
    assert client_owned(broker_queue("orders"), objects) is None
    assert client_owned(broker_exchange("orders"), objects) is None

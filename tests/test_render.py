"""Plan rendering: text (with and without colour) and JSON, checked against golden files.

The golden files live in tests/golden/. After an intended change to the output, regenerate them with

    TOPO_UPDATE_GOLDEN=1 python -m pytest tests/test_render.py

and review the diff of tests/golden/ before committing: the golden files are the specification.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from topo.diff import Action, Change
from topo.kinds.binding import from_fields as binding_from_fields
from topo.kinds.parameter import parameter_obj
from topo.kinds.vhost_limit import limit_obj
from topo.plan import Held, Plan
from topo.render import UNMANAGED_SHOWN, plan_to_json, render_json, render_text
from topo.state import Key, Kind, Obj

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("TOPO_UPDATE_GOLDEN") == "1"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"{path} is missing: run TOPO_UPDATE_GOLDEN=1 python -m pytest {__file__}"
    expected = path.read_text(encoding="utf-8")
    assert text == expected, f"output differs from {path}; if intended, regenerate with TOPO_UPDATE_GOLDEN=1"


def exchange_attrs(type_: str = "direct", **extra: Any) -> dict[str, Any]:
    return {"type": type_, "durable": True, "auto_delete": False, "internal": False, "arguments": {}, **extra}


def queue_attrs(type_: str = "classic", arguments: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": type_, "durable": True, "auto_delete": False, "arguments": arguments or {}}


def policy_attrs(pattern: str, definition: dict[str, Any], priority: int = 0) -> dict[str, Any]:
    return {"pattern": pattern, "apply-to": "queues", "priority": priority, "definition": definition}


def binding(
    source: str,
    destination: str,
    routing_key: str = "",
    destination_type: str = "queue",
    arguments: dict[str, Any] | None = None,
    vhost: str = "/",
) -> Obj:
    return binding_from_fields(vhost, source, destination_type, destination, routing_key, arguments or {})


def binding_change(action: Action, obj: Obj, reason: str | None = None) -> Change:
    attrs = dict(obj.attrs)
    if action is Action.CREATE:
        return Change(action, obj.key, None, attrs, reason)
    return Change(action, obj.key, attrs, None, reason)


def full_plan() -> Plan:
    """Every action on every kind it applies to, in two vhosts, plus unmanaged objects and a warning."""
    vhost_before = {"description": "old", "tags": ["ops"], "tracing": False, "default_queue_type": None}
    changes = [
        Change(Action.UPDATE, Key(Kind.VHOST, "/", "/"), vhost_before, {**vhost_before, "description": "orders"}),
        Change(
            Action.CREATE,
            Key(Kind.VHOST, "new", "new"),
            None,
            {"description": "", "tags": ["a", "b"], "tracing": False, "default_queue_type": None},
        ),
        Change(Action.DELETE, Key(Kind.VHOST, "old", "old"), {}, None, "declared absent"),
        Change(Action.CREATE, Key(Kind.VHOST_LIMIT, "/", "max-queues"), None, {"value": 100}),
        Change(Action.UPDATE, Key(Kind.VHOST_LIMIT, "/", "max-connections"), {"value": 10}, {"value": 20}),
        Change(Action.DELETE, Key(Kind.VHOST_LIMIT, "new", "max-connections"), {"value": 5}, None, "declared absent"),
        Change(Action.CREATE, Key(Kind.POLICY, "/", "ttl"), None, policy_attrs("^orders\\.", {"message-ttl": 60000})),
        Change(
            Action.UPDATE,
            Key(Kind.POLICY, "/", "lazy"),
            policy_attrs(".*", {"max-length": 10}),
            policy_attrs(".*", {"max-length": 20}, priority=1),
        ),
        Change(
            Action.DELETE, Key(Kind.POLICY, "/", "stale"), policy_attrs(".*", {"x": 1}), None, "not declared (prune)"
        ),
        Change(Action.CREATE, Key(Kind.OPERATOR_POLICY, "/", "cap"), None, policy_attrs(".*", {"max-length": 1000})),
        Change(
            Action.UPDATE,
            Key(Kind.OPERATOR_POLICY, "/", "limit"),
            policy_attrs(".*", {"max-length-bytes": 1}),
            policy_attrs(".*", {"max-length-bytes": 2}),
        ),
        Change(
            Action.DELETE,
            Key(Kind.OPERATOR_POLICY, "/", "gone"),
            policy_attrs(".*", {"expires": 1}),
            None,
            "declared absent",
        ),
        Change(Action.CREATE, Key(Kind.EXCHANGE, "/", "orders"), None, exchange_attrs("topic")),
        Change(
            Action.REPLACE,
            Key(Kind.EXCHANGE, "/", "events"),
            exchange_attrs("direct"),
            exchange_attrs("fanout"),
            'type: "direct" → "fanout" (immutable)',
        ),
        Change(Action.DELETE, Key(Kind.EXCHANGE, "/", "legacy"), exchange_attrs(), None, "declared absent"),
        Change(
            Action.CREATE,
            Key(Kind.QUEUE, "/", "café.commandes"),
            None,
            queue_attrs("quorum", {"x-delivery-limit": 5, "x-dead-letter-exchange": "dlx"}),
        ),
        Change(
            Action.REPLACE,
            Key(Kind.QUEUE, "/", "payments"),
            queue_attrs(arguments={"x-message-ttl": 60000}),
            queue_attrs(arguments={"x-message-ttl": 120000}),
            "arguments.x-message-ttl: 60000 → 120000 (immutable)",
        ),
        Change(Action.DELETE, Key(Kind.QUEUE, "/", "scratch"), queue_attrs(), None, "not declared (prune)"),
        Change(Action.DELETE, Key(Kind.QUEUE, "/", "drained"), queue_attrs(), None, "declared absent"),
        binding_change(Action.CREATE, binding("orders", "café.commandes", "order.created")),
        binding_change(
            Action.CREATE,
            binding("amq.topic", "payments", "pay.#"),
            "re-created: replacing queue 'payments' drops it",
        ),
        binding_change(Action.CREATE, binding("orders", "events", "#", destination_type="exchange")),
        binding_change(
            Action.DELETE,
            binding("headers", "payments", arguments={"x-match": "any", "kind": "refund"}),
            "not declared (prune)",
        ),
        Change(Action.CREATE, Key(Kind.EXCHANGE, "new", "inbox"), None, exchange_attrs("x-delayed-message")),
    ]
    unmanaged = [
        Obj(Key(Kind.QUEUE, "/", "manual"), queue_attrs()),
        binding("orders", "manual", "debug.#"),
        limit_obj("new", "max-queues", 7),
    ]
    # What the broker counted, kept beside the changes.
    held = {
        Key(Kind.VHOST, "old", "old"): Held(12),
        Key(Kind.QUEUE, "/", "payments"): Held(3),
        Key(Kind.QUEUE, "/", "scratch"): Held(1),
        Key(Kind.QUEUE, "/", "drained"): Held(0),
    }
    return Plan(changes, unmanaged, ["exchange type x-delayed-message needs the delayed message plugin"], held=held)


def test_text_without_colour_matches_golden() -> None:
    check_golden("plan.txt", render_text(full_plan(), colour=False))


def test_text_with_colour_matches_golden() -> None:
    check_golden("plan_colour.txt", render_text(full_plan(), colour=True))


def test_json_matches_golden() -> None:
    check_golden("plan.json", render_json(full_plan()))


def test_colour_is_only_decoration() -> None:
    plain = render_text(full_plan(), colour=False)
    coloured = render_text(full_plan(), colour=True)
    assert "\x1b" not in plain
    assert "\x1b[" in coloured
    assert ANSI.sub("", coloured) == plain


def test_colour_codes_per_action() -> None:
    coloured = render_text(full_plan(), colour=True)
    assert '  \x1b[32m+\x1b[0m exchange "orders"' in coloured
    assert '  \x1b[33m~\x1b[0m policy "lazy"' in coloured
    assert '  \x1b[35m-/+\x1b[0m queue "payments"' in coloured
    assert '  \x1b[31m-\x1b[0m exchange "legacy"' in coloured


def test_empty_plan_says_no_changes() -> None:
    assert render_text(Plan(), colour=False) == "No changes. The broker matches the topology.\n"
    assert render_text(Plan(), colour=True) == "No changes. The broker matches the topology.\n"


def test_empty_plan_still_lists_unmanaged_objects_but_no_summary() -> None:
    text = render_text(Plan([], [Obj(Key(Kind.QUEUE, "/", "manual"), queue_attrs())]), colour=False)
    assert text.startswith("No changes. The broker matches the topology (1 unmanaged object left alone, below).\n")
    assert 'queue "manual" in vhost "/"' in text
    assert "Plan:" not in text


def test_text_mentions_data_loss_and_the_flag() -> None:
    text = render_text(full_plan(), colour=False)
    assert "Plan: 10 to add, 4 to change, 2 to replace, 8 to destroy." in text
    assert "Data loss: 16 messages in 3 objects (apply needs --allow-data-loss)." in text
    assert "# holds 3 messages: they would be lost" in text
    assert "# holds 1 message: they would be lost" in text


def test_unmanaged_list_is_capped() -> None:
    extra = 5
    unmanaged = [Obj(Key(Kind.QUEUE, "/", f"q{i:02}"), queue_attrs()) for i in range(UNMANAGED_SHOWN + extra)]
    plan = Plan([], unmanaged)
    text = render_text(plan, colour=False)
    assert f"Unmanaged: {UNMANAGED_SHOWN + extra} objects on the broker" in text
    assert f'queue "q{UNMANAGED_SHOWN - 1:02}"' in text
    assert f'queue "q{UNMANAGED_SHOWN:02}"' not in text
    assert f"… and {extra} more (see --json)" in text
    assert len(plan_to_json(plan)["unmanaged"]) == UNMANAGED_SHOWN + extra


def test_json_shape() -> None:
    plan = full_plan()
    data = json.loads(render_json(plan))
    assert data["format_version"] == "1"
    assert set(data) == {"format_version", "changes", "summary", "data_loss", "disruption", "unmanaged", "warnings"}
    assert len(data["changes"]) == len(plan.changes)
    for item, change in zip(data["changes"], plan.changes, strict=True):
        assert set(item) == {
            "action",
            "kind",
            "vhost",
            "name",
            "before",
            "after",
            "reason",
            "messages",
            "messages_unknown",
            "consumers",
            "hint",
        }
        assert item["action"] == change.action.value
        assert item["kind"] == change.kind.value
        assert item["vhost"] == change.key.vhost
        assert item["before"] == change.before
        assert item["after"] == change.after
        assert item["reason"] == change.reason
        assert item["messages"] == plan.messages(change)
    assert data["summary"] == {"add": 10, "change": 4, "replace": 2, "destroy": 8}
    assert sorted(c["name"] for c in data["data_loss"]) == ["old", "payments", "scratch"]
    assert data["warnings"] == ["exchange type x-delayed-message needs the delayed message plugin"]


def test_json_names_bindings_by_their_ends() -> None:
    data = plan_to_json(full_plan())
    names = {c["name"] for c in data["changes"] if c["kind"] == "binding"}
    assert 'orders → café.commandes (queue) routing_key="order.created"' in names
    assert 'headers → payments (queue) arguments={"kind": "refund", "x-match": "any"}' in names
    unmanaged = {(u["kind"], u["name"]) for u in data["unmanaged"]}
    assert ("binding", 'orders → manual (queue) routing_key="debug.#"') in unmanaged
    assert ("queue", "manual") in unmanaged


def test_json_keeps_unicode_and_is_one_document() -> None:
    text = render_json(full_plan())
    assert "café.commandes" in text
    assert text.endswith("}\n")
    json.loads(text)


@pytest.mark.parametrize("colour", [False, True])
def test_text_ends_with_one_newline(colour: bool) -> None:
    text = render_text(full_plan(), colour=colour)
    assert text.endswith("\n")
    assert not text.endswith("\n\n")


@pytest.mark.parametrize("password", ["two words", "p@ss/word", "a:b", "x"])
def test_uri_passwords_are_masked_in_every_output(password: str) -> None:
    # RabbitMQ accepts unencoded spaces and @ in shovel and federation URIs: masking must not rely on
    # the URI grammar (or on a scrub of known secrets, which stdout does not get).
    before = parameter_obj("/", "federation-upstream", "dc2", {"uri": f"amqp://fed:{password}z@old-host"})
    after = parameter_obj("/", "federation-upstream", "dc2", {"uri": [f"amqp://fed:{password}y@new-host"]})
    unmanaged = parameter_obj("/", "shovel", "s", {"src-uri": f"amqps://u:{password}w@h/v", "dest-uri": "amqp://"})
    plan = Plan(
        changes=[
            Change(Action.UPDATE, after.key, dict(before.attrs), dict(after.attrs)),
            Change(Action.CREATE, Key(Kind.PARAMETER, "/", "new"), None, dict(before.attrs)),
        ],
        unmanaged=[unmanaged],
    )
    for text in (render_text(plan, colour=False), render_json(plan)):
        for secret in (f"{password}z", f"{password}y", f"{password}w"):
            assert secret not in text
        assert "fed:***@new-host" in text and "fed:***@old-host" in text


def test_a_migrated_queue_says_its_messages_are_moved_not_lost() -> None:
    from topo.migrate import Migration

    key = Key(Kind.QUEUE, "shop", "jobs")
    before, after = queue_attrs(), {**queue_attrs(), "type": "quorum"}
    change = Change(Action.REPLACE, key, before, after, "type classic → quorum (immutable)")
    migration = Migration("shop", "jobs", before, after, messages=7, bindings=1)
    text = render_text(Plan([change], held={key: Held(7, False, 0)}, migrations=(migration,)), colour=False)
    assert "# holds 7 messages: the migration below moves them, none is lost" in text
    assert "they would be lost" not in text and "Data loss" not in text
    assert 'Migration of queue "jobs" in vhost "shop": 7 message(s)' in text

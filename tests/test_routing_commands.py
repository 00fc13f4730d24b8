"""route, explain and test offline: the simulator's rules, policy precedence, and the commands' output."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cli_runner import run_topo
from topo.policy import Policy, effective, match
from topo.route import Message, RouteError, Topology, dead_letter, headers_match, route
from topo.state import Key, Kind, Obj, binding_key

ORDERS = str(Path(__file__).parent.parent / "examples" / "orders")


def _objects(vhost: str = "v", **spec: Any) -> dict[Key, Obj]:
    objects: dict[Key, Obj] = {}
    for name, (kind, arguments) in spec.get("exchanges", {}).items():
        key = Key(Kind.EXCHANGE, vhost, name)
        internal = kind.endswith("!")
        attrs = {
            "type": kind.rstrip("!"),
            "durable": True,
            "auto_delete": False,
            "internal": internal,
            "arguments": arguments,
        }
        objects[key] = Obj(key, attrs)
    for name, (kind, arguments) in spec.get("queues", {}).items():
        key = Key(Kind.QUEUE, vhost, name)
        objects[key] = Obj(key, {"type": kind, "durable": True, "auto_delete": False, "arguments": arguments})
    for source, destination_type, destination, routing_key, arguments in spec.get("bindings", []):
        key = binding_key(vhost, source, destination_type, destination, routing_key, arguments)
        objects[key] = Obj(
            key,
            {
                "source": source,
                "destination_type": destination_type,
                "destination": destination,
                "routing_key": routing_key,
                "arguments": arguments,
            },
        )
    for name, (kind, pattern, apply_to, priority, definition) in spec.get("policies", {}).items():
        key = Key(kind, vhost, name)
        objects[key] = Obj(
            key, {"pattern": pattern, "apply-to": apply_to, "priority": priority, "definition": definition}
        )
    return objects


def test_headers_rules() -> None:
    assert headers_match({}, {}) is True  # all over zero arguments
    assert headers_match({"x-match": "any"}, {"a": 1}) is False  # any over zero arguments
    assert headers_match({"a": None}, {"a": "anything"}) is True  # void: presence only
    assert headers_match({"a": None}, {}) is False
    assert headers_match({"a": 2.0}, {"a": 2}) is True  # Erlang's ==, as 3.x matches
    assert headers_match({"a": 2.0}, {"a": 2}, exact_numbers=True) is False  # 4.x: exact
    assert headers_match({"a": [2]}, {"a": [2]}, exact_numbers=True) is True
    assert headers_match({"a": 1}, {"a": True}) is False  # true is an atom
    assert headers_match({"a": "1"}, {"a": 1}) is False
    assert headers_match({"x-k": 1}, {}) is True  # x- arguments ignored by all
    assert headers_match({"x-match": "all-with-x", "x-k": 1}, {}) is False
    assert headers_match({"x-match": "any-with-x", "x-k": 1}, {"x-k": 1}) is True
    assert headers_match({"x-match": "any", "a": 1, "b": 2}, {"b": 2}) is True
    assert headers_match({"a": 1, "b": 2}, {"b": 2}) is False


def test_chains_cycles_alternates_and_one_copy() -> None:
    objects = _objects(
        exchanges={
            "in": ("topic", {"alternate-exchange": "by-argument"}),
            "loop": ("fanout", {}),
            "by-argument": ("fanout", {}),
            "by-policy": ("fanout", {}),
            "hidden": ("direct!", {}),
            "hash": ("x-consistent-hash", {}),
        },
        queues={name: ("classic", {}) for name in ("a", "b", "lost", "policy-lost", "h1", "h2")},
        bindings=[
            ("in", "queue", "a", "a.#", {}),
            ("in", "queue", "a", "#", {}),  # a second path to the same queue: still one copy
            ("in", "exchange", "loop", "#", {}),
            ("loop", "exchange", "in", "", {}),  # a cycle
            ("loop", "exchange", "hidden", "", {}),
            ("hidden", "queue", "b", "", {}),  # hidden is direct: "" key never matches "a.b" -> its alternate
            ("by-argument", "queue", "lost", "", {}),
            ("by-policy", "queue", "policy-lost", "", {}),
            ("hash", "queue", "h1", "1", {}),
            ("hash", "queue", "h2", "1", {}),
        ],
        policies={
            "ae": (Kind.POLICY, "^(in|hidden)$", "exchanges", 1, {"alternate-exchange": "by-policy"}),
        },
    )
    topology = Topology.of(objects, "v")
    result = route(topology, "in", Message(("a.b",)))
    # `hidden` matched nothing: its policy's alternate exchange applies at that hop; `in` matched, so
    # its own alternate (set by argument, which would win over the policy) is not used.
    assert result.queues == ["a", "policy-lost"]
    assert [s.via for s in result.paths["policy-lost"]] == ["binding", "binding", "alternate-exchange", "binding"]
    assert route(topology, "in", Message(("",))).queues == ["a", "b"]  # "" is hidden's own key
    unmatched = Topology.of({k: o for k, o in objects.items() if o.attrs.get("routing_key") != "#"}, "v")
    assert route(unmatched, "in", Message(("x",))).queues == ["lost"]  # the argument wins over the policy
    with pytest.raises(RouteError, match="internal"):
        route(topology, "hidden", Message(("",)))
    with pytest.raises(RouteError, match="does not exist"):
        route(topology, "nope", Message(("",)))
    hashed = route(topology, "hash", Message(("k",)))
    assert hashed.queues == [] and hashed.one_of[0].candidates == ["queue h1", "queue h2"]
    assert route(topology, "", Message(("a", "missing"))).queues == ["a"]


def test_dead_letters_follow_arguments_then_policies() -> None:
    objects = _objects(
        exchanges={"dlx": ("direct", {})},
        queues={
            "work": ("classic", {"x-dead-letter-routing-key": "parked"}),
            "parked": ("classic", {}),
            "self": ("classic", {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "self"}),
        },
        bindings=[("dlx", "queue", "parked", "parked", {})],
        policies={
            "dl": (
                Kind.POLICY,
                "^work$",
                "queues",
                0,
                {"dead-letter-exchange": "dlx", "dead-letter-routing-key": "ignored"},
            )
        },
    )
    topology = Topology.of(objects, "v")
    result = dead_letter(topology, "work", Message(("orig",)))
    assert (result.exchange, result.routing_key) == ("dlx", "parked")
    assert "policy 'dl'" in (result.exchange_source or "") and "argument" in (result.routing_key_source or "")
    assert result.route is not None and result.route.queues == ["parked"]
    cycle = dead_letter(topology, "self", Message(("",)))
    assert cycle.route is not None and cycle.route.queues == ["self"] and any("cycle" in n for n in cycle.notes)
    assert dead_letter(topology, "parked", Message(("",))).route is None


def test_policy_precedence_and_merging() -> None:
    def policy(
        name: str,
        pattern: str,
        priority: int,
        definition: dict[str, Any],
        apply_to: str = "all",
        operator: bool = False,
    ) -> Policy:
        return Policy(name, pattern, apply_to, priority, definition, operator)

    policies = [
        policy("low", "^q", 1, {"max-length": 10}),
        policy("high", "q", 5, {"max-length": 100, "message-ttl": 1000, "delivery-limit": 3}),
        policy("twin", "q$", 5, {"max-length": 7}),
        policy("exchanges-only", ".*", 9, {"alternate-exchange": "x"}, "exchanges"),
        policy("quorum-only", ".*", 8, {"max-length": 1}, "quorum_queues"),
        policy("cap", ".*", 0, {"max-length": 50, "message-ttl": 5000}, "queues", operator=True),
    ]
    found = match([p for p in policies if not p.operator], Kind.QUEUE, "q", "classic")
    assert found.winner is not None and found.winner.name == "twin" and found.refused == {"high": ["delivery-limit"]}
    quorum = match([p for p in policies if not p.operator], Kind.QUEUE, "q", "quorum")
    assert quorum.winner is not None and quorum.winner.name == "quorum-only"
    tie = match([policy("one", "q", 5, {}), policy("two", "q", 5, {})], Kind.QUEUE, "q", "classic")
    assert tie.winner is not None and [p.name for p in tie.tied] == ["two"]
    result = effective(policies, Kind.QUEUE, "q", {"x-message-ttl": 500, "x-overflow": "drop-head"}, "classic")
    assert result.keys["max-length"][0] == 7  # twin's 7 beats the operator policy's 50
    assert result.keys["message-ttl"][0] == 500  # the operator policy's 5000 and the argument's 500: the smaller
    assert result.keys["overflow"] == ("drop-head", "argument x-overflow")
    # "high" sets delivery-limit, which classic queues refuse: the whole policy stays off them (4.x and 3.x).
    assert result.policy.winner is not None and result.policy.winner.name == "twin"
    assert result.policy.refused == {"high": ["delivery-limit"]}
    # A stream refuses a whole policy that sets max-length (and the operator policy too).
    stream = effective(policies, Kind.QUEUE, "q", {}, "stream")
    assert stream.policy.winner is None and stream.operator_policy.winner is None


def test_route_command_text_and_json() -> None:
    result = run_topo("route", "-f", ORDERS, "--exchange", "orders", "-k", "order.paid.eu", "-H", "risk=high")
    assert result.code == 0, result.output
    assert '→ queue "orders.fraud-review"' in result.stdout and '→ queue "orders.shipping"' in result.stdout
    assert 'orders --"order.paid.#"--> exchange orders.fraud-screen' in result.stdout
    as_json = run_topo("route", "-f", ORDERS, "-e", "orders", "-k", "order.refunded.eu", "--json")
    body = json.loads(as_json.stdout)
    assert body["queues"] == [] and body["unroutable"] is True
    typed = json.loads(
        run_topo("route", "-f", ORDERS, "-e", "orders", "-k", "order.paid.x", "-H", 'risk="high"', "--json").stdout
    )
    assert typed["queues"] == ["orders.fraud-review", "orders.shipping"]
    refused = run_topo("route", "-f", ORDERS, "-e", "orders.fraud-screen")
    assert refused.code == 1 and "internal" in refused.stderr
    bad = run_topo("route", "-f", ORDERS, "-e", "orders", "-H", "novalue")
    assert bad.code == 1 and "NAME=VALUE" in bad.stderr
    dead = json.loads(run_topo("route", "-f", ORDERS, "--dead-letter", "orders.shipping", "--json").stdout)
    assert dead["queues"] == ["orders.shipping.retry"] and dead["dead_letter_exchange"] == "orders.dlx"


def test_explain_command() -> None:
    result = run_topo("explain", "-f", ORDERS, "orders.billing")
    assert result.code == 0, result.output
    assert 'policy: "work-queue-limits" (priority 10' in result.stdout
    assert "max-length-bytes = 2147483648  (policy 'work-queue-limits')" in result.stdout
    assert '"orders" "order.created.*"' in result.stdout
    assert 'reaching: "orders.billing.retry"' in result.stdout
    body = json.loads(run_topo("explain", "-f", ORDERS, "orders.fraud-screen", "--json").stdout)
    assert body[0]["kind"] == "exchange" and body[0]["bindings_out"][0]["destination"] == "orders.fraud-review"
    missing = run_topo("explain", "-f", ORDERS, "nothing")
    assert missing.code == 1 and "no queue or exchange named 'nothing'" in missing.stderr


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_test_command_exit_codes(tmp_path: Path) -> None:
    passing = run_topo("test", "-f", ORDERS)
    assert passing.code == 0 and "10 passed (offline, simulated)." in passing.stdout
    failing = _write(
        tmp_path,
        "fail.yaml",
        """\
        version: 1
        tests:
          - name: wrong on purpose
            exchange: orders
            routing_key: order.paid.eu
            expect: [orders.billing]
        """,
    )
    result = run_topo("test", "-f", ORDERS, "--tests", str(failing))
    assert result.code == 1
    assert f"FAILED {failing}:3 wrong on purpose" in result.stdout
    assert "expected: orders.billing" in result.stdout and "actual:   orders.shipping" in result.stdout
    assert 'path:     orders.shipping: orders --"order.paid.#"--> queue orders.shipping' in result.stdout
    bad = _write(
        tmp_path,
        "bad.yaml",
        """\
        version: 1
        tests:
          - name: typo
            exchange: orders
            expekt: unroutable
        """,
    )
    result = run_topo("test", "-f", ORDERS, "--tests", str(bad))
    assert result.code == 4 and f"{bad}:" in result.stderr and "expekt" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "topology.yaml").write_text("version: 1\nvhosts: {v: {}}\n", encoding="utf-8")
    assert run_topo("test", "-f", str(empty)).code == 5

"""--target and --vhost: plans and applies limited to some objects and what they depend on."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from broker_api import Api
from cli_runner import broker_env, run_topo
from topo.diff import Action, Change
from topo.plan import Plan
from topo.state import Actual, Desired, Identity, Key, Kind, Obj
from topo.target import narrow, parse_targets, select


def topology(vhost: str, other: str) -> str:
    return f"""
vhosts:
  {json.dumps(vhost)}:
    exchanges:
      orders: {{type: topic}}
      dlx: {{type: fanout}}
      audit: {{}}
    queues:
      parking: {{}}
      orders.created: {{arguments: {{x-max-length: 5, x-dead-letter-exchange: dlx}}}}
      audit.log: {{}}
    bindings:
      - {{source: orders, destination: orders.created, routing_key: "order.#"}}
      - {{source: dlx, destination: parking}}
      - {{source: audit, destination: audit.log}}
  {json.dumps(other)}:
    queues:
      elsewhere: {{}}
"""


def _drop(api: Api, vhost: str) -> None:
    requests.delete(api._url("vhosts", vhost), auth=api.auth, timeout=30)


def _planned(result) -> list[tuple[str, str, str]]:
    return sorted((c["action"], c["kind"], c["name"]) for c in json.loads(result.stdout)["changes"])


def test_a_target_brings_what_it_depends_on_and_the_output_says_partial(topo, vhost_name: str) -> None:
    other = vhost_name + "-b"
    result = topo(
        "plan", "--json", "--target", f"queue/{vhost_name}/orders.created", topology=topology(vhost_name, other)
    )
    assert result.code == 0, result.output
    assert _planned(result) == [
        ("create", "exchange", "dlx"),
        ("create", "queue", "orders.created"),
        ("create", "vhost", vhost_name),
    ]
    document = json.loads(result.stdout)
    assert document["partial"] == {"targets": [f"queue/{vhost_name}/orders.created"], "vhosts": []}
    assert any(w.startswith("Partial plan: only --target") for w in document["warnings"])
    text = topo("plan", "--target", f"queue/{vhost_name}/orders.created")
    assert "Partial plan: only --target" in text.stdout
    markdown = topo("plan", "--format", "markdown", "--target", f"queue/{vhost_name}/orders.created")
    assert "Partial plan" in markdown.stdout


def test_a_binding_comes_with_its_two_ends_and_patterns_match_names(topo, vhost_name: str) -> None:
    other = vhost_name + "-b"
    result = topo(
        "plan",
        "--json",
        "--target",
        f"queue/{vhost_name}/orders.*",
        "--target",
        f"exchange/{vhost_name}/orders",
        topology=topology(vhost_name, other),
    )
    assert [c for c in _planned(result) if c[1] == "binding"] == [
        ("create", "binding", 'orders → orders.created (queue) routing_key="order.#"')
    ]


def test_targeted_apply_changes_only_the_targets_and_verifies_them(topo, api: Api, vhost_name: str) -> None:
    other = vhost_name + "-b"
    try:
        applied = topo("apply", "--auto-approve", "--vhost", other, topology=topology(vhost_name, other))
        assert applied.code == 0, applied.output
        assert [q["name"] for q in api.get("queues", other)] == ["elsewhere"]
        assert vhost_name not in {v["name"] for v in api.get("vhosts")}
        targeted = topo("apply", "--auto-approve", "--target", f"queue/{vhost_name}/orders.created")
        assert targeted.code == 0, targeted.output
        assert "Verified" in targeted.stderr
        assert sorted(q["name"] for q in api.get("queues", vhost_name)) == ["orders.created"]
        rest = topo("plan", "--json")
        assert ("create", "queue", "audit.log") in _planned(rest) and (
            "create",
            "queue",
            "orders.created",
        ) not in _planned(rest)
        assert topo("apply", "--auto-approve").code == 0
        assert topo("plan", "--detailed-exitcode").code == 0
    finally:
        _drop(api, other)


def test_a_targeted_replace_keeps_the_bindings_it_drops(topo, api: Api, vhost_name: str) -> None:
    other = vhost_name + "-b"
    try:
        assert topo("apply", "--auto-approve", topology=topology(vhost_name, other)).code == 0
        changed = topology(vhost_name, other).replace("x-max-length: 5", "x-max-length: 6")
        result = topo(
            "apply", "--auto-approve", "--json", "--target", f"queue/{vhost_name}/orders.created", topology=changed
        )
        assert result.code == 0, result.output
        kinds = sorted((c["action"], c["kind"]) for c in json.loads(result.stdout)["plan"]["changes"])
        assert kinds == [("create", "binding"), ("replace", "queue")]
        assert any(b["destination"] == "orders.created" for b in api.bindings(vhost_name))
    finally:
        _drop(api, other)


def test_targets_are_saved_with_a_plan(topo, broker, api: Api, vhost_name: str, tmp_path: Path) -> None:
    other = vhost_name + "-b"
    out = str(tmp_path / "plan.json")
    planned = topo("plan", "--out", out, "--vhost", other, topology=topology(vhost_name, other))
    assert planned.code == 0 and json.loads(Path(out).read_text())["vhosts"] == [other]
    try:
        applied = run_topo("apply", out, env=broker_env(broker))
        assert applied.code == 0, applied.output
        assert "Partial plan: only --vhost" in applied.stdout
        assert [q["name"] for q in api.get("queues", other)] == ["elsewhere"]
        assert vhost_name not in {v["name"] for v in api.get("vhosts")}
    finally:
        _drop(api, other)


def test_target_syntax() -> None:
    targets = parse_targets(["queue///orders", "queue/a/b/c", "user/app", "vhost/shop"], ["/", "a", "a/b"])
    assert [(t.kind, t.vhost, t.name) for t in targets] == [
        (Kind.QUEUE, "/", "orders"),
        (Kind.QUEUE, "a/b", "c"),
        (Kind.USER, "", "app"),
        (Kind.VHOST, "shop", "shop"),
    ]


def test_a_permission_target_brings_its_user() -> None:
    desired = Desired()
    user = Obj(Key(Kind.USER, "", "app"), {"tags": []})
    permission = Obj(Key(Kind.PERMISSION, "v", "app"), {"configure": "", "write": "", "read": ""})
    desired.objects = {user.key: user, permission.key: permission}
    desired.vhosts = ["v"]
    changes = [Change(Action.CREATE, o.key, None, o.attrs) for o in (user, permission)]
    selection = select(
        changes,
        desired,
        Actual(Identity("admin", frozenset({"administrator"})), vhosts={"v"}),
        parse_targets(["permission/v/app"], ["v"]),
        [],
    )
    assert user.key in selection.keys and permission.key in selection.keys


def test_narrowing_keeps_what_the_plan_says_about_the_queues_it_creates() -> None:
    kept = Obj(Key(Kind.QUEUE, "v", "kept"), {"durable": True})
    dropped = Obj(Key(Kind.QUEUE, "v", "dropped"), {"durable": True})
    plan = Plan(
        tuple(Change(Action.CREATE, o.key, None, o.attrs) for o in (kept, dropped)),
        me="admin",
        effective_policies={kept.key: "policy ttl", dropped.key: "policy other"},
    )
    desired = Desired()
    desired.objects = {kept.key: kept, dropped.key: dropped}
    desired.vhosts = ["v"]
    selection = select(
        list(plan.changes),
        desired,
        Actual(Identity("admin", frozenset({"administrator"})), vhosts={"v"}),
        parse_targets(["queue/v/kept"], ["v"]),
        [],
    )
    narrowed = narrow(plan, selection)
    assert [c.key for c in narrowed.changes] == [kept.key]
    assert dict(narrowed.effective_policies) == {kept.key: "policy ttl"}
    assert narrowed.me == "admin" and narrowed.warnings[-1].startswith("Partial plan")

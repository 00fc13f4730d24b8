"""The core loop against the real test node: apply, plan, drift, replace, data-loss guard, odd names."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from broker_api import Api
from topo.client import ManagementClient
from topo.connection import resolve_connection

pytestmark = pytest.mark.broker


def topo_client(broker: Any) -> ManagementClient:
    """topo's own client for the test broker, for tests that drive the engine directly."""
    connection = resolve_connection(url=broker.url, user=broker.user, password=broker.password, env={}, broker=None)
    return ManagementClient(connection)


def pipeline(vhost: str, ttl: int = 60000, extra: str = "") -> str:
    return f"""
    vhosts:
      {json.dumps(vhost)}:
        description: order pipeline
        tags: [orders, test]
        limits:
          max-queues: 50
        exchanges:
          orders: {{type: topic}}
          orders.dlx: {{type: fanout}}
          audit: {{type: headers}}
        queues:
          orders.created:
            type: quorum
            arguments: {{x-dead-letter-exchange: orders.dlx, x-delivery-limit: 3}}
          orders.retry:
            arguments: {{x-message-ttl: {ttl}, x-dead-letter-exchange: orders}}
          orders.parking: {{}}
          audit.eu: {{}}
        bindings:
          - {{source: orders, destination: orders.created, routing_key: order.created}}
          - {{source: orders.dlx, destination: orders.retry}}
          - {{source: orders, destination: audit, destination_type: exchange, routing_key: "#"}}
          - {{source: audit, destination: audit.eu, arguments: {{x-match: all, region: eu}}}}
        policies:
          parking-ttl:
            pattern: "^orders\\\\.parking$"
            apply-to: queues
            definition: {{message-ttl: 86400000}}
        operator_policies:
          cap:
            pattern: ".*"
            apply-to: queues
            definition: {{max-length: 100000}}
    {extra}
    """


def test_apply_then_plan_is_empty_and_apply_is_idempotent(topo, vhost_name: str, api: Api) -> None:
    first = topo("plan", "--detailed-exitcode", topology=pipeline(vhost_name))
    assert first.code == 2, first.output
    assert "Plan: 15 to add, 0 to change, 0 to replace, 0 to destroy." in first.stdout

    applied = topo("apply", "--auto-approve")
    assert applied.code == 0, applied.output
    assert "Verified" in applied.stderr

    again = topo("plan", "--detailed-exitcode")
    assert again.code == 0, again.output
    assert "No changes" in again.stdout

    second = topo("apply", "--auto-approve")
    assert second.code == 0 and "No changes" in second.stdout and "Apply complete" not in second.stderr

    assert api.get("vhosts", vhost_name)["description"] == "order pipeline"
    created = api.get("queues", vhost_name, "orders.created")
    assert created["type"] == "quorum" and created["arguments"]["x-delivery-limit"] == 3
    assert api.get("vhost-limits", vhost_name)[0]["value"] == {"max-queues": 50}


def test_drift_behind_topos_back_is_detected_and_repaired(topo, vhost_name: str, api: Api) -> None:
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    api.delete("queues", vhost_name, "orders.parking")
    binding = next(b for b in api.bindings(vhost_name) if b["destination"] == "orders.created")
    api.delete("bindings", vhost_name, "e", "orders", "q", "orders.created", binding["properties_key"])
    api.put(
        {"pattern": ".*", "definition": {"message-ttl": 1}, "apply-to": "all", "priority": 5},
        "policies",
        vhost_name,
        "parking-ttl",
    )

    drift = topo("plan", "--detailed-exitcode", "--json")
    assert drift.code == 2, drift.output
    changes = {(c["action"], c["kind"], c["name"]) for c in json.loads(drift.stdout)["changes"]}
    assert changes == {
        ("create", "queue", "orders.parking"),
        ("create", "binding", 'orders → orders.created (queue) routing_key="order.created"'),
        ("update", "policy", "parking-ttl"),
    }
    policy_change = next(c for c in json.loads(drift.stdout)["changes"] if c["kind"] == "policy")
    assert policy_change["before"]["priority"] == 5 and policy_change["after"]["priority"] == 0

    assert topo("apply", "--auto-approve").code == 0
    assert topo("plan", "--detailed-exitcode").code == 0
    assert api.get("policies", vhost_name, "parking-ttl")["definition"] == {"message-ttl": 86400000}


def test_changed_queue_argument_replaces_queue_and_keeps_its_bindings(topo, vhost_name: str, api: Api) -> None:
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    # A binding nobody declared: the replace must not silently drop it either.
    requests.post(
        api._url("bindings", vhost_name, "e", "amq.direct", "q", "orders.retry"),
        json={"routing_key": "manual", "arguments": {}},
        auth=api.auth,
        timeout=30,
    ).raise_for_status()

    plan = topo("plan", "--json", topology=pipeline(vhost_name, ttl=30000))
    changes = json.loads(plan.stdout)["changes"]
    replace = next(c for c in changes if c["action"] == "replace")
    assert replace["kind"] == "queue" and replace["name"] == "orders.retry"
    assert "x-message-ttl: 60000 → 30000" in replace["reason"]
    recreated = sorted(c["name"] for c in changes if c["action"] == "create")
    assert recreated == [
        'amq.direct → orders.retry (queue) routing_key="manual"',
        "orders.dlx → orders.retry (queue)",
    ]

    applied = topo("apply", "--auto-approve")
    assert applied.code == 0, applied.output
    assert api.get("queues", vhost_name, "orders.retry")["arguments"]["x-message-ttl"] == 30000
    to_retry = {(b["source"], b["routing_key"]) for b in api.bindings(vhost_name) if b["destination"] == "orders.retry"}
    assert to_retry == {("orders.dlx", ""), ("amq.direct", "manual")}
    assert topo("plan", "--detailed-exitcode").code == 0


def test_queue_holding_messages_is_protected(topo, vhost_name: str, api: Api) -> None:
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    api.publish(vhost_name, "orders.retry", count=3)

    plan = topo("plan", topology=pipeline(vhost_name, ttl=1000))
    assert "holds 3 messages" in plan.stdout
    refused = topo("apply", "--auto-approve")
    assert refused.code == 1
    assert "--allow-data-loss" in refused.stderr and "orders.retry" in refused.stderr
    assert api.get("queues", vhost_name, "orders.retry")["arguments"]["x-message-ttl"] == 60000

    allowed = topo("apply", "--auto-approve", "--allow-data-loss")
    assert allowed.code == 0, allowed.output
    assert api.get("queues", vhost_name, "orders.retry")["arguments"]["x-message-ttl"] == 1000


def test_absent_and_pruned_queues_with_messages_are_protected(topo, vhost_name: str, api: Api) -> None:
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    api.put({"durable": True, "arguments": {}}, "queues", vhost_name, "stray")
    api.publish(vhost_name, "stray", count=2)
    unmanaged = topo("plan", "--json")
    assert [u["name"] for u in json.loads(unmanaged.stdout)["unmanaged"]] == ["stray"]

    pruning = pipeline(vhost_name).replace(
        "description: order pipeline", "description: order pipeline\n        prune: true"
    )
    refused = topo("apply", "--auto-approve", topology=pruning)
    assert refused.code == 1 and "stray" in refused.stderr
    api.delete("queues", vhost_name, "stray", "contents")  # purge
    assert topo("apply", "--auto-approve").code == 0
    assert "stray" not in {q["name"] for q in api.get("queues", vhost_name)}

    absent = pipeline(vhost_name).replace("orders.parking: {}", "orders.parking: {absent: true}")
    api.publish(vhost_name, "orders.parking")
    assert topo("apply", "--auto-approve", topology=absent).code == 1
    assert topo("apply", "--auto-approve", "--allow-data-loss").code == 0
    assert "orders.parking" not in {q["name"] for q in api.get("queues", vhost_name)}


def test_vhost_declared_absent_is_deleted_only_when_safe(topo, vhost_name: str, api: Api) -> None:
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    api.publish(vhost_name, "orders.parking")
    gone = f"vhosts:\n  {json.dumps(vhost_name)}: {{absent: true}}\n"
    plan = topo("plan", topology=gone)
    assert "- vhost" in plan.stdout and "holds 1 message" in plan.stdout
    assert topo("apply", "--auto-approve").code == 1
    assert topo("apply", "--auto-approve", "--allow-data-loss").code == 0
    assert vhost_name not in {v["name"] for v in api.get("vhosts")}
    assert topo("plan", "--detailed-exitcode").code == 0


def test_names_with_slash_percent_hash_space_and_unicode(topo, api: Api, vhost_name: str) -> None:
    vhost = vhost_name + "/ü %2F #x"
    queue, exchange = "q %41 #1 / ünï", "ex/%23 ä"
    topology = f"""
    vhosts:
      {json.dumps(vhost)}:
        exchanges:
          {json.dumps(exchange)}: {{type: headers}}
        queues:
          {json.dumps(queue)}: {{}}
        bindings:
          - source: {json.dumps(exchange)}
            destination: {json.dumps(queue)}
            routing_key: "k/%2F #"
            arguments: {{x-match: any, "h %": "v/ü"}}
        policies:
          "pol %/ü": {{pattern: "^q", definition: {{max-length: 5}}}}
    """
    try:
        applied = topo("apply", "--auto-approve", topology=topology)
        assert applied.code == 0, applied.output
        assert topo("plan", "--detailed-exitcode").code == 0
        assert api.get("queues", vhost, queue)["name"] == queue
        # Deleting a binding with arguments goes through the broker-computed properties_key.
        removed = topology.replace(
            'arguments: {x-match: any, "h %": "v/ü"}',
            'arguments: {x-match: any, "h %": "v/ü"}\n            absent: true',
        )
        assert topo("apply", "--auto-approve", topology=removed).code == 0
        assert api.bindings(vhost) == []
        assert topo("plan", "--detailed-exitcode").code == 0
    finally:
        requests.delete(api._url("vhosts", vhost), auth=api.auth, timeout=30)


def test_vhost_metadata_updates_in_place_and_undeclared_metadata_is_kept(topo, api: Api, vhost_name: str) -> None:
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    api.publish(vhost_name, "orders.parking")
    changed = pipeline(vhost_name).replace("tags: [orders, test]", "tags: [test, payments]")
    plan = topo("plan", topology=changed)
    assert "~ vhost" in plan.stdout and 'tags: ["orders", "test"] → ["payments", "test"]' in plan.stdout
    assert topo("apply", "--auto-approve").code == 0
    info = api.get("vhosts", vhost_name)
    assert sorted(info["tags"]) == ["payments", "test"] and info["description"] == "order pipeline"
    # Updating the vhost did not touch what is in it.
    assert api.messages(vhost_name, "orders.parking") == 1
    # Leaving description out of the file stops managing it: no change planned.
    unmanaged_description = changed.replace("        description: order pipeline\n", "")
    assert topo("plan", "--detailed-exitcode", topology=unmanaged_description).code == 0


def test_exchange_change_is_a_replace_that_restores_bindings_both_ways(topo, api: Api, vhost_name: str) -> None:
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    changed = pipeline(vhost_name).replace("audit: {type: headers}", "audit: {type: headers, internal: true}")
    plan = topo("plan", "--json", topology=changed)
    actions = sorted((c["action"], c["kind"]) for c in json.loads(plan.stdout)["changes"])
    assert actions == [("create", "binding"), ("create", "binding"), ("replace", "exchange")]
    assert topo("apply", "--auto-approve").code == 0
    assert api.get("exchanges", vhost_name, "audit")["internal"] is True
    assert topo("plan", "--detailed-exitcode").code == 0


def test_broker_rejection_names_object_status_and_reason(topo, vhost_name: str) -> None:
    # What the plan cannot check (docs/topology.md): a URI query parameter only the shovel plugin reads.
    shovel = """
        shovels:
          move: {src-uri: "amqp://localhost?heartbeat=soon", src-queue: orders.parking, dest-uri: "amqp://",
                 dest-queue: audit.eu}
    """
    bad = pipeline(vhost_name).replace(
        "        operator_policies:", shovel.strip("\n") + "\n        operator_policies:"
    )
    result = topo("apply", "--auto-approve", topology=bad)
    assert result.code == 1, result.output
    assert 'parameter shovel "move"' in result.stderr and "HTTP 400" in result.stderr
    assert "not attempted" in result.stderr and "Traceback" not in result.output
    # Re-running after fixing the file converges from wherever the failure left the broker.
    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    assert topo("plan", "--detailed-exitcode").code == 0


def test_policy_value_the_broker_refuses_is_refused_before_any_change(topo, api: Api, vhost_name: str) -> None:
    bad = pipeline(vhost_name).replace("definition: {max-length: 100000}", "definition: {max-length: -5}")
    result = topo("apply", "--auto-approve", topology=bad)
    assert result.code == 1
    assert re.search(r"topology\.yaml:\d+: operator_policies\['cap'\]\.definition\.max-length: ", result.stderr)
    assert "must be an integer >= 0, got -5" in result.stderr and "topo will perform" not in result.stdout
    assert vhost_name not in {v["name"] for v in api.get("vhosts")}


def test_apply_without_terminal_refuses_without_auto_approve(topo, vhost_name: str) -> None:
    result = topo("apply", topology=pipeline(vhost_name))
    assert result.code == 1 and "--auto-approve" in result.stderr
    assert topo("plan", "--detailed-exitcode").code == 2  # nothing was applied


def test_unknown_plugin_exchange_type_is_reported_before_any_change(topo, vhost_name: str, api: Api) -> None:
    topology = f"vhosts:\n  {json.dumps(vhost_name)}:\n    exchanges:\n      delayed: {{type: x-delayed-message}}\n"
    result = topo("plan", topology=topology)
    assert result.code == 1 and "x-delayed-message" in result.stderr and "not enabled" in result.stderr
    assert vhost_name not in {v["name"] for v in api.get("vhosts")}


def test_wrong_password_is_a_clear_error_without_the_password(topo, vhost_name: str, broker: Any) -> None:
    secret = "canary-Pa55-wörd"
    result = topo("plan", topology=pipeline(vhost_name), env={"TOPO_PASSWORD": secret})
    assert result.code == 1 and "HTTP 401" in result.stderr
    assert secret not in result.output
    # The same through credentials embedded in the URL, as hosted brokers hand them out.
    host = broker.url.split("://", 1)[1]
    in_url = topo("plan", env={"TOPO_URL": f"http://{broker.user}:{quote(secret)}@{host}", "TOPO_PASSWORD": None})
    assert in_url.code == 1 and "HTTP 401" in in_url.stderr
    assert secret not in in_url.output and quote(secret) not in in_url.output


def test_change_behind_topos_back_during_apply_is_reported_as_not_converged(
    topo, api: Api, vhost_name: str, broker: Any, tmp_path: Path
) -> None:
    from topo.engine import apply_and_verify, build_plan
    from topo.errors import NotConverged
    from topo.load import load_topology

    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(pipeline(vhost_name)), encoding="utf-8")
    desired = load_topology([str(path)]).desired
    client = topo_client(broker)
    plan = build_plan(client, desired)

    def meddle(done: int, total: int, step: Any) -> None:
        # Another actor deletes a queue right after topo created it.
        if step.change.key.name == "orders.parking":
            api.delete("queues", vhost_name, "orders.parking")

    with pytest.raises(NotConverged, match=r"orders\.parking"):
        apply_and_verify(client, desired, plan, allow_data_loss=False, progress=meddle)


def _run_on_terminal(args: list[str], env: dict[str, str], answer: str) -> tuple[int, str]:
    """Runs topo with a pseudo-terminal as stdin/stdout/stderr, answering its prompt with `answer`."""
    import os
    import select
    import subprocess
    import sys
    import time

    master, slave = os.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "topo", *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
    )
    os.close(slave)
    output, answered, deadline = b"", False, time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closes when the process exits
                break
            if not chunk:
                break
            output += chunk
        if not answered and b"Enter a value:" in output:
            os.write(master, answer.encode() + b"\n")
            answered = True
        if process.poll() is not None and not ready:
            break
    code = process.wait(timeout=30)
    os.close(master)
    return code, output.decode("utf-8", "replace")


def test_apply_asks_on_a_terminal_and_colours_only_there(
    broker: Any, vhost_name: str, tmp_path: Path, api: Api
) -> None:
    import os

    path = tmp_path / "topology.yaml"
    path.write_text(textwrap.dedent(pipeline(vhost_name)), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(TOPO_URL=broker.url, TOPO_USER=broker.user, TOPO_PASSWORD=broker.password)

    code, output = _run_on_terminal(["apply", "-f", str(path)], env, "no")
    assert code == 1 and "Apply cancelled" in output
    assert "\x1b[32m+\x1b[0m" in output  # a terminal gets colour
    assert vhost_name not in {v["name"] for v in api.get("vhosts")}

    code, output = _run_on_terminal(["apply", "-f", str(path)], {**env, "NO_COLOR": "1"}, "yes")
    assert code == 0 and "Apply complete" in output, output
    assert "\x1b[" not in output  # NO_COLOR wins even on a terminal
    assert api.get("vhosts", vhost_name)["description"] == "order pipeline"


def test_several_limits_of_one_vhost_all_land(topo, api: Api, vhost_name: str) -> None:
    # The broker stores a vhost's limits in one record: concurrent PUTs would lose all but one.
    for round_number in range(1, 6):
        topology = f"""
        vhosts:
          {json.dumps(vhost_name)}:
            limits: {{max-connections: {100 + round_number}, max-queues: {200 + round_number}}}
        """
        assert topo("apply", "--auto-approve", topology=topology).code == 0
        limits = api.get("vhost-limits", vhost_name)[0]["value"]
        assert limits == {"max-connections": 100 + round_number, "max-queues": 200 + round_number}


def test_quorum_and_stream_deletes_respect_what_the_broker_can_count(topo, api: Api, vhost_name: str) -> None:
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        queues:
          work: {{type: quorum}}
          events: {{type: stream}}
    """
    assert topo("apply", "--auto-approve", topology=topology).code == 0
    api.publish(vhost_name, "events", count=2)
    gone = topology.replace("work: {type: quorum}", "work: {absent: true}").replace(
        "events: {type: stream}", "events: {absent: true}"
    )
    plan = topo("plan", "--json", topology=gone)
    by_name = {c["name"]: c for c in json.loads(plan.stdout)["changes"]}
    assert by_name["work"]["messages"] == 0 and not by_name["work"]["messages_unknown"]
    # Streams are missing from the cheap totals listing; topo asks for them one by one.
    assert by_name["events"]["messages"] == 2 or by_name["events"]["messages_unknown"]
    refused = topo("apply", "--auto-approve")
    assert refused.code == 1 and "events" in refused.stderr
    assert {q["name"] for q in api.get("queues", vhost_name)} == {"work", "events"}

    # An empty quorum queue goes without --allow-data-loss (quorum queues reject if-empty deletes).
    only_quorum = topology.replace("work: {type: quorum}", "work: {absent: true}")
    assert topo("apply", "--auto-approve", topology=only_quorum).code == 0
    assert {q["name"] for q in api.get("queues", vhost_name)} == {"events"}
    assert topo("apply", "--auto-approve", "--allow-data-loss", topology=gone).code == 0
    assert api.get("queues", vhost_name) == []


def test_negative_limit_means_no_limit_and_converges(topo, api: Api, vhost_name: str) -> None:
    limited = f"vhosts:\n  {json.dumps(vhost_name)}:\n    limits: {{max-connections: 10, max-queues: 20}}\n"
    assert topo("apply", "--auto-approve", topology=limited).code == 0
    unlimited = limited.replace("max-connections: 10", "max-connections: -1")
    plan = topo("plan", "--json", topology=unlimited)
    assert [(c["action"], c["name"]) for c in json.loads(plan.stdout)["changes"]] == [("delete", "max-connections")]
    assert topo("apply", "--auto-approve").code == 0
    assert api.get("vhost-limits", vhost_name)[0]["value"] == {"max-queues": 20}
    assert topo("plan", "--detailed-exitcode").code == 0


def test_messages_arriving_after_the_plan_stop_a_vhost_delete(
    topo, api: Api, vhost_name: str, broker: Any, tmp_path: Path
) -> None:
    from topo.engine import apply_and_verify, build_plan
    from topo.errors import ApplyFailed
    from topo.load import load_topology

    assert topo("apply", "--auto-approve", topology=pipeline(vhost_name)).code == 0
    path = tmp_path / "gone.yaml"
    path.write_text(f"vhosts:\n  {json.dumps(vhost_name)}: {{absent: true}}\n", encoding="utf-8")
    desired = load_topology([str(path)]).desired
    client = topo_client(broker)
    plan = build_plan(client, desired)
    assert plan.data_loss() == []  # empty when planned
    api.publish(vhost_name, "orders.parking")  # ...but not when applied
    with pytest.raises(ApplyFailed, match="holds messages"):
        apply_and_verify(client, desired, plan, allow_data_loss=False)
    assert vhost_name in {v["name"] for v in api.get("vhosts")}


def test_large_creates_and_replaces_go_through_bulk_import_and_converge(topo, api: Api, vhost_name: str) -> None:
    def many(ttl: int) -> str:
        queues = "\n".join(f"          q{i}: {{arguments: {{x-message-ttl: {ttl}}}}}" for i in range(150))
        bindings = "\n".join(
            f"          - {{source: ex{i % 15}, destination: q{i}, routing_key: k.{i}}}" for i in range(150)
        )
        exchanges = "\n".join(f"          ex{j}: {{type: topic}}" for j in range(15))
        return (
            f"vhosts:\n  {json.dumps(vhost_name)}:\n    exchanges:\n{exchanges}\n    queues:\n{queues}\n"
            f"    bindings:\n{bindings}\n"
        ).replace("\n          ", "\n      ")

    created = topo("apply", "--auto-approve", topology=many(1000))
    assert created.code == 0, created.output
    assert len(api.get("queues", vhost_name)) == 150 and len(api.bindings(vhost_name)) == 150
    assert topo("plan", "--detailed-exitcode").code == 0
    # 150 replaces: their deletes drop the bindings, which the bulk stage must put back.
    replaced = topo("apply", "--auto-approve", topology=many(2000))
    assert replaced.code == 0, replaced.output
    assert "150 replaced" in replaced.stderr
    assert {q["arguments"]["x-message-ttl"] for q in api.get("queues", vhost_name)} == {2000}
    assert len(api.bindings(vhost_name)) == 150
    assert topo("plan", "--detailed-exitcode").code == 0


def test_apply_to_values_newer_than_the_broker_are_reported_before_any_change(topo, api: Api, vhost_name: str) -> None:
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        policies:
          qq: {{pattern: "^q", apply-to: quorum_queues, definition: {{delivery-limit: 5}}}}
    """
    result = topo("plan", topology=topology)
    version = api.get("overview")["rabbitmq_version"]
    if tuple(int(p) for p in version.split(".")[:2]) < (3, 12):
        assert result.code == 1 and "needs RabbitMQ 3.12+" in result.stderr and ":5:" in result.stderr
        assert vhost_name not in {v["name"] for v in api.get("vhosts")}
    else:  # a newer test broker (TOPO_TEST_URL) takes it
        assert result.code == 0


def test_non_administrator_can_plan_and_apply_its_own_vhost(topo, api: Api, vhost_name: str) -> None:
    # The account hosted shared plans hand out: management + policymaker, permissions on one vhost.
    user, password = f"{vhost_name}-app", "least-Privilege-42"
    api.put({}, "vhosts", vhost_name)
    api.put({"password": password, "tags": "management,policymaker"}, "users", user)
    api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", vhost_name, user)
    as_user = {"TOPO_USER": user, "TOPO_PASSWORD": password}
    queues = "\n".join(f"      q{i}: {{}}" for i in range(120))
    bindings = "\n".join(f"      - {{source: work, destination: q{i}, routing_key: k{i}}}" for i in range(120))
    topology = (
        f"vhosts:\n  {json.dumps(vhost_name)}:\n    exchanges:\n      work: {{type: direct}}\n"
        f"    queues:\n{queues}\n    bindings:\n{bindings}\n"
        "    policies:\n      ttl: {pattern: '^q', apply-to: queues, definition: {message-ttl: 60000}}\n"
    )
    try:
        # Definitions and the bulk import are for administrators: topo reads through listings and
        # creates object by object instead.
        applied = topo("apply", "--auto-approve", topology=topology, env=as_user)
        assert applied.code == 0, applied.output
        assert len(api.get("queues", vhost_name)) == 120 and len(api.bindings(vhost_name)) == 120
        assert topo("plan", "--detailed-exitcode", env=as_user).code == 0
        api.delete("queues", vhost_name, "q7")
        drift = topo("plan", "--json", env=as_user)
        assert [(c["action"], c["name"]) for c in json.loads(drift.stdout)["changes"]] == [
            ("create", "q7"),
            ("create", 'work → q7 (queue) routing_key="k7"'),
        ]
        assert topo("apply", "--auto-approve", env=as_user).code == 0
        assert topo("plan", "--detailed-exitcode", env=as_user).code == 0
    finally:
        api.delete("users", user)


def test_a_canary_password_never_appears_in_any_output(topo, api: Api, vhost_name: str, broker: Any) -> None:
    canary = "Canary-Zz9-ünï/@:%"
    user = f"{vhost_name}-admin"
    api.put({"password": canary, "tags": "administrator"}, "users", user)
    host = broker.url.split("://", 1)[1]
    in_url = f"http://{quote(user, safe='')}:{quote(canary, safe='')}@{host}"
    outputs: list[str] = []
    try:
        as_user = {"TOPO_USER": user, "TOPO_PASSWORD": canary}
        runs = [
            topo("validate", topology=pipeline(vhost_name), env=as_user),
            topo("plan", env=as_user),
            topo("plan", "--json", "--detailed-exitcode", env=as_user),
            topo("apply", "--auto-approve", env=as_user),
            topo("apply", "--auto-approve", "--json", env=as_user),
            topo("plan", env={"TOPO_URL": in_url, "TOPO_USER": None, "TOPO_PASSWORD": None}),
            topo("plan", env={"TOPO_USER": user, "TOPO_PASSWORD": canary + "-wrong"}),
            topo("plan", "--url", in_url.replace("http://", "ftp://"), env={"TOPO_PASSWORD": None}),
            topo("plan", "--url", in_url.replace(host, "127.0.0.1:1"), env={"TOPO_PASSWORD": None}),
            topo("plan", "--help"),
        ]
        broker_section = (
            "broker:\n  url: ${CANARY_URL}\n  user: ${CANARY_USER}\n  password: ${CANARY_PW}\n"
            + textwrap.dedent(pipeline(vhost_name)).lstrip("\n")
        )
        section_env = {"CANARY_URL": broker.url, "CANARY_USER": user, "CANARY_PW": canary}
        section_env |= {"TOPO_URL": None, "TOPO_USER": None, "TOPO_PASSWORD": None}
        runs.append(topo("plan", topology=broker_section, env=section_env))
        runs.append(topo("plan", env={**section_env, "CANARY_PW": canary + "-wrong"}))
        assert [r.code for r in runs] == [0, 0, 2, 0, 0, 0, 1, 1, 1, 0, 0, 1], [r.output for r in runs]
        outputs = [r.output for r in runs]
    finally:
        api.delete("users", user)
    for output in outputs:
        for form in (canary, quote(canary, safe=""), quote(canary)):
            assert form not in output

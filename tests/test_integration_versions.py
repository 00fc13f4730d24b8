"""Where RabbitMQ 3.10 and 4.x differ: each test runs on both and asserts each version's own result.

scripts/test.sh runs the broker tests once per version (TOPO_TEST_RABBITMQ=3.10, then 4.3); the
`rabbitmq_version` fixture is the version the broker reports, so these also hold against TOPO_TEST_URL.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests

from broker_api import Api
from cli_runner import broker_env, run_topo

pytestmark = pytest.mark.broker


def test_removed_features_are_refused_at_plan_time_on_4x(
    topo, api: Api, vhost_name: str, rabbitmq_version: tuple[int, int]
) -> None:
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        queues:
          old-v1: {{arguments: {{x-queue-version: 1}}}}
          located: {{arguments: {{x-queue-master-locator: min-masters}}}}
          fine: {{arguments: {{x-queue-version: 2}}}}
        policies:
          mirror-all: {{pattern: "^old", definition: {{ha-mode: all, ha-sync-mode: automatic}}}}
    """
    result = topo("apply", "--auto-approve", topology=topology)
    if rabbitmq_version < (4, 0):
        assert result.code == 0, result.output
        assert topo("plan", "--detailed-exitcode").code == 0
        return
    # 4.x: every refusal named with file:line, object and replacement, before any request that changes anything.
    assert result.code == 1, result.output
    err = result.stderr
    assert "topo will perform" not in result.stdout
    assert re.search(
        r"topology\.yaml:\d+: queues\['old-v1'\]\.arguments\.x-queue-version: queue argument x-queue-version: 1: "
        r"classic queue storage v1 was removed",
        err,
    ), err
    assert "use x-queue-version: 2" in err
    assert "queues['located'].arguments.x-queue-master-locator" in err and "use x-queue-leader-locator" in err
    assert "policies['mirror-all'].definition.ha-mode: policy key ha-mode: classic queue mirroring was removed" in err
    assert "policies['mirror-all'].definition.ha-sync-mode" in err and "use quorum queues" in err
    assert "queues['fine']" not in err
    vhosts = {v["name"] for v in api.get("vhosts")}
    assert vhost_name not in vhosts


def test_internal_exchange_is_read_verified_and_exported(topo, api: Api, broker: Any, vhost_name: str) -> None:
    # 4.3's GET /api/definitions leaves internal exchanges out: without the listing, apply never converges.
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        exchanges:
          front: {{type: topic}}
          inner: {{type: fanout, internal: true}}
        queues:
          work: {{}}
        bindings:
          - {{source: front, destination: inner, destination_type: exchange, routing_key: "#"}}
          - {{source: inner, destination: work}}
    """
    applied = topo("apply", "--auto-approve", topology=topology)
    assert applied.code == 0, applied.output
    assert api.get("exchanges", vhost_name, "inner")["internal"] is True
    assert topo("plan", "--detailed-exitcode").code == 0
    exported = run_topo("export", "--vhost", vhost_name, env=broker_env(broker))
    assert exported.code == 0, exported.output
    assert re.search(r"\n +inner:\n +type: fanout\n +internal: true\n", exported.stdout), exported.stdout


def _topic_topology(vhost: str, user: str, durable: bool = True) -> str:
    return f"""
    users:
      {json.dumps(user)}: {{password: "pw-Topic-1", tags: [management]}}
    vhosts:
      {json.dumps(vhost)}:
        exchanges:
          events: {{type: topic, durable: {str(durable).lower()}}}
        permissions:
          {json.dumps(user)}: {{configure: "", write: ".*", read: ".*"}}
        topic_permissions:
          {json.dumps(user)}:
            events: {{write: "^a\\\\.", read: ".*"}}
    """


def test_topic_permissions_follow_their_exchange(topo, api: Api, vhost_name: str) -> None:
    user = f"{vhost_name}-topic"
    try:
        # Written after the exchange (4.3 refuses a topic permission for a missing exchange).
        applied = topo("apply", "--auto-approve", topology=_topic_topology(vhost_name, user))
        assert applied.code == 0, applied.output
        assert topo("plan", "--detailed-exitcode").code == 0
        # Replacing the exchange: 4.3 deletes its topic permissions with it, so the plan writes them again
        # (an identical PUT where the broker keeps them).
        plan = topo("plan", "--json", topology=_topic_topology(vhost_name, user, durable=False))
        changes = sorted((c["action"], c["kind"]) for c in json.loads(plan.stdout)["changes"])
        assert changes == [("create", "topic_permission"), ("replace", "exchange")]
        replaced = topo("apply", "--auto-approve", "--allow-data-loss")
        assert replaced.code == 0, replaced.output
        assert [t["exchange"] for t in api.get("topic-permissions", vhost_name, user)] == ["events"]
        assert topo("plan", "--detailed-exitcode").code == 0
    finally:
        requests.delete(api._url("users", user), auth=api.auth, timeout=30)


def test_topic_permission_must_name_a_known_exchange(topo, api: Api, vhost_name: str) -> None:
    user = f"{vhost_name}-topic"
    undeclared = _topic_topology(vhost_name, user).replace("events: {type: topic, durable: true}", "other: {}")
    result = topo("validate", topology=undeclared)
    assert result.code == 1
    assert re.search(
        r"topology\.yaml:\d+: vhosts\..*topic_permissions\..*events.*exchange 'events' is not declared", result.stderr
    ), result.stderr
    assert "mark it `external: true`" in result.stderr
    # Managed elsewhere: the exchange is marked external (and exists), or is a built-in one.
    api.put({}, "vhosts", vhost_name)
    api.put({"type": "topic", "durable": True, "auto_delete": False, "internal": False, "arguments": {}},
            "exchanges", vhost_name, "events")  # fmt: skip
    external = undeclared.replace("other: {}", "events: {external: true}").replace(
        "events: {write", 'amq.topic: {write: "x", read: "x"}\n            events: {write'
    )
    try:
        applied = topo("apply", "--auto-approve", topology=external)
        assert applied.code == 0, applied.output
        assert {t["exchange"] for t in api.get("topic-permissions", vhost_name, user)} == {"events", "amq.topic"}
    finally:
        requests.delete(api._url("users", user), auth=api.auth, timeout=30)


def test_non_ascii_vhost_is_read_even_where_its_definitions_break(
    topo, vhost_name: str, rabbitmq_version: tuple[int, int]
) -> None:
    vhost = vhost_name + "-ü注文"
    topology = f"""
    vhosts:
      {json.dumps(vhost)}:
        exchanges:
          e: {{type: direct}}
        queues:
          q: {{}}
        bindings:
          - {{source: e, destination: q, routing_key: k}}
    """
    try:
        applied = topo("apply", "--auto-approve", topology=topology)
        assert applied.code == 0, applied.output
        plan = topo("plan", "--detailed-exitcode")
        assert plan.code == 0, plan.output
        note = "from its listings: its definitions (GET /api/definitions/{vhost}) came back with"
        # 4.0 answers HTTP 500 and 4.3 a truncated body for such a name; 3.10 reads it fine.
        assert (note in plan.output) == (rabbitmq_version >= (4, 0)), plan.output
    finally:
        topo(
            "apply",
            "--auto-approve",
            "--allow-data-loss",
            topology=f"vhosts:\n  {json.dumps(vhost)}: {{absent: true}}\n",
        )


def test_deletion_protection(topo, api: Api, vhost_name: str, rabbitmq_version: tuple[int, int]) -> None:
    protected = f"vhosts:\n  {json.dumps(vhost_name)}:\n    protected_from_deletion: true\n"
    if rabbitmq_version < (4, 0):
        result = topo("plan", topology=protected)
        assert result.code == 1
        assert "protected_from_deletion: deletion protection needs RabbitMQ 4.0.6+" in result.stderr, result.stderr
        return
    try:
        applied = topo("apply", "--auto-approve", topology=protected)
        assert applied.code == 0, applied.output
        assert api.get("vhosts", vhost_name)["protected_from_deletion"] is True
        assert topo("plan", "--detailed-exitcode").code == 0
        # Deleting it is refused at plan time (the broker would answer 412 halfway through an apply).
        gone = topo(
            "apply",
            "--auto-approve",
            "--allow-data-loss",
            topology=f"vhosts:\n  {json.dumps(vhost_name)}: {{absent: true}}\n",
        )
        assert gone.code == 1 and "is protected from deletion" in gone.stderr, gone.output
        assert "topo will perform" not in gone.stdout
        assert vhost_name in {v["name"] for v in api.get("vhosts")}
        unprotected = topo("apply", "--auto-approve", topology=protected.replace("true", "false"))
        assert unprotected.code == 0, unprotected.output
        assert api.get("vhosts", vhost_name)["protected_from_deletion"] is False
        assert topo("plan", "--detailed-exitcode").code == 0
    finally:
        requests.delete(api._url("vhosts", vhost_name, "deletion", "protection"), auth=api.auth, timeout=30)


def test_users_tagged_protected(
    topo, api: Api, broker: Any, vhost_name: str, rabbitmq_version: tuple[int, int]
) -> None:
    user = f"{vhost_name}-protected"
    api.put({"password": "pw-Prot-1", "tags": "protected"}, "users", user)
    try:
        result = topo(
            "plan", "--json", topology=f"users:\n  {json.dumps(user)}: {{password: pw-Prot-1, tags: [management]}}\n"
        )
        if rabbitmq_version < (4, 2):
            # Just a tag before 4.2: the change is planned like any other.
            assert result.code == 0, result.output
            assert [(c["action"], c["kind"]) for c in json.loads(result.stdout)["changes"]] == [("update", "user")]
            return
        assert result.code == 1, result.output
        assert f"user {user!r} is tagged protected" in result.stderr and "refuses to change it" in result.stderr
    finally:
        response = requests.delete(api._url("users", user), auth=api.auth, timeout=30)
        if response.status_code == 400 and broker.node is not None:
            # 4.2+: protected users are removed with the CLI only.
            broker.node.rabbitmqctl("delete_user", user)


def test_exports_hold_only_what_a_person_would_write(
    topo, api: Api, broker: Any, vhost_name: str, rabbitmq_version: tuple[int, int]
) -> None:
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        exchanges:
          spread: {{type: x-local-random}}
    """
    result = topo("apply", "--auto-approve", topology=topology)
    if rabbitmq_version < (4, 0):
        # Built in from 4.0; 3.10 has no such type and topo says so before any change.
        assert result.code == 1 and "exchange type 'x-local-random' is not enabled on the broker" in result.stderr
        return
    assert result.code == 0, result.output
    # 4.x stores default_queue_type: classic on every vhost: it was never set, so it is not exported.
    assert api.get("vhosts", vhost_name)["default_queue_type"] == "classic"
    exported = run_topo("export", "--vhost", vhost_name, env=broker_env(broker))
    assert exported.code == 0, exported.output
    assert "default_queue_type" not in exported.stdout
    assert re.search(r"\n +spread:\n +type: x-local-random\n", exported.stdout), exported.stdout
    assert "plugin" not in exported.stdout

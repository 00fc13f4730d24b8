"""Users, permissions and topic permissions against the real test node."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
import requests

from broker_api import Api
from cli_runner import broker_env, run_topo

pytestmark = pytest.mark.broker


def can_log_in(broker: Any, user: str, password: str) -> bool:
    response = requests.get(broker.url + "/api/whoami", auth=(user.encode(), password.encode()), timeout=30)
    return response.status_code == 200


def access(vhost: str, user: str, password: str | None, tags: str = "[management]", extra: str = "") -> str:
    secret = f"password: {json.dumps(password)}, " if password is not None else ""
    return f"""
    users:
      {json.dumps(user)}: {{{secret}tags: {tags}}}
    vhosts:
      {json.dumps(vhost)}:
        exchanges:
          events: {{type: topic}}
        permissions:
          {json.dumps(user)}: {{configure: "^app\\\\.", write: ".*", read: ".*"}}
        topic_permissions:
          {json.dumps(user)}:
            amq.topic: {{write: "^sensors\\\\.", read: ".*"}}
            events: {{write: "^a$", read: ".*"}}
    {extra}
    """


def restricted_user(api: Api, user: str, tags: str, vhost: str | None) -> None:
    """A user with password mgmt-Pw-123, the given tags, and full permissions on `vhost` (if any)."""
    api.put({"password": "mgmt-Pw-123", "tags": tags}, "users", user)
    if vhost is not None:
        api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", vhost, user)


@pytest.fixture
def user_name(vhost_name: str, api: Api):
    name = f"{vhost_name}-u ü/%"
    yield name
    requests.delete(api._url("users", name), auth=api.auth, timeout=30)


def test_users_and_permissions_apply_converge_and_passwords_do_not_drift(
    topo, api: Api, broker: Any, vhost_name: str, user_name: str
) -> None:
    first = access(vhost_name, user_name, "pässword-1")
    applied = topo("apply", "--auto-approve", topology=first)
    assert applied.code == 0, applied.output
    assert can_log_in(broker, user_name, "pässword-1")  # UTF-8 password, hashed locally
    assert topo("plan", "--detailed-exitcode").code == 0  # same password: no change at all
    perms = api.get("permissions", vhost_name, user_name)
    assert perms["configure"] == "^app\\."
    topics = {t["exchange"]: t["write"] for t in api.get("topic-permissions", vhost_name, user_name)}
    assert topics == {"amq.topic": "^sensors\\.", "events": "^a$"}

    changed = topo("plan", "--json", topology=access(vhost_name, user_name, "pässword-2"))
    changes = json.loads(changed.stdout)["changes"]
    assert [(c["action"], c["kind"]) for c in changes] == [("update", "user")]
    assert changes[0]["after"]["password"] == "(sensitive value)"
    text = topo("plan")
    assert "password: (sensitive value changed)" in text.stdout and "pässword" not in text.output
    assert topo("apply", "--auto-approve").code == 0
    assert can_log_in(broker, user_name, "pässword-2") and not can_log_in(broker, user_name, "pässword-1")

    # Only the tags change: the password survives (the current hash is sent back, not re-salted).
    stored = api.get("users", user_name)["password_hash"]
    tags = topo("apply", "--auto-approve", topology=access(vhost_name, user_name, "pässword-2", "[monitoring]"))
    assert tags.code == 0, tags.output
    assert api.get("users", user_name)["password_hash"] == stored
    assert can_log_in(broker, user_name, "pässword-2")

    # The exported hash declares the same password: still no change.
    hashed = access(vhost_name, user_name, None, "[monitoring]").replace(
        "{tags: [monitoring]}", f"{{password_hash: {stored}, tags: [monitoring]}}"
    )
    assert topo("plan", "--detailed-exitcode", topology=hashed).code == 0


def test_removing_one_topic_permission_keeps_the_others(topo, api: Api, vhost_name: str, user_name: str) -> None:
    assert topo("apply", "--auto-approve", topology=access(vhost_name, user_name, "pw-12345")).code == 0
    without_events = access(vhost_name, user_name, "pw-12345").replace(
        'events: {write: "^a$", read: ".*"}', "events: {absent: true}"
    )
    plan = topo("plan", "--json", topology=without_events)
    assert [(c["action"], c["kind"]) for c in json.loads(plan.stdout)["changes"]] == [("delete", "topic_permission")]
    assert topo("apply", "--auto-approve").code == 0
    assert [t["exchange"] for t in api.get("topic-permissions", vhost_name, user_name)] == ["amq.topic"]
    assert topo("plan", "--detailed-exitcode").code == 0


def test_the_creators_own_permission_on_a_new_vhost_is_not_drift(topo, vhost_name: str, user_name: str) -> None:
    # Creating the vhost grants the connected user (guest) full permissions there.
    assert topo("apply", "--auto-approve", topology=access(vhost_name, user_name, "pw-12345")).code == 0
    plan = topo("plan", "--json")
    assert json.loads(plan.stdout)["changes"] == [] and json.loads(plan.stdout)["unmanaged"] == []


def test_topo_never_locks_out_the_user_it_is_connected_as(topo, api: Api, broker: Any, vhost_name: str) -> None:
    me = f"{vhost_name}-admin"
    password = "admin-Pw-1234"
    api.put({"password": password, "tags": "administrator"}, "users", me)
    as_me = {"TOPO_USER": me, "TOPO_PASSWORD": password}
    base = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        permissions:
          {json.dumps(me)}: {{configure: ".*", write: ".*", read: ".*"}}
    """
    try:
        assert topo("apply", "--auto-approve", topology=base, env=as_me).code == 0
        attempts = {
            "deletes user": base + f"\n    users:\n      {json.dumps(me)}: {{absent: true}}\n",
            "removes the administrator tag": base + f"\n    users:\n      {json.dumps(me)}: {{tags: [management]}}\n",
            "removes the permissions": base.replace('{configure: ".*", write: ".*", read: ".*"}', "{absent: true}"),
        }
        for reason, topology in attempts.items():
            result = topo("apply", "--auto-approve", topology=topology, env=as_me)
            assert result.code == 1 and reason in result.stderr and "lock topo out" in result.stderr, result.output
        assert api.get("users", me)["tags"] == ["administrator"]
        assert api.get("permissions", vhost_name, me)["configure"] == ".*"
    finally:
        requests.delete(api._url("users", me), auth=api.auth, timeout=30)


def test_user_with_a_placeholder_hash_is_rejected_offline(topo, vhost_name: str) -> None:
    topology = f'users:\n  "{vhost_name}": {{password_hash: "admin_password_change_me"}}\n'
    result = topo("validate", topology=topology)
    assert result.code == 1 and "not valid base64" in result.stderr and "admin_password_change_me" not in result.stderr


def test_permission_for_a_user_the_files_do_not_declare_must_exist(topo, vhost_name: str) -> None:
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        permissions:
          nobody-{quote(vhost_name)}: {{configure: "", write: "", read: ".*"}}
    """
    result = topo("apply", "--auto-approve", topology=topology)
    assert result.code == 1 and "permission" in result.stderr and "HTTP" in result.stderr


def test_declaring_users_without_the_administrator_tag_fails_early_and_clearly(
    topo, api: Api, vhost_name: str, user_name: str
) -> None:
    api.put({}, "vhosts", vhost_name)
    restricted_user(api, user_name, "management,policymaker", vhost_name)
    result = topo(
        "plan",
        topology=access(vhost_name, "someone-else", "x-12345"),
        env={"TOPO_USER": user_name, "TOPO_PASSWORD": "mgmt-Pw-123"},
    )
    assert result.code == 1 and "HTTP 401" in result.stderr and "tagged administrator" in result.stderr


def test_declared_user_passwords_never_appear_in_output(topo, vhost_name: str, user_name: str) -> None:
    canary = "Canary-User-Pw-ß/9"
    outputs = [
        topo("validate", topology=access(vhost_name, user_name, canary)).output,
        topo("plan").output,
        topo("plan", "--json").output,
        topo("apply", "--auto-approve", "--json").output,
        topo("plan", "--json", topology=access(vhost_name, user_name, canary + "-new")).output,
        topo("plan", topology=access(vhost_name, user_name, canary + "-new")).output,
    ]
    for output in outputs:
        assert canary not in output and "-new" not in output
    assert "(sensitive value" in outputs[1] and "(sensitive value changed)" in outputs[5]


def test_a_non_administrator_gets_an_early_error_naming_the_missing_tag(
    topo, api: Api, vhost_name: str, user_name: str
) -> None:
    api.put({}, "vhosts", vhost_name)
    restricted_user(api, user_name, "management", vhost_name)
    as_user = {"TOPO_USER": user_name, "TOPO_PASSWORD": "mgmt-Pw-123"}
    topology = f"""
    vhosts:
      {json.dumps(vhost_name)}:
        description: needs an administrator
        limits: {{max-queues: 10}}
        queues:
          jobs: {{}}
        policies:
          ttl: {{pattern: "^jobs$", definition: {{message-ttl: 1000}}}}
    """
    result = topo("apply", "--auto-approve", topology=topology, env=as_user)
    assert result.code == 1, result.output
    for expected in (
        "update vhost",
        "needs the administrator tag",
        "vhost_limit",
        "policy",
        "needs the policymaker tag",
    ):
        assert expected in result.stderr
    assert api.get("queues", vhost_name) == []  # refused before any change


def test_user_limits_apply_update_and_remove(topo, api: Api, vhost_name: str, user_name: str) -> None:
    def limits(connections: int, channels: int) -> str:
        return access(vhost_name, user_name, "pw-12345").replace(
            "tags: [management]}",
            f"tags: [management], limits: {{max-connections: {connections}, max-channels: {channels}}}}}",
        )

    for round_number in range(1, 4):  # both limits of one user, written together, every time
        assert topo("apply", "--auto-approve", topology=limits(10 + round_number, 20 + round_number)).code == 0
        stored = api.get("users", user_name)["limits"]
        assert stored == {"max-connections": 10 + round_number, "max-channels": 20 + round_number}
        assert topo("plan", "--detailed-exitcode").code == 0
    assert topo("apply", "--auto-approve", topology=limits(-1, 5)).code == 0
    assert api.get("users", user_name)["limits"] == {"max-channels": 5}
    assert topo("plan", "--detailed-exitcode").code == 0


def test_a_vhost_without_permissions_is_named_as_such_for_a_non_administrator(
    topo, api: Api, vhost_name: str, user_name: str
) -> None:
    api.put({}, "vhosts", vhost_name)  # exists, but the user holds no permissions there
    restricted_user(api, user_name, "management,policymaker", None)
    topology = f"vhosts:\n  {json.dumps(vhost_name)}:\n    queues:\n      jobs: {{}}\n"
    result = topo("plan", topology=topology, env={"TOPO_USER": user_name, "TOPO_PASSWORD": "mgmt-Pw-123"})
    # Refused before any change. RabbitMQ 3.x answers 401 for such a vhost, 4.x 404 (as for a missing one):
    # the same message either way, naming the vhost and both possible causes.
    expected = f"create vhost {json.dumps(vhost_name)}: does not exist or {user_name!r} has no permissions on it"
    assert result.code == 1 and expected in result.stderr, result.output
    assert "creating a vhost needs the administrator tag" in result.stderr and "Traceback" not in result.output
    missing = topo(
        "plan",
        topology=topology.replace(vhost_name, vhost_name + "-new"),
        env={"TOPO_USER": user_name, "TOPO_PASSWORD": "mgmt-Pw-123"},
    )
    assert missing.code == 1 and missing.stderr.replace(vhost_name + "-new", vhost_name) == result.stderr


def test_a_non_administrator_exports_what_it_may_read_and_is_told_what_is_left_out(
    topo, api: Api, broker: Any, vhost_name: str, user_name: str
) -> None:
    api.put({}, "vhosts", vhost_name)
    restricted_user(api, user_name, "management,policymaker", vhost_name)
    api.put({"durable": True, "auto_delete": False, "arguments": {}}, "queues", vhost_name, "jobs")
    upstream = {"value": {"uri": "amqp://fed:s3cret-Upstream@elsewhere", "max-hops": 1}}
    api.put(upstream, "parameters", "federation-upstream", vhost_name, "dc2")
    as_user = broker_env(broker, TOPO_USER=user_name, TOPO_PASSWORD="mgmt-Pw-123")
    other = f"{vhost_name}-2"
    api.put({}, "vhosts", other)
    api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", other, user_name)
    # One vhost (read through its own definitions), and two (read through the broker's, refused here).
    for vhosts in (["--vhost", vhost_name], ["--vhost", vhost_name, "--vhost", other]):
        result = run_topo("export", *vhosts, env=as_user)
        assert result.code == 0, result.output
        assert "users and permissions left out: reading them needs the administrator tag" in result.stderr
        assert "users:" not in result.stdout
        assert "jobs: {}" in result.stdout
        # Parameters come from their own listings, which a policymaker may read.
        assert "federation_upstreams:" in result.stdout
        assert "s3cret-Upstream" not in result.output
    env = {**as_user, "TOPO_FEDERATION_" + vhost_name.upper().replace("-", "_") + "_DC2_PASSWORD": "s3cret-Upstream"}
    exported = run_topo("export", "--vhost", vhost_name, env=as_user).stdout
    planned = topo("plan", "--detailed-exitcode", topology=exported, env=env)
    assert planned.code == 0, planned.output
    api.delete("vhosts", other)

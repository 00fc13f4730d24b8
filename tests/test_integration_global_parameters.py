"""Global runtime parameters against the real test node: planned, applied, verified, exported, round-tripped."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from broker_api import Api
from cli_runner import broker_env, run_topo

pytestmark = pytest.mark.broker


@pytest.fixture
def name(broker: Any) -> Iterator[str]:
    """A global parameter name unique to this test, removed afterwards (global parameters outlive vhosts)."""
    chosen = f"topo_test_{secrets.token_hex(3)}"
    yield chosen
    requests.delete(f"{broker.url}/api/global-parameters/{chosen}", auth=broker.auth, timeout=30)


@pytest.fixture
def user_name(vhost_name: str, api: Api) -> Iterator[str]:
    chosen = f"{vhost_name}-u"
    yield chosen
    requests.delete(api._url("users", chosen), auth=api.auth, timeout=30)


def stored(api: Api) -> dict[str, Any]:
    return {item["name"]: item["value"] for item in api.get("global-parameters")}


def topology(vhost: str, name: str, value: Any) -> str:
    return f"""
    vhosts:
      {json.dumps(vhost)}: {{}}
    global_parameters:
      {name}:
        value: {json.dumps(value)}
    """


def test_apply_update_verify_and_delete(topo, api: Api, vhost_name: str, name: str) -> None:
    value = {"1883": vhost_name, "8883": "/"}
    applied = topo("apply", "--auto-approve", topology=topology(vhost_name, name, value))
    assert applied.code == 0, applied.output
    assert stored(api)[name] == value
    assert topo("plan", "--detailed-exitcode", topology=topology(vhost_name, name, value)).code == 0

    changed = {**value, "1884": vhost_name}
    plan = topo("plan", topology=topology(vhost_name, name, changed))
    assert f"~ global_parameter {json.dumps(name)}" in plan.stdout, plan.output
    assert "Plan: 0 to add, 1 to change, 0 to replace, 0 to destroy." in plan.stdout
    assert topo("apply", "--auto-approve", topology=topology(vhost_name, name, changed)).code == 0
    assert stored(api)[name] == changed

    # Undeclared ones are left alone, even with prune (like users, only what the files name is managed).
    pruned = f"prune: true\nvhosts:\n  {json.dumps(vhost_name)}: {{}}\n"
    assert topo("plan", "--detailed-exitcode", topology=pruned).code == 0
    assert name in stored(api)

    absent = f"vhosts:\n  {json.dumps(vhost_name)}: {{}}\nglobal_parameters:\n  {name}: {{absent: true}}\n"
    deleted = topo("apply", "--auto-approve", topology=absent)
    assert deleted.code == 0, deleted.output
    assert f"- global_parameter {json.dumps(name)}" in deleted.stdout
    assert name not in stored(api)
    assert topo("plan", "--detailed-exitcode", topology=absent).code == 0


def test_live_export_round_trips_and_keeps_the_broker_identity_out(
    topo, api: Api, broker: Any, vhost_name: str, name: str
) -> None:
    assert topo("apply", "--auto-approve", topology=topology(vhost_name, name, {"a": [1, 2]})).code == 0
    exported = run_topo("export", "--keep-hashes", env=broker_env(broker))
    assert exported.code == 0, exported.output
    assert f"global_parameters:\n  {name}:\n    value:\n      a:\n        - 1\n        - 2\n" in exported.stdout
    assert "internal_cluster_id" not in exported.stdout
    cluster_name = stored(api).get("cluster_name")
    if isinstance(cluster_name, str) and "@" in cluster_name:
        assert "cluster_name" not in exported.stdout
        assert "left out cluster_name" in exported.stderr
    # The export plans clean against the broker it came from.
    planned = topo("plan", "--detailed-exitcode", topology=exported.stdout)
    assert planned.code == 0, planned.output
    # One vhost's export has no broker-wide settings.
    one = run_topo("export", "--vhost", vhost_name, env=broker_env(broker))
    assert one.code == 0 and "global_parameters" not in one.stdout


def test_policymakers_manage_them_and_others_are_told_which_tag_it_takes(
    topo, api: Api, vhost_name: str, name: str, user_name: str
) -> None:
    api.put({}, "vhosts", vhost_name)
    api.put({"password": "mgmt-Pw-123", "tags": "management"}, "users", user_name)
    api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", vhost_name, user_name)
    as_user = {"TOPO_USER": user_name, "TOPO_PASSWORD": "mgmt-Pw-123"}
    refused = topo("plan", topology=topology(vhost_name, name, 1), env=as_user)
    assert refused.code == 1 and "Traceback" not in refused.output
    assert "the files declare global parameters, which only a user tagged policymaker may manage" in refused.stderr
    api.put({"password": "mgmt-Pw-123", "tags": "management,policymaker"}, "users", user_name)
    applied = topo("apply", "--auto-approve", topology=topology(vhost_name, name, 1), env=as_user)
    assert applied.code == 0, applied.output
    assert stored(api)[name] == 1


def test_the_parameters_the_issue_names_cluster_name_and_mqtt_port_to_vhost_mapping(
    topo, api: Api, broker: Any, vhost_name: str
) -> None:
    """The real ones, not a made-up name: the broker gives them meaning (its cluster name is what saved
    plans identify it by; the MQTT plugin reads the port mapping), so the originals are put back."""
    before = stored(api)
    mapping = {"1": vhost_name}  # no listener on port 1: MQTT clients of the other tests are unaffected
    wanted = f"topo-test-{vhost_name}"
    text = (
        f"vhosts:\n  {json.dumps(vhost_name)}: {{}}\nglobal_parameters:\n"
        f"  cluster_name: {{value: {json.dumps(wanted)}}}\n"
        f"  mqtt_port_to_vhost_mapping: {{value: {json.dumps(mapping)}}}\n"
    )
    try:
        applied = topo("apply", "--auto-approve", topology=text)
        assert applied.code == 0, applied.output
        assert stored(api)["cluster_name"] == wanted
        assert stored(api)["mqtt_port_to_vhost_mapping"] == mapping
        assert api.get("overview")["cluster_name"] == wanted  # the broker took it as its name
        assert topo("plan", "--detailed-exitcode", topology=text).code == 0
        exported = run_topo("export", "--keep-hashes", env=broker_env(broker))
        assert exported.code == 0, exported.output
        assert "mqtt_port_to_vhost_mapping:" in exported.stdout
        assert f"cluster_name:\n    value: {wanted}" in exported.stdout
        again = topo("plan", "--detailed-exitcode", topology=exported.stdout)
        assert again.code == 0, again.output
    finally:
        if "cluster_name" in before:
            api.put({"name": "cluster_name", "value": before["cluster_name"]}, "global-parameters", "cluster_name")
        else:
            requests.delete(f"{broker.url}/api/global-parameters/cluster_name", auth=broker.auth, timeout=30)
        if "mqtt_port_to_vhost_mapping" in before:
            api.put(
                {"name": "mqtt_port_to_vhost_mapping", "value": before["mqtt_port_to_vhost_mapping"]},
                "global-parameters",
                "mqtt_port_to_vhost_mapping",
            )
        else:
            requests.delete(
                f"{broker.url}/api/global-parameters/mqtt_port_to_vhost_mapping", auth=broker.auth, timeout=30
            )

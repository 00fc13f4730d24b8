"""Shovels and federation upstreams (runtime parameters of the plugins) against the real test node."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from clients import amqp_url

from broker_api import Api
from cli_runner import broker_env, run_topo

pytestmark = pytest.mark.broker


def topology(vhost: str, shovel: str = "", upstream: str = "") -> str:
    return f"""
    vhosts:
      {json.dumps(vhost)}:
        queues:
          inbox: {{}}
          archive: {{}}
        shovels:
          {json.dumps(shovel or "to-archive")}:
            src-uri: "amqp://archiver:${{SHOVEL_PW}}@localhost:1/src"
            src-queue: inbox
            dest-uri: amqp://
            dest-queue: archive
            ack-mode: on-confirm
        federation_upstreams:
          dc2: {{uri: "amqps://fed:${{FED_PW}}@dc2.example", max-hops: 1, {upstream}}}
        federation_upstream_sets:
          all: {{upstreams: [{{upstream: dc2}}]}}
    """


def parameters(api: Api, vhost: str) -> dict[str, Any]:
    return {(p["component"], p["name"]): p["value"] for p in api.get("parameters") if p["vhost"] == vhost}


def test_shovels_and_upstreams_apply_update_in_place_and_never_show_passwords(topo, api: Api, vhost_name: str) -> None:
    env = {"SHOVEL_PW": "Sh0vel secret", "FED_PW": "fed-S3cret"}
    applied = topo("apply", "--auto-approve", topology=topology(vhost_name), env=env)
    assert applied.code == 0, applied.output
    stored = parameters(api, vhost_name)
    assert stored["shovel", "to-archive"]["src-uri"] == "amqp://archiver:Sh0vel secret@localhost:1/src"
    assert stored["federation-upstream-set", "all"] == [{"upstream": "dc2"}]
    assert topo("plan", "--detailed-exitcode", topology=topology(vhost_name), env=env).code == 0

    # Only the password changes: an in-place update, shown without either password.
    changed = {**env, "FED_PW": "fed-N3w-secret"}
    plan = topo("plan", topology=topology(vhost_name), env=changed)
    assert '~ parameter federation-upstream "dc2"' in plan.stdout
    assert "value: (sensitive value changed)" in plan.stdout
    as_json = topo("plan", "--json", topology=topology(vhost_name), env=changed)
    for secret in ("Sh0vel secret", "fed-S3cret", "fed-N3w-secret"):
        assert secret not in plan.output + as_json.output
    assert topo("apply", "--auto-approve", topology=topology(vhost_name), env=changed).code == 0
    assert parameters(api, vhost_name)["federation-upstream", "dc2"]["uri"] == "amqps://fed:fed-N3w-secret@dc2.example"

    # A value change is an update too, and absent: true deletes.
    gone = topology(vhost_name, upstream="expires: 3600000").replace(
        "all: {upstreams: [{upstream: dc2}]}", "all: {absent: true}"
    )
    applied = topo("apply", "--auto-approve", topology=gone, env=changed)
    assert applied.code == 0, applied.output
    stored = parameters(api, vhost_name)
    assert stored["federation-upstream", "dc2"]["expires"] == 3600000
    assert ("federation-upstream-set", "all") not in stored


@pytest.mark.parametrize(
    "password",
    ['Zqwxyz9 ab"cd/x', "ab:cd:ef/ghij", "pässwort€/xyz", "Zq\\wxyz9/ab", 'Zqwxyz9 ab"cd', "pässwort€xyz", "Zq\\wxyz9"],
)
def test_a_refused_uri_never_echoes_its_password(topo, vhost_name: str, password: str) -> None:
    # RabbitMQ's validation error repeats the URI in Erlang's notation (escaped, split, as byte lists).
    bad = topology(vhost_name).replace("@localhost:1/src", "@localhost:1/src/extra/path")
    result = topo("apply", "--auto-approve", topology=bad, env={"SHOVEL_PW": password, "FED_PW": "x"})
    assert result.code == 1
    if "/" in password:  # the URI does not parse: refused before any change (preflight), without the URI
        assert "does not parse (its port is not a number): percent-encode" in result.stderr, result.output
    else:
        assert "the broker's details are not shown: they repeat a URI with its password" in result.stderr
    fragments = [piece for piece in password.replace(":", "/").split("/") if len(piece) >= 3]
    for fragment in [password, *fragments, "Zqwxyz9", "pässwort"]:
        assert fragment not in result.output


def test_an_export_says_which_listings_the_user_may_not_read(topo, api: Api, broker: Any, vhost_name: str) -> None:
    env = {"SHOVEL_PW": "Sh0vel-secret", "FED_PW": "fed-S3cret"}
    assert topo("apply", "--auto-approve", topology=topology(vhost_name), env=env).code == 0
    user = f"{vhost_name}-viewer"
    api.put({"password": "viewer-Pw-1", "tags": "management"}, "users", user)
    try:
        api.put({"configure": ".*", "write": ".*", "read": ".*"}, "permissions", vhost_name, user)
        as_user = broker_env(broker, TOPO_USER=user, TOPO_PASSWORD="viewer-Pw-1")
        result = run_topo("export", "--vhost", vhost_name, env=as_user)
        assert result.code == 0, result.output
        assert "inbox: {}" in result.stdout
        assert "shovels" not in result.stdout
        assert "may not read (tags: policymaker for shovels and federation" in result.stderr
        assert f"shovel parameters of {vhost_name!r}" in result.stderr
    finally:
        api.delete("users", user)


def test_the_federation_plugins_own_objects_are_never_listed_pruned_or_exported(
    topo, api: Api, broker: Any, vhost_name: str
) -> None:
    # A link inside the test node: the downstream vhost federates `events` from the upstream vhost, and
    # the plugin declares a queue and an internal exchange named "federation: ..." in the upstream one.
    upstream, downstream = f"{vhost_name}-up", vhost_name
    uri = amqp_url(broker, upstream)  # also with TOPO_TEST_URL: the broker's own AMQP port
    files = f"""
    prune: true
    vhosts:
      {json.dumps(upstream)}:
        exchanges:
          events: {{type: topic}}
        permissions:
          {json.dumps(broker.user)}: {{configure: ".*", write: ".*", read: ".*"}}
      {json.dumps(downstream)}:
        exchanges:
          events: {{type: topic}}
        federation_upstreams:
          dc1: {{uri: "{uri}"}}
        policies:
          federate: {{pattern: ^events$, apply-to: exchanges, definition: {{federation-upstream: dc1}}}}
    """
    try:
        applied = topo("apply", "--auto-approve", topology=files)
        assert applied.code == 0, applied.output
        deadline = time.monotonic() + 15
        while not any(q["name"].startswith("federation: ") for q in api.get("queues", upstream)):
            assert time.monotonic() < deadline, "the federation link never came up"
            time.sleep(0.3)
        plan = topo("plan", "--json", "--detailed-exitcode", topology=files)
        assert plan.code == 0, plan.output
        assert json.loads(plan.stdout)["unmanaged"] == []
        exported = run_topo("export", "--vhost", upstream, "--no-users", env=broker_env(broker))
        assert exported.code == 0, exported.output
        assert "federation: " not in exported.stdout
    finally:
        api.delete("vhosts", upstream)

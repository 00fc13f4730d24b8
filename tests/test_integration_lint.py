"""`topo lint --live` against the real test node: the upgrade check names each object 4.x would refuse.

The objects are created behind topo's back through the management API, as an application or an
operator would have. Whatever the broker under test refuses to create must be exactly what topo's
version table (topo.compat) says that version refuses, so the table is checked against the real
broker too; lint must then name every object that was created.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from broker_api import Api
from cli_runner import broker_env, run_topo
from topo.compat import Version, parse_version, rules_for

pytestmark = pytest.mark.broker


def broker_version(api: Api) -> Version:
    return parse_version(api.get("overview")["rabbitmq_version"])


def broker_version_text(api: Api) -> str:
    return str(api.get("overview")["rabbitmq_version"])


def put(broker: Any, body: dict[str, Any], *segments: str) -> requests.Response:
    url = broker.url + "/api/" + "/".join(quote(s, safe="") for s in segments)
    return requests.put(url, json=body, auth=(broker.user, broker.password), timeout=30)


# name -> (policy definition, the lint findings it must produce for target 4.0)
POLICIES: dict[str, tuple[dict[str, Any], set[str]]] = {
    "mirrored": ({"ha-mode": "all", "ha-sync-mode": "automatic"}, {"classic-queue-mirroring"}),
    "lazy-by-policy": ({"queue-mode": "lazy"}, {"queue-mode"}),
    "plain": ({"max-length": 100}, set()),
    # Values: refused everywhere; refused before 4.0 only (a negative limit is "unlimited" from 4.0).
    "string-ttl": ({"message-ttl": "60000"}, set()),
    "zero-expiry": ({"expires": 0}, set()),
    "unlimited": ({"delivery-limit": -1}, set()),
}
# name -> (durable, arguments, the lint findings it must produce for target 4.0)
QUEUES: dict[str, tuple[bool, dict[str, Any], set[str]]] = {
    "lazy.q": (True, {"x-queue-mode": "lazy"}, {"x-queue-mode"}),
    "v1.q": (True, {"x-queue-version": 1}, {"x-queue-version-1"}),
    "locator.q": (True, {"x-queue-master-locator": "min-masters"}, {"x-queue-master-locator"}),
    "transient.q": (False, {}, {"transient-nonexclusive-queue"}),
    "work.q": (True, {"x-queue-type": "quorum"}, {"quorum-delivery-limit"}),
    # Nothing declares exchange dlx: its dead letters would be dropped (a routing rule).
    "work-dlx.q": (True, {"x-queue-type": "quorum", "x-dead-letter-exchange": "dlx"}, {"dead-letter-exchange-missing"}),
    "fine.q": (True, {"x-queue-version": 2}, set()),
}


def create_legacy_topology(broker: Any, api: Api, vhost: str) -> set[tuple[str, str, str]]:
    """Creates what the version accepts; returns the (rule, kind, name) findings lint must report."""
    rules = rules_for(broker_version(api))
    api.put({}, "vhosts", vhost)
    expected: set[tuple[str, str, str]] = set()
    for name, (definition, findings) in POLICIES.items():
        body = {"pattern": f"^{name}$", "apply-to": "queues", "priority": 0, "definition": definition}
        response = put(broker, body, "policies", vhost, name)
        refused = (
            bool(rules.unknown_policy_keys(definition))
            or any(p.refused for p in rules.policy_problems(definition))
            or bool(rules.policy_value_problems(definition))
        )
        assert (response.status_code >= 400) == refused, (name, response.status_code, response.text)
        if not refused:
            expected |= {(rule, "policy", name) for rule in findings}
    for name, (durable, arguments, findings) in QUEUES.items():
        body = {"durable": durable, "auto_delete": False, "arguments": arguments}
        response = put(broker, body, "queues", vhost, name)
        refused = any(p.refused for p in rules.queue_argument_problems(arguments)) or any(
            p.refused for p in rules.queue_shape_problems(durable)
        )
        assert (response.status_code >= 400) == refused, (name, response.status_code, response.text)
        if not refused:
            expected |= {(rule, "queue", name) for rule in findings}
    return expected


def exit_code(document: dict[str, Any]) -> int:
    return 1 if any(f["level"] == "error" for f in document["findings"]) else 0


def findings_in(document: dict[str, Any], vhost: str) -> set[tuple[str, str, str]]:
    # These queues have no bindings (queue-unbound, info): the routing rules are tested live in
    # test_integration_lint_routing.py.
    return {
        (f["rule"], f["kind"], f["name"])
        for f in document["findings"]
        if f["vhost"] == vhost and f["rule"] != "queue-unbound"
    }


def test_live_lint_for_4_0_names_mirroring_lazy_and_transient_objects(broker: Any, api: Api, vhost_name: str) -> None:
    expected = create_legacy_topology(broker, api, vhost_name)
    version = broker_version(api)
    if version < (4, 0, 0):
        # The case: a 3.x broker with mirroring, lazy queues and transient queues.
        assert {("classic-queue-mirroring", "policy", "mirrored"), ("x-queue-mode", "queue", "lazy.q")} <= expected
        assert ("transient-nonexclusive-queue", "queue", "transient.q") in expected

    result = run_topo("lint", "--live", "--target-version", "4.0", "--json", env=broker_env(broker))
    document = json.loads(result.stdout)
    assert result.code == exit_code(document), result.output
    if version < (4, 0, 0):
        assert result.code == 1  # the mirroring policy
    assert document["target_version"] == "4.0" and document["live"] is True
    assert document["broker_version"] == api.get("overview")["rabbitmq_version"]
    assert findings_in(document, vhost_name) == expected
    mirrored = [f for f in document["findings"] if f["vhost"] == vhost_name and f["name"] == "mirrored"]
    if version < (4, 0, 0):
        # One finding per ha-* key, each an error with the replacement.
        assert sorted(f["message"].split(":")[0] for f in mirrored) == ["policy key ha-mode", "policy key ha-sync-mode"]
        assert all(f["level"] == "error" and "quorum queues" in f["fix"] for f in mirrored)
        assert all(f["file"] is None and f["line"] is None for f in document["findings"])

    # The same as text: one line per finding, naming vhost and object.
    text = run_topo("lint", "--live", "--target-version", "4.0", env=broker_env(broker))
    assert text.code == result.code
    ours = [line for line in text.stdout.splitlines() if f"vhost {vhost_name!r} " in line]
    assert len(ours) == len([f for f in document["findings"] if f["vhost"] == vhost_name])
    for rule, kind, name in expected:
        kind_text = "policy" if kind == "policy" else "queue"
        assert any(
            f"vhost {vhost_name!r} {kind_text} {name!r}: " in line and line.endswith(f"[{rule}]") for line in ours
        )
    assert text.stdout.splitlines()[-1].endswith(f"for RabbitMQ 4.0 (broker runs {document['broker_version']}).")


def test_live_lint_default_target_and_deprecated_features(broker: Any, api: Api, vhost_name: str) -> None:
    expected = create_legacy_topology(broker, api, vhost_name)
    version = broker_version(api)
    result = run_topo("lint", "--live", "--json", env=broker_env(broker))
    document = json.loads(result.stdout)
    # Default: the newest RabbitMQ topo knows, which denies transient non-exclusive queues by default.
    assert document["target_version"] == "4.3"
    levels = {(f["rule"], f["name"]): f["level"] for f in document["findings"] if f["vhost"] == vhost_name}
    newest = rules_for("4.3")
    assert levels[("x-queue-mode", "lazy.q")] == "warning"
    if version < (4, 0, 0):
        assert levels[("classic-queue-mirroring", "mirrored")] == "error"
    if ("transient-nonexclusive-queue", "queue", "transient.q") in expected:
        denied = newest.queue_shape_problems(durable=False)[0].refused
        assert levels[("transient-nonexclusive-queue", "transient.q")] == ("error" if denied else "warning")
    broker_level = [f for f in document["findings"] if f["rule"] == "deprecated-features-used"]
    if version < (3, 13, 0):
        assert broker_level == []
        assert "cannot report the deprecated features it uses (3.13+ can)" in result.stderr
    else:
        used = {item["name"] for item in api.get("deprecated-features", "used")}
        assert {f["message"].split(" (")[0].rsplit(" ", 1)[1] for f in broker_level} == used
    assert result.code == exit_code(document)


def test_live_lint_of_the_vhosts_in_files(broker: Any, api: Api, vhost_name: str, tmp_path: Path) -> None:
    expected = create_legacy_topology(broker, api, vhost_name)
    clean = vhost_name + "-clean"
    api.put({}, "vhosts", clean)
    try:
        api.put({"durable": True, "auto_delete": False, "arguments": {}}, "queues", clean, "fine")
        path = tmp_path / "topology.yaml"
        path.write_text(f"vhosts:\n  {json.dumps(clean)}:\n    queues:\n      fine: {{}}\n", encoding="utf-8")
        args = ("lint", "--live", "-f", str(path), "--target-version", "4.0")
        result = run_topo(*args, "--json", env=broker_env(broker))
        document = json.loads(result.stdout)
        # Nothing in the clean vhost but that its queue has no binding (info); what the broker reports
        # about itself (3.13+) is not per vhost.
        assert {(f["vhost"], f["rule"]) for f in document["findings"]} <= {
            (None, "deprecated-features-used"),
            (clean, "queue-unbound"),
        }
        assert result.code == exit_code(document)
        if broker_version(api) < (3, 13, 0):
            text = run_topo(*args, env=broker_env(broker))
            assert (text.code, text.stdout.splitlines()[-1]) == (
                0,
                f"Lint: 0 errors, 0 warnings, 1 info for RabbitMQ 4.0 (broker runs {broker_version_text(api)}).",
            )
        both = tmp_path / "both.yaml"
        both.write_text(f"vhosts:\n  {json.dumps(clean)}: {{}}\n  {json.dumps(vhost_name)}: {{}}\n", encoding="utf-8")
        result = run_topo(
            "lint", "--live", "-f", str(both), "--target-version", "4.0", "--json", env=broker_env(broker)
        )
        document = json.loads(result.stdout)
        assert {f["vhost"] for f in document["findings"] if f["vhost"] and f["rule"] != "queue-unbound"} == {vhost_name}
        assert findings_in(document, vhost_name) == expected
    finally:
        api.delete("vhosts", clean)


def test_live_lint_names_a_missing_vhost(broker: Any, vhost_name: str, tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(f"vhosts:\n  {json.dumps(vhost_name)}: {{}}\n", encoding="utf-8")
    result = run_topo("lint", "--live", "-f", str(path), env=broker_env(broker))
    assert result.code == 1
    assert f"no vhost {vhost_name!r} on the broker" in result.stderr
    assert "Traceback" not in result.output

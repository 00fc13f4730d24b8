"""Schema-valid topologies the broker would refuse (tests/refused/*.yaml): `plan` refuses each before any
change, naming the object at its line, and the broker is left exactly as it was (an apply too).

Each file says what the refusal must say (`# expect:`), the object it must name (`# object:`), either of
them for one broker version where that version says it otherwise (`# expect 4.3:`), whether
`validate` refuses it already (`# offline:`) and whether its vhost exists beforehand (`# setup:`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from broker_api import Api
from cli_runner import broker_env, run_topo

pytestmark = pytest.mark.broker

FIXTURES = sorted((Path(__file__).parent / "refused").glob("*.yaml"))


def _header(path: Path, name: str, version: str | None = None) -> str | None:
    lines = path.read_text(encoding="utf-8").splitlines()
    for prefix in ([f"# {name} {version}: "] if version else []) + [f"# {name}: "]:
        for line in lines:
            if line.startswith(prefix):
                return line.removeprefix(prefix)
    return None


def _series(api: Api) -> str:
    """ "3.10" or "4.3": the broker's major.minor, as the fixtures' per-version headers name it."""
    return ".".join(str(api.get("overview")["rabbitmq_version"]).split(".")[:2])


def _state(api: Api) -> Any:
    definitions = api.get("definitions")
    definitions.pop("rabbitmq_version", None)
    return json.dumps(definitions, sort_keys=True)


def test_there_are_refused_fixtures() -> None:
    assert len(FIXTURES) >= 12


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_plan_refuses_before_any_change(path: Path, broker: Any, api: Api, vhost_name: str) -> None:
    values = {"VHOST": vhost_name, "ME": broker.user}
    env = broker_env(broker, **values)
    if _header(path, "setup"):
        api.put({}, "vhosts", vhost_name)
    series = _series(api)
    expect, named = (_header(path, key, series) for key in ("expect", "object"))
    assert expect and named, f"{path.name} lacks # expect: or # object:"
    for name, value in values.items():
        expect, named = expect.replace(f"${{{name}}}", value), named.replace(f"${{{name}}}", value)
    before = _state(api)
    for command in (("plan",), ("apply", "--auto-approve")):
        result = run_topo(*command, "-f", str(path), env=env)
        assert result.code == 1, result.output
        assert expect in result.stderr and named in result.stderr, result.output
        assert f"{path}:" in result.stderr  # file and line
        assert result.stderr.count(f"{named}: ") == 1, result.output  # each problem once
        assert "HTTP" not in result.stderr and "apply stopped" not in result.stderr, result.output
        assert _state(api) == before
    validated = run_topo("validate", "-f", str(path), env=env)
    if (_header(path, "offline") or "").startswith("validate"):
        assert validated.code == 1 and expect in validated.stderr, validated.output
    else:
        assert validated.code == 0, validated.output  # schema-valid: only the broker's state shows the problem


# What topo/policies.py says RabbitMQ accepts in a policy definition, checked against the node itself: each
# value topo accepts the broker accepts, each value topo refuses the broker refuses. The second column is
# 3.10's answer; ON_4 has 4.3's where it differs (classic queue mirroring is gone, so every ha- key is).
POLICY_VALUES: list[tuple[dict[str, Any], bool]] = [
    ({"message-ttl": 0}, True),
    ({"message-ttl": -1}, False),
    ({"message-ttl": "10"}, False),
    ({"message-ttl": 1.5}, False),
    ({"expires": 0}, False),
    ({"expires": 1}, True),
    ({"max-length": True}, False),
    ({"max-lenght": 1}, False),
    ({"queue-leader-locator": "balanced"}, True),
    ({"queue-leader-locator": "least-leaders"}, True),
    ({"queue-master-locator": "balanced"}, False),
    ({"dead-letter-strategy": "at-least-once"}, True),
    ({"dead-letter-strategy": "x"}, False),
    ({"queue-version": 2}, True),
    ({"queue-version": 3}, False),
    ({"stream-max-segment-size-bytes": -1}, False),
    ({"initial-cluster-size": 0}, True),
    ({"max-age": "7D"}, True),
    ({"max-age": "7d"}, False),
    ({"overflow": "reject-publish-dlx"}, True),
    ({"queue-mode": "x"}, False),
    ({"alternate-exchange": 1}, False),
    ({"ha-mode": "exactly"}, False),
    ({"ha-mode": "exactly", "ha-params": 2}, True),
    ({"ha-mode": "exactly", "ha-params": "2"}, False),
    ({"ha-mode": "nodes", "ha-params": ["a@b"]}, True),
    ({"ha-mode": "nodes", "ha-params": []}, False),
    ({"ha-mode": "all", "ha-params": 2}, False),
    ({"ha-sync-mode": "automatic"}, False),
    ({"ha-mode": "all", "ha-sync-mode": "automatic", "ha-sync-batch-size": 1}, True),
    ({"ha-mode": "all", "ha-sync-batch-size": 0}, False),
    ({"ha-mode": "all", "ha-promote-on-failure": "x"}, False),
    ({"federation-upstream-set": "all"}, True),
    ({"federation-upstream-pattern": "("}, False),
]
OPERATOR_VALUES: list[tuple[dict[str, Any], bool]] = [
    ({"message-ttl": 5, "max-length": 10}, True),
    ({"overflow": "drop-head"}, False),
    ({"ha-mode": "all"}, False),
    ({"dead-letter-exchange": "dlx"}, False),
]
ON_4: dict[tuple[str, str], bool] = {
    ("operator-policies", json.dumps({"overflow": "drop-head"})): True,  # 3.12+
}


def _accepted(kind: str, definition: dict[str, Any], on_3_10: bool, series: str) -> bool:
    if series.startswith("3."):
        return on_3_10
    if any(key.startswith("ha-") for key in definition):
        return False
    return ON_4.get((kind, json.dumps(definition)), on_3_10)


def test_the_policy_table_matches_the_broker(api: Api, vhost_name: str) -> None:
    from topo.compat import parse_version
    from topo.policies import definition_problems

    api.put({}, "vhosts", vhost_name)
    version = str(api.get("overview")["rabbitmq_version"])
    series = _series(api)
    cases = [(d, ok, "policies") for d, ok in POLICY_VALUES]
    cases += [(d, ok, "operator-policies") for d, ok in OPERATOR_VALUES]
    for definition, on_3_10, kind in cases:
        accepted = _accepted(kind, definition, on_3_10, series)
        body = {"pattern": "^none$", "apply-to": "queues", "definition": definition}
        response = requests.put(api._url(kind, vhost_name, "p"), json=body, auth=api.auth, timeout=30)
        operator = kind == "operator-policies"
        topo_accepts = not definition_problems(definition, operator, parse_version(version))
        assert topo_accepts == accepted, (kind, definition)
        assert (response.status_code < 300) == accepted, (kind, definition, response.status_code, response.text)
        requests.delete(api._url(kind, vhost_name, "p"), auth=api.auth, timeout=30)

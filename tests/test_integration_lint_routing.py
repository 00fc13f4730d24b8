"""`topo lint --live`'s routing rules on the real test node (3.10, or 4.3 with TOPO_TEST_RABBITMQ=4.3).

A topology with every routing mistake lint knows is applied with topo; the broker's state must then
give exactly the findings the files give (the same rule, object, level and words; only file:line
becomes vhost/object), and the broker itself must agree with what the findings say about it: the
policy it applies, and where a queue's dead letters go.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from broker_api import Api, queue_with_policy
from cli_runner import broker_env, run_topo

pytestmark = pytest.mark.broker

TOPOLOGY = """\
vhosts:
  {vhost}:
    exchanges:
      in: {{type: fanout}}
      nowhere: {{type: direct}}
      hidden: {{type: fanout, internal: true}}
      dlx: {{type: fanout}}
    queues:
      missing-dlx: {{arguments: {{x-dead-letter-exchange: nope}}}}
      by-policy: {{}}
      strategy:
        type: quorum
        arguments: {{x-dead-letter-exchange: dlx, x-dead-letter-strategy: at-least-once}}
      strategy-safe:
        type: quorum
        arguments: {{x-dead-letter-exchange: dlx, x-dead-letter-strategy: at-least-once, x-overflow: reject-publish}}
      ttl: {{arguments: {{x-message-ttl: 500}}}}
      capped: {{arguments: {{x-max-length: 1000}}}}
      tie.q: {{}}
      lonely: {{}}
    bindings:
      - {{source: in, destination: missing-dlx}}
      - {{source: in, destination: by-policy}}
      - {{source: in, destination: strategy}}
      - {{source: in, destination: strategy-safe}}
      - {{source: in, destination: ttl}}
      - {{source: in, destination: capped}}
      - {{source: in, destination: tie.q}}
      - {{source: dlx, destination: tie.q}}
      - {{source: hidden, destination: tie.q}}
    policies:
      dead-letters: {{pattern: "^by-policy$", apply-to: queues, definition: {{dead-letter-exchange: gone}}}}
      ttl: {{pattern: "^ttl$", apply-to: queues, priority: 1, definition: {{message-ttl: 1000}}}}
      tie-a: {{pattern: "^tie", apply-to: queues, priority: 2, definition: {{max-length: 10}}}}
      tie-b: {{pattern: "\\\\.q$", apply-to: queues, priority: 2, definition: {{max-length-bytes: 100000}}}}
    operator_policies:
      cap: {{pattern: "^capped$", apply-to: queues, definition: {{max-length: 100}}}}
"""

EXPECTED = {
    ("dead-letter-exchange-missing", "queue", "missing-dlx", "error"),
    ("dead-letter-exchange-missing", "queue", "by-policy", "error"),
    ("dead-letter-strategy-overflow", "queue", "strategy", "warning"),
    ("exchange-routes-nowhere", "exchange", "nowhere", "warning"),
    ("internal-exchange-unreachable", "exchange", "hidden", "warning"),
    ("queue-unbound", "queue", "lonely", "info"),
    ("policy-tie", "policy", "tie-a", "warning"),
    ("argument-policy-conflict", "queue", "ttl", "warning"),
    ("argument-policy-conflict", "queue", "capped", "warning"),
}


def comparable(document: dict[str, Any], vhost: str) -> set[tuple[str, str, str, str, str, str]]:
    return {
        (f["rule"], f["kind"], f["name"], f["level"], f["message"], f["fix"])
        for f in document["findings"]
        if f["vhost"] == vhost
    }


def test_live_routing_findings_match_the_files(broker: Any, api: Api, vhost_name: str, tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(vhost=json.dumps(vhost_name)), encoding="utf-8")
    env = broker_env(broker)
    applied = run_topo("apply", "-f", str(path), "--auto-approve", env=env)
    assert applied.code == 0, applied.output

    for target in ("3.10", "4.3"):
        offline = run_topo("lint", "-f", str(path), "--target-version", target, "--json")
        live = run_topo("lint", "--live", "-f", str(path), "--target-version", target, "--json", env=env)
        assert (offline.code, live.code) == (1, 1), (offline.output, live.output)  # missing dead-letter exchanges
        files, broker_side = json.loads(offline.stdout), json.loads(live.stdout)
        assert {(f[0], f[1], f[2], f[3]) for f in comparable(files, vhost_name)} == EXPECTED, target
        assert comparable(broker_side, vhost_name) == comparable(files, vhost_name), target
        assert all(f["file"] is None for f in broker_side["findings"])

    # The broker agrees with what the findings say: the policy it applies to the conflicting queues,
    # one of the tied policies on tie.q, and the dead-letter exchanges that do not exist.
    def queue(name: str) -> dict[str, Any]:
        return queue_with_policy(api, vhost_name, name)

    assert queue("ttl")["policy"] == "ttl"
    assert queue("capped")["operator_policy"] == "cap"
    assert queue("tie.q")["policy"] in ("tie-a", "tie-b")
    assert queue("by-policy")["policy"] == "dead-letters"
    exchanges = {x["name"] for x in api.get("exchanges", vhost_name)}
    assert "gone" not in exchanges and "nope" not in exchanges


def test_live_lint_text_names_vhost_and_object(broker: Any, vhost_name: str, tmp_path: Path) -> None:
    path = tmp_path / "topology.yaml"
    path.write_text(TOPOLOGY.format(vhost=json.dumps(vhost_name)), encoding="utf-8")
    env = broker_env(broker)
    assert run_topo("apply", "-f", str(path), "--auto-approve", env=env).code == 0
    text = run_topo("lint", "--live", "-f", str(path), env=env)
    line = next(x for x in text.stdout.splitlines() if "'missing-dlx'" in x)
    expected = f"error: vhost {vhost_name!r} queue 'missing-dlx': dead-letter exchange 'nope' (from argument "
    assert line.startswith(expected), line
    assert line.endswith("[dead-letter-exchange-missing]")
    assert textwrap.dedent(text.stdout).splitlines()[-1].startswith("Lint: 2 errors, ")

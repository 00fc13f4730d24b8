"""route, explain and test against the real broker: --live reads, throwaway copies, the broker's own policy choice."""

from __future__ import annotations

import json
import secrets
import textwrap
from pathlib import Path
from typing import Any

import requests

from broker_api import Api, queue_with_policy
from cli_runner import broker_env, run_topo

ORDERS = str(Path(__file__).parent.parent / "examples" / "orders")

POLICIES = """\
version: 1
vhosts:
  {vhost}:
    exchanges:
      in: {{type: topic}}
      fallback: {{type: fanout}}
    queues:
      jobs.a: {{arguments: {{x-message-ttl: 900, x-max-length: 70}}}}
      jobs.b: {{type: quorum, arguments: {{x-delivery-limit: 9}}}}
      other: {{}}
      fell: {{}}
    bindings:
      - {{source: in, destination: jobs.a, routing_key: a.#}}
      - {{source: fallback, destination: fell}}
    policies:
      broad: {{pattern: "^jobs", apply-to: queues, priority: 1, definition: {{max-length: 1000, message-ttl: 2000}}}}
      narrow: {{pattern: "\\\\.b$", apply-to: queues, priority: 5, definition: {{delivery-limit: 4}}}}
      ae: {{pattern: "^in$", apply-to: exchanges, priority: 0, definition: {{alternate-exchange: fallback}}}}
    operator_policies:
      cap: {{pattern: ".*", apply-to: queues, priority: 0, definition: {{max-length: 50, delivery-limit: 20}}}}
"""


def _vhosts(broker: Any) -> list[str]:
    return [v["name"] for v in Api(broker).get("vhosts")]


def test_explain_live_agrees_with_the_broker(broker: Any, vhost_name: str, topo: Any) -> None:
    applied = topo("apply", "--auto-approve", topology=POLICIES.format(vhost=vhost_name))
    assert applied.code == 0, applied.output
    api = Api(broker)
    for queue in ("jobs.a", "jobs.b", "other", "fell"):
        result = topo("explain", "--live", "--vhost", vhost_name, queue, "--json")
        assert result.code == 0, result.output
        (explained,) = json.loads(result.stdout)
        on_broker = queue_with_policy(api, vhost_name, queue)
        assert (explained["policy"] or {}).get("name") == (on_broker.get("policy") or None), queue
        assert (explained["operator_policy"] or {}).get("name") == (on_broker.get("operator_policy") or None), queue
        # The broker's merge of policy and operator policy, against ours (arguments left out).
        merged = {
            key: entry["value"]
            for key, entry in explained["effective"].items()
            if entry["source"].startswith(("policy ", "operator policy "))
        }
        merged.update(
            {
                key: entry["value"]
                for key, entry in explained["effective"].items()
                if "smaller than argument" in entry["source"]
            }
        )
        broker_side = dict(on_broker.get("effective_policy_definition") or {})
        for key in set(broker_side) - set(merged):
            # A key the queue's own argument overrides, or one this queue type ignores.
            assert f"x-{key}" in on_broker["arguments"], (queue, key)
        for key, value in merged.items():
            assert broker_side.get(key) == value, (queue, key, broker_side)
    offline = topo("explain", "--vhost", vhost_name, "jobs.b")
    assert 'policy: "narrow" (priority 5' in offline.stdout and 'operator policy: "cap"' in offline.stdout
    assert "delivery-limit = 4  (policy 'narrow' (smaller than argument x-delivery-limit's 9))" in offline.stdout
    # The alternate exchange set by policy, read back from the broker.
    routed = topo("route", "--live", "--vhost", vhost_name, "-e", "in", "-k", "b", "--json")
    assert json.loads(routed.stdout)["queues"] == ["fell"], routed.output


def test_plan_shows_the_policy_of_new_queues(vhost_name: str, topo: Any) -> None:
    result = topo("plan", topology=POLICIES.format(vhost=vhost_name))
    assert result.code == 0, result.output
    # On 3.x the operator policy (it sets delivery-limit) stays off the classic queue.
    broad = '# effective policy "broad": max-length=1000 (the queue\'s argument 70 applies), message-ttl=2000'
    assert broad in result.stdout
    assert '# effective policy "narrow": delivery-limit=4; operator policy "cap": max-length=50' in result.stdout


def test_topo_test_live_uses_a_throwaway_vhost(broker: Any, tmp_path: Path) -> None:
    env = broker_env(broker)
    before = _vhosts(broker)
    result = run_topo("test", "-f", ORDERS, "--live", env=env)
    assert result.code == 0, result.output
    assert "10 passed (live, in a throwaway vhost)." in result.stdout
    assert "Probing a throwaway copy of vhost 'orders' in vhost 'topo-test-" in result.stderr
    assert _vhosts(broker) == before  # created, probed, removed; "orders" itself never touched
    failing = tmp_path / "fail.yaml"
    failing.write_text(
        textwrap.dedent("""\
        version: 1
        tests:
          - name: wrong on purpose
            exchange: orders
            routing_key: order.created.eu
            expect: [orders.shipping]
          - name: right
            exchange: orders
            routing_key: order.paid.eu
            headers: {payment-method: gift-card}
            expect: [orders.shipping, orders.fraud-review]
        """),
        encoding="utf-8",
    )
    result = run_topo("test", "-f", ORDERS, "--tests", str(failing), "--live", "--json", env=env)
    assert result.code == 1, result.output
    body = json.loads(result.stdout)
    assert [t["passed"] for t in body["tests"]] == [False, True]
    assert body["tests"][0]["actual"] == ["orders.billing"]
    assert _vhosts(broker) == before


def test_topo_test_live_needs_an_administrator(broker: Any) -> None:
    name, password = f"plain-{secrets.token_hex(3)}", secrets.token_hex(8)
    api = Api(broker)
    api.put({"password": password, "tags": "management,policymaker"}, "users", name)
    try:
        before = _vhosts(broker)
        env = broker_env(broker, TOPO_USER=name, TOPO_PASSWORD=password)
        result = run_topo("test", "-f", ORDERS, "--live", env=env)
        assert result.code == 4, result.output
        assert "needs the administrator tag" in result.stderr and "Run the tests offline" in result.stderr
        assert _vhosts(broker) == before
    finally:
        requests.delete(f"{broker.url}/api/users/{name}", auth=broker.auth, timeout=30)

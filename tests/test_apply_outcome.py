"""`apply --format json|markdown` against the real node: one document saying what was done."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from test_render_markdown import html_tree

from broker_api import Api


@pytest.fixture
def limited_user(api: Api, vhost_name: str):
    """May configure only app.* objects in the vhost: the broker refuses the rest, one by one."""
    name = f"{vhost_name}-limited"
    api.put({}, "vhosts", vhost_name)
    api.put({"password": "limited-Pw-1", "tags": "management"}, "users", name)
    api.put({"configure": "^(app\\..*|topo\\.lock)$", "write": ".*", "read": ".*"}, "permissions", vhost_name, name)
    yield {"TOPO_USER": name, "TOPO_PASSWORD": "limited-Pw-1"}
    requests.delete(api._url("users", name), auth=api.auth, timeout=30)


def _topology(vhost: str) -> str:
    return (
        f"vhosts:\n  {json.dumps(vhost)}:\n    exchanges:\n      app.events: {{type: topic}}\n"
        "    queues:\n      app.jobs: {}\n      other: {}\n"
        "    bindings:\n      - {source: app.events, destination: app.jobs, routing_key: 'a.#'}\n"
    )


def test_a_successful_apply_reports_every_step_and_the_verification(topo, vhost_name: str) -> None:
    result = topo("apply", "--auto-approve", "--json", topology=_topology(vhost_name))
    assert result.code == 0, result.output
    document = json.loads(result.stdout)
    assert document["format_version"] == "1" and document["outcome"] == "applied"
    assert document["plan"]["summary"] == {"add": 5, "change": 0, "replace": 0, "destroy": 0}
    assert document["steps"]["total"] == 5 and len(document["steps"]["done"]) == 5
    assert document["steps"]["failed"] == [] and document["steps"]["not_attempted"] == []
    assert document["verification"] == {"converged": True, "remaining": []}
    again = json.loads(topo("apply", "--auto-approve", "--format", "json").stdout)
    assert again["outcome"] == "no_changes" and again["steps"]["total"] == 0 and again["verification"] is None


def test_a_failed_apply_names_status_reason_and_what_was_not_attempted(
    topo, api: Api, vhost_name: str, limited_user: dict[str, Any]
) -> None:
    result = topo("apply", "--auto-approve", "--json", topology=_topology(vhost_name), env=limited_user)
    assert result.code == 1, result.output
    assert "Error: apply stopped" in result.stderr  # people still get the message
    document = json.loads(result.stdout)
    assert document["outcome"] == "failed"
    steps = document["steps"]
    assert [(s["kind"], s["name"]) for s in steps["failed"]] == [("queue", "other")]
    assert steps["failed"][0]["status"] == 401 and "access" in steps["failed"][0]["reason"].lower()
    done = {(s["kind"], s["name"]) for s in steps["done"]}
    assert done == {("exchange", "app.events"), ("queue", "app.jobs")}
    assert [s["kind"] for s in steps["not_attempted"]] == ["binding"]
    assert document["verification"] is None and "apply stopped" in document["error"]
    assert "limited-Pw-1" not in result.output
    assert {q["name"] for q in api.get("queues", vhost_name)} == {"app.jobs"}  # what JSON says was done


def test_a_refused_apply_is_a_document_too(topo, api: Api, vhost_name: str) -> None:
    topology = _topology(vhost_name)
    assert topo("apply", "--auto-approve", topology=topology).code == 0
    api.publish(vhost_name, "other", 2)
    changed = topology.replace("other: {}", "other: {arguments: {x-max-length: 5}}")
    result = topo("apply", "--auto-approve", "--format", "json", topology=changed)
    assert result.code == 1
    document = json.loads(result.stdout)
    assert document["outcome"] == "refused" and "would destroy messages" in document["error"]
    assert document["steps"]["done"] == [] and document["plan"]["data_loss"][0]["messages"] == 2
    broken = json.loads(topo("apply", "--auto-approve", "--json", topology="vhosts: [").stdout)
    assert broken["outcome"] == "refused" and broken["plan"] is None and "topology" in broken["error"]


def test_apply_as_markdown_shows_the_plan_and_the_result(topo, vhost_name: str, limited_user) -> None:
    result = topo("apply", "--auto-approve", "--format", "markdown", topology=_topology(vhost_name), env=limited_user)
    assert result.code == 1
    tree = html_tree(result.stdout)
    assert tree.find("h3")[0].text() == "topo apply: 4 to add, 0 to change, 0 to replace, 0 to destroy"
    assert tree.find("h4")[0].text() == "Result: failed"
    items = [li.text() for li in tree.find("li")]
    assert "done: 2 of 4 steps" in items and "not attempted: 1" in items


def test_format_options_are_checked(topo, vhost_name: str) -> None:
    topology = _topology(vhost_name)
    both = topo("plan", "--json", "--format", "markdown", topology=topology)
    assert both.code == 1 and "contradict" in both.stderr
    unasked = topo("apply", "--format", "markdown", topology=topology)
    assert unasked.code == 1 and "needs --auto-approve" in unasked.stderr
    bad = topo("plan", "--format", "html", topology=topology)
    assert bad.code == 1 and "html" in bad.stderr and "Traceback" not in bad.output

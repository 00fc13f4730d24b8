"""Saved plans against the real node: `topo plan --out FILE`, `topo apply FILE`, and every way a saved
plan goes stale (the broker, a dependency, the files, a secret, another broker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from broker_api import Api
from cli_runner import Result, broker_env, run_topo
from topo.passwords import Password
from topo.savedplan import Sealer, _attrs
from topo.state import Key, Kind

PASSWORD = "Saved-Plan-Pw-1"


def topology(vhost: str, max_length: int = 5, user: str = "") -> str:
    users = f'users:\n  {json.dumps(user)}: {{password: "${{APP_PW}}", tags: []}}\n' if user else ""
    return (
        f"vhosts:\n  {json.dumps(vhost)}:\n"
        "    exchanges:\n      orders: {type: topic}\n      dlx: {external: true}\n"
        "    queues:\n"
        "      jobs: {}\n"
        f"      orders.created: {{arguments: {{x-max-length: {max_length}, x-dead-letter-exchange: dlx}}}}\n"
        "      archive: {}\n"
        "    bindings:\n"
        "      - {source: orders, destination: orders.created, routing_key: order.created}\n"
        "      - {source: dlx, destination: jobs}\n"
        "    shovels:\n"
        "      to-archive: {src-uri: 'amqp://archiver:${SHOVEL_PW}@localhost:1/src', src-queue: jobs,"
        " dest-uri: 'amqp://', dest-queue: archive}\n" + users
    )


@pytest.fixture
def saved(tmp_path: Path, broker: Any, api: Api, vhost_name: str):
    """Runs topo in tmp_path with the topology in topology.yaml; the vhost exists with its dlx."""
    api.put({}, "vhosts", vhost_name)
    api.put({"type": "fanout", "durable": True}, "exchanges", vhost_name, "dlx")
    user = f"{vhost_name}-app"
    secrets = {"APP_PW": PASSWORD, "SHOVEL_PW": "Shovel-Secret-7"}

    def run(*args: str, text: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        if text is not None:
            (tmp_path / "topology.yaml").write_text(text, encoding="utf-8")
        return run_topo(*args, env={**broker_env(broker), **secrets, **(env or {})}, cwd=str(tmp_path))

    run.user = user  # type: ignore[attr-defined]
    run.path = tmp_path / "plan.json"  # type: ignore[attr-defined]
    yield run
    requests.delete(api._url("users", user), auth=api.auth, timeout=30)


def test_apply_of_a_saved_plan_applies_it_without_asking_and_the_file_holds_no_secret(
    saved, api: Api, vhost_name: str
) -> None:
    planned = saved("plan", "--out", "plan.json", text=topology(vhost_name, user=saved.user))
    assert planned.code == 0, planned.output
    assert "Saved the plan to plan.json" in planned.stderr
    text = saved.path.read_text(encoding="utf-8")
    document = json.loads(text)
    assert document["format"] == "topo-saved-plan" and document["version"] == 1
    assert document["files"] == [] and document["broker"]["cluster_id"].startswith("rabbitmq-cluster-id-")
    assert PASSWORD not in text and "Shovel-Secret-7" not in text and "amqp://archiver:***@localhost:1/src" in text
    # No stdin, no --auto-approve: the plan was reviewed, so apply does not ask.
    applied = saved("apply", "plan.json")
    assert applied.code == 0, applied.output
    assert "Verified: the broker matches the topology." in applied.stderr
    assert saved("plan", "--detailed-exitcode").code == 0
    # A user's stored hash is a secret too: an update's "before" holds it.
    stored_hash = api.get("users", saved.user)["password_hash"]
    changed = saved("plan", "--out", "plan.json", env={"APP_PW": "Another-Pw-2"})
    assert changed.code == 0 and "(sensitive value changed)" in changed.stdout
    text = saved.path.read_text(encoding="utf-8")
    assert stored_hash not in text and "Another-Pw-2" not in text and '"sealed": "hmac-sha256:' in text
    assert saved("apply", "plan.json", env={"APP_PW": "Another-Pw-2"}).code == 0


def test_a_saved_plan_is_refused_when_the_broker_changed_under_it(saved, api: Api, vhost_name: str) -> None:
    assert saved("apply", "--auto-approve", text=topology(vhost_name)).code == 0
    assert saved("plan", "--out", "plan.json", text=topology(vhost_name, max_length=10)).code == 0
    # Someone changes a queue the plan replaces, and the exchange a queue of the plan dead-letters to.
    api.delete("queues", vhost_name, "orders.created")
    api.put({"durable": True, "arguments": {"x-max-length": 7}}, "queues", vhost_name, "orders.created")
    api.delete("exchanges", vhost_name, "dlx")
    api.put({"type": "direct", "durable": True}, "exchanges", vhost_name, "dlx")
    refused = saved("apply", "plan.json")
    assert refused.code == 1, refused.output
    assert "refusing to apply plan.json" in refused.stderr and "nothing was changed" in refused.stderr
    assert (
        'queue "orders.created" in vhost' in refused.stderr and "changed on the broker since the plan" in refused.stderr
    )
    assert 'exchange "dlx" in vhost' in refused.stderr and "the plan depends on it" in refused.stderr
    queue = next(q for q in api.get("queues", vhost_name) if q["name"] == "orders.created")
    assert queue["arguments"]["x-max-length"] == 7  # before any change


def test_a_saved_plan_is_refused_when_the_files_or_a_secret_changed(saved, vhost_name: str) -> None:
    assert saved("plan", "--out", "plan.json", text=topology(vhost_name, user=saved.user)).code == 0
    secret = saved("apply", "plan.json", env={"APP_PW": "Changed-Pw-3"})
    assert secret.code == 1 and f'user "{saved.user}": the files or variables now ask' in secret.stderr
    assert "password (sensitive)" in secret.stderr and "Changed-Pw-3" not in secret.output
    shovel = saved("apply", "plan.json", env={"SHOVEL_PW": "Changed-Shovel-4"})
    assert shovel.code == 1 and "to-archive" in shovel.stderr and "Changed-Shovel-4" not in shovel.output
    key = saved("apply", "plan.json", env={"TOPO_PLAN_KEY": "another-key"})
    assert key.code == 1 and "(sensitive)" in key.stderr  # digests need the same key at plan and apply
    saved.path.parent.joinpath("topology.yaml").write_text(topology(vhost_name, max_length=9, user=saved.user))
    files = saved("apply", "plan.json")
    assert files.code == 1 and 'queue "orders.created"' in files.stderr
    assert "the files or variables now ask for something else (arguments)" in files.stderr


def test_messages_are_counted_again_at_apply(saved, api: Api, vhost_name: str) -> None:
    assert saved("apply", "--auto-approve", text=topology(vhost_name)).code == 0
    assert saved("plan", "--out", "plan.json", text=topology(vhost_name, max_length=10)).code == 0
    assert json.loads(saved.path.read_text())["data_loss"] == []
    api.publish(vhost_name, "orders.created", 3)
    refused = saved("apply", "plan.json")
    assert refused.code == 1 and "would destroy messages" in refused.stderr and "3 message(s)" in refused.stderr
    assert api.messages(vhost_name, "orders.created") == 3
    allowed = saved("apply", "plan.json", "--allow-data-loss")
    assert allowed.code == 0, allowed.output


def test_a_plan_from_another_broker_is_refused(saved, empty_broker, vhost_name: str, tmp_path: Path) -> None:
    assert saved("plan", "--out", "plan.json", text=topology(vhost_name)).code == 0
    other = saved("apply", "plan.json", env=empty_broker.env())
    assert other.code == 1 and "it was made for cluster" in other.stderr and "this broker is cluster" in other.stderr


def test_bad_plan_files_are_clear_errors(saved, vhost_name: str) -> None:
    assert saved("plan", "--out", "plan.json", text=topology(vhost_name)).code == 0
    document = json.loads(saved.path.read_text())
    saved.path.write_text(json.dumps({**document, "version": 99}))
    newer = saved("apply", "plan.json")
    assert newer.code == 1 and "format version 99" in newer.stderr
    saved.path.write_text("{not json")
    broken = saved("apply", "plan.json")
    assert broken.code == 1 and "not a saved plan" in broken.stderr and "Traceback" not in broken.output
    assert saved("apply", "missing.json").code == 1
    both = saved("apply", "plan.json", "-f", "topology.yaml")
    assert both.code == 1 and "names its own files" in both.stderr


def test_secrets_are_sealed_per_object_and_field() -> None:
    sealer = Sealer("key-material", "salt")
    user = Key(Kind.USER, "", "a")
    attrs = {"password": Password("", plaintext="same"), "tags": []}
    sealed = _attrs(user, attrs, sealer)
    other = _attrs(Key(Kind.USER, "", "b"), attrs, sealer)
    assert sealed["password"] != other["password"]  # two users with one password do not show it
    assert sealed == _attrs(user, attrs, Sealer("key-material", "salt"))
    assert sealed != _attrs(user, attrs, Sealer("key-material", "other-salt"))
    uri = {"value": {"src-uri": "amqp://u:pw-123@h/v"}}
    masked = _attrs(Key(Kind.PARAMETER, "/", "shovel/s"), uri, sealer)
    assert masked["value"]["masked"] == {"src-uri": "amqp://u:***@h/v"} and "pw-123" not in json.dumps(masked)
    with pytest.raises(Exception, match="TOPO_PLAN_KEY"):
        _attrs(user, attrs, Sealer(None, "salt"))

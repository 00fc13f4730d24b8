"""The honest plan of a migration (issue 11, item 4-5) against real nodes: refused before any change when
the shovel plugin or a permission is missing (naming it), run by a non-administrator, carried by saved
plans, and the consumers of the migrated queue cancelled only with --allow-disruption."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pika
import pytest
import requests
from clients import amqp_url

from broker_api import Api
from cli_runner import Result, broker_env, run_topo
from rabbitmq_node import DEFAULT_PLUGINS, RabbitNode
from topo import migrate

MESSAGES = 200


def _topology(vhost: str, queue: str = "jobs: {}") -> str:
    return (
        f"vhosts:\n  {json.dumps(vhost)}:\n    exchanges:\n      orders: {{type: topic}}\n"
        f"    queues:\n      {queue}\n"
        "    bindings:\n      - {source: orders, destination: jobs, routing_key: 'order.*'}\n"
    )


QUORUM = "jobs: {type: quorum}"


def _password(user: str) -> str:
    return f"{user}-Pw-9"  # not the name: topo hides its password wherever it appears in its output


class Node:
    """Runs topo in a directory against one broker, as its administrator or as another user."""

    def __init__(self, broker: Any, tmp_path: Path, vhost: str) -> None:
        self.broker, self.tmp_path, self.vhost = broker, tmp_path, vhost
        self.api = Api(broker)

    def topo(self, *args: str, topology: str | None = None, user: str | None = None) -> Result:
        if topology is not None:
            (self.tmp_path / "topology.yaml").write_text(topology, encoding="utf-8")
        who = {"TOPO_USER": user, "TOPO_PASSWORD": _password(user)} if user else {}
        return run_topo(*args, env=broker_env(self.broker, **who), cwd=str(self.tmp_path))

    def setup(self, messages: int = MESSAGES) -> None:
        result = self.topo("apply", "--auto-approve", topology=_topology(self.vhost))
        assert result.code == 0, result.output
        self.api.publish(self.vhost, "jobs", messages)

    def user(self, name: str, configure: str = ".*", write: str = ".*", read: str = ".*") -> str:
        self.api.put({"password": _password(name), "tags": "management,policymaker"}, "users", name)
        self.api.put({"configure": configure, "write": write, "read": read}, "permissions", self.vhost, name)
        return name

    def messages(self, expected: int) -> int:
        """The queue's message count once it is `expected` (a new quorum queue's count lags a few seconds)."""
        deadline = time.monotonic() + 20
        while (found := self.api.messages(self.vhost, "jobs")) != expected and time.monotonic() < deadline:
            time.sleep(0.5)
        return found

    def queue(self) -> dict[str, Any]:
        return dict(self.api.get("queues", self.vhost, "jobs"))

    def temporaries(self) -> list[str]:
        names = [q["name"] for q in self.api.get("queues", self.vhost)]
        names += [e["name"] for e in self.api.get("exchanges", self.vhost)]
        return [n for n in names if migrate.is_temporary(n)]

    def untouched(self, messages: int = MESSAGES) -> None:
        queue = self.queue()
        assert queue.get("type", "classic") == "classic"
        assert self.messages(messages) == messages
        assert self.temporaries() == []
        assert self.api.get("parameters", "shovel", self.vhost) == []


@pytest.fixture
def node(broker: Any, tmp_path: Path, vhost_name: str) -> Iterator[Node]:
    made = Node(broker, tmp_path, vhost_name)
    yield made
    for user in ("t-migrate-pm", "t-migrate-lim"):
        requests.delete(made.api._url("users", user), auth=made.api.auth, timeout=30)


@pytest.fixture(scope="module")
def no_shovel() -> Iterator[RabbitNode]:
    """A node of the version under test without the shovel plugin."""
    started = RabbitNode(plugins=[p for p in DEFAULT_PLUGINS if p != "rabbitmq_shovel"])
    started.start()
    try:
        yield started
    finally:
        started.stop()


def test_without_the_shovel_plugin_the_plan_is_refused_naming_it(no_shovel: RabbitNode, tmp_path: Path) -> None:
    from rabbitmq_node import Broker

    broker = Broker(url=no_shovel.url, user=no_shovel.user, password=no_shovel.password, node=no_shovel)
    node = Node(broker, tmp_path, "v-no-shovel")
    node.setup()
    policymaker = node.user("t-migrate-pm")
    # As the administrator (right after boot, when the node listing has no enabled_plugins yet on 4.3) and
    # as a policymaker, who may not read the node listing at all.
    for user in (None, policymaker):
        for command in (("plan", "--migrate"), ("apply", "--auto-approve", "--migrate")):
            refused = node.topo(*command, topology=_topology(node.vhost, QUORUM), user=user)
            assert refused.code == 1, refused.output
            assert "cannot migrate" in refused.stderr, refused.output
            assert "rabbitmq_shovel" in refused.stderr and "rabbitmq-plugins enable rabbitmq_shovel" in refused.stderr
            assert "Traceback" not in refused.output
            node.untouched()


def test_a_policymaker_migrates_a_queue(node: Node) -> None:
    node.setup()
    user = node.user("t-migrate-pm")
    planned = node.topo("plan", "--migrate", topology=_topology(node.vhost, QUORUM), user=user)
    assert planned.code == 0, planned.output
    assert f"{MESSAGES} message(s), about" in planned.stdout
    node.untouched()  # the checks of the plan changed nothing
    applied = node.topo("apply", "--auto-approve", "--migrate", user=user)
    assert applied.code == 0, applied.output
    assert node.queue()["type"] == "quorum"
    assert node.messages(MESSAGES) == MESSAGES
    assert node.temporaries() == [] and node.api.get("parameters", "shovel", node.vhost) == []
    assert node.topo("plan", "--detailed-exitcode", "--migrate", user=user).code == 0


@pytest.mark.parametrize(
    ("permissions", "named"),
    [
        ({"configure": r"^(jobs|topo\.lock)$"}, "lacks configure permission on topo.migrate.*"),
        ({"configure": r"^(?!jobs$).*"}, "lacks configure permission on queue 'jobs'"),
        ({"write": r"^(?!jobs$).*"}, "lacks write permission on queue 'jobs'"),
        ({"read": r"^(?!orders$).*"}, "lacks read permission on exchange 'orders'"),
        ({"write": r"^(?!topo\.migrate\.).*"}, "lacks read and write permission on topo.migrate.*"),
    ],
)
def test_a_missing_permission_is_refused_at_plan_time_naming_it(
    node: Node, permissions: dict[str, str], named: str
) -> None:
    node.setup()
    user = node.user("t-migrate-lim", **permissions)
    for command in (("plan", "--migrate"), ("apply", "--auto-approve", "--migrate")):
        refused = node.topo(*command, topology=_topology(node.vhost, QUORUM), user=user)
        assert refused.code == 1, refused.output
        assert "cannot migrate" in refused.stderr and named in refused.stderr, refused.stderr
        assert f"user 't-migrate-lim' in vhost {node.vhost!r}" in refused.stderr
        node.untouched()


def test_a_saved_plan_carries_its_migrations(node: Node) -> None:
    node.setup()
    planned = node.topo("plan", "--migrate", "--out", "plan.json", topology=_topology(node.vhost, QUORUM))
    assert planned.code == 0, planned.output
    text = (node.tmp_path / "plan.json").read_text(encoding="utf-8")
    document = json.loads(text)
    assert document["version"] == 2
    [saved] = document["migrations"]
    assert (saved["vhost"], saved["queue"], saved["messages"], saved["bindings"]) == (node.vhost, "jobs", MESSAGES, 1)
    assert saved["before"]["type"] == "classic" and saved["after"]["type"] == "quorum"
    assert saved["interrupted"] == [] and saved["finish"] is None
    assert node.broker.password not in text.replace('"guest"', "")  # the user's name may be its password
    # Messages move (more published since): not stale. Applied without --migrate: the file says migrate.
    node.api.publish(node.vhost, "jobs", 5)
    applied = node.topo("apply", "plan.json")
    assert applied.code == 0, applied.output
    assert f"{MESSAGES + 5} message(s)" in applied.stdout
    assert node.queue()["type"] == "quorum" and node.messages(MESSAGES + 5) == MESSAGES + 5
    assert node.temporaries() == []


def test_a_saved_migration_is_stale_when_its_definitions_changed(node: Node) -> None:
    node.setup()
    assert node.topo("plan", "--migrate", "--out", "plan.json", topology=_topology(node.vhost, QUORUM)).code == 0
    # An application binds the queue: the migration would move one binding more than planned.
    node.api.put({"type": "direct", "durable": True}, "exchanges", node.vhost, "app")
    where = quote(node.vhost, safe="")
    bound = requests.post(
        f"{node.broker.url}/api/bindings/{where}/e/app/q/jobs",
        json={"routing_key": "k"},
        auth=node.api.auth,
        timeout=30,
    )
    assert bound.status_code == 201, bound.text
    refused = node.topo("apply", "plan.json")
    assert refused.code == 1, refused.output
    assert "refusing to apply plan.json" in refused.stderr
    assert "migration of queue 'jobs'" in refused.stderr and "changed since the plan (bindings)" in refused.stderr
    node.untouched()
    # A plan saved without migrations, applied with --migrate, is not what was reviewed either.
    assert node.topo("plan", "--out", "plain.json").code == 0
    other = node.topo("apply", "plain.json", "--migrate")
    assert other.code == 1 and "not in the saved plan, now planned" in other.stderr, other.output
    node.untouched()


def _consumer(node: Node, cancelled: list[Any]) -> pika.BlockingConnection:
    """A pika consumer of jobs that holds (never acknowledges) at most one message; records cancels."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url(node.broker, node.vhost)))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1)
    channel.add_on_cancel_callback(cancelled.append)
    channel.basic_consume("jobs", lambda *_: None)
    statistics = node.topo("plan", "--migrate", "--json", topology=_topology(node.vhost, QUORUM))
    for _ in range(40):  # the consumer count arrives with the queue's statistics
        [change] = [c for c in json.loads(statistics.stdout)["changes"] if c["name"] == "jobs"]
        if change["consumers"]:
            break
        connection.process_data_events(0.5)
        statistics = node.topo("plan", "--migrate", "--json")
    return connection


def test_the_consumers_of_a_migrated_queue_are_cancelled_only_with_allow_disruption(node: Node) -> None:
    node.setup(messages=0)  # a consumer holding a message: see the test below
    cancelled: list[Any] = []
    connection = _consumer(node, cancelled)
    try:
        refused = node.topo("apply", "--auto-approve", "--migrate")
        assert refused.code == 1 and "cancel the consumers" in refused.stderr, refused.output
        assert cancelled == [] and node.queue().get("type", "classic") == "classic"
        applied = node.topo("apply", "--auto-approve", "--migrate", "--allow-disruption")
        assert applied.code == 0, applied.output
        connection.process_data_events(1)
        assert len(cancelled) == 1, "the broker sends basic.cancel when the old queue is deleted"
        assert node.queue()["type"] == "quorum"
        assert connection.is_open  # cancelled, not disconnected: the client must consume again itself
    finally:
        connection.close()


def test_a_message_a_cancelled_consumer_holds_is_never_deleted(node: Node) -> None:
    """A consumer holding a message unacknowledged keeps it in the old queue (if-empty counts only
    ready messages): topo stops with a clear error instead of deleting the queue, and once the consumer
    is gone (its message returned to the queue) the next apply finishes with every message."""
    node.setup()
    cancelled: list[Any] = []
    connection = _consumer(node, cancelled)
    try:
        stopped = node.topo("apply", "--auto-approve", "--migrate", "--allow-disruption")
        assert stopped.code == 1, stopped.output
        assert "delivered to a consumer and not acknowledged" in stopped.stderr, stopped.output
        assert "Traceback" not in stopped.output
        assert node.queue().get("type", "classic") == "classic"  # not deleted
    finally:
        connection.close()
    finished = node.topo("apply", "--auto-approve", "--migrate", "--allow-disruption")
    assert finished.code == 0, finished.output
    assert node.queue()["type"] == "quorum" and node.messages(MESSAGES) == MESSAGES
    assert node.temporaries() == []


# --- the plan as text, JSON and Markdown, and a saved migration's staleness (no broker) -----------------


def _migration_plan(messages: int = 12_000) -> Any:
    from topo.diff import Action, Change
    from topo.plan import Held, Plan
    from topo.state import Key, Kind

    key = Key(Kind.QUEUE, "v", "jobs")
    before = {"type": "classic", "durable": True, "auto_delete": False, "arguments": {}}
    after = {**before, "type": "quorum"}
    migration = migrate.Migration("v", "jobs", before, after, messages, 2)
    change = Change(Action.REPLACE, key, before, after, "type")
    return Plan((change,), held={key: Held(messages, False, 1)}, migrations=(migration,))


def test_the_plan_shows_messages_and_the_estimate_in_every_format() -> None:
    from topo.render import plan_to_json, render_text
    from topo.render_markdown import render_markdown

    plan = _migration_plan()
    [m] = plan.migrations
    seconds = f"about {m.seconds():.0f} s"
    assert m.seconds() == pytest.approx(2 * 12_000 / migrate.RATE + migrate.STEPS_SECONDS)
    from_quorum = migrate.Migration("v", "jobs", {**m.after}, {**m.after, "arguments": {"x-max-length": 9}}, 12_000)
    assert from_quorum.seconds() == pytest.approx(m.seconds() + migrate.QUORUM_TICK)  # its counts lag a tick
    text = render_text(plan)
    assert f'Migration of queue "jobs" in vhost "v": 12000 message(s), {seconds}' in text
    assert "    4. shovel jobs -> old (12000 message(s)); delete jobs once empty" in text
    [document] = plan_to_json(plan)["migrations"]
    assert document["messages"] == 12_000 and document["bindings"] == 2
    assert document["estimated_seconds"] == round(m.seconds(), 1) and len(document["steps"]) == len(migrate.STEPS)
    markdown = render_markdown(plan)
    assert "**Migration of queue <code>jobs</code> in vhost <code>v</code>**: 12000 messages, " + seconds in markdown
    assert "1. declare topo.migrate.* route" in markdown and "must consume again" in markdown
    assert "Data loss" not in markdown and "are dropped" not in markdown  # routing never has a gap
    assert len(render_markdown(_migration_plan(1)).split("1 message,")) == 2


def test_a_saved_migration_is_stale_for_its_definitions_not_its_message_count() -> None:
    from dataclasses import replace

    from topo.savedplan import Sealer, _stale_migrations, migration_record

    [m] = _migration_plan().migrations
    sealer = Sealer("key", "salt")
    saved = [json.loads(json.dumps(migration_record(m, sealer)))]
    assert _stale_migrations(saved, [migration_record(replace(m, messages=7), sealer)]) == []
    bindings = _stale_migrations(saved, [migration_record(replace(m, bindings=3), sealer)])
    assert bindings == ["migration of queue 'jobs' in vhost 'v': changed since the plan (bindings)"]
    target = replace(m, after={**m.after, "arguments": {"x-max-length": 5}})
    assert "(after)" in _stale_migrations(saved, [migration_record(target, sealer)])[0]
    assert "now no migration" in _stale_migrations(saved, [])[0]
    interrupted = _stale_migrations([], [migration_record(replace(m, interrupted=("old",)), sealer)])
    assert interrupted == [
        "migration of queue 'jobs' in vhost 'v': not in the saved plan, now planned (interrupted: found old)"
    ]

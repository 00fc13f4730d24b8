"""Zero-loss queue migration (issue 11, migrate.py) against the real node: 10,000 messages in a classic
queue and a pika publisher with confirms and the mandatory flag running through the migration; afterwards
the queue has its new type and arguments, its bindings (declared and undeclared) and exactly the confirmed
messages, by content, with the old ones in their order; nothing is returned."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import quote

import pika
import pytest
import requests
from clients import amqp_url

from cli_runner import Result
from topo import migrate
from topo.state import OFFLINE, Actual, Key, Kind, Obj

PRELOADED = 10_000


def _topology(vhost: str, queue: str) -> str:
    return f"""
    vhosts:
      {vhost}:
        exchanges:
          orders: {{type: topic}}
        queues:
          {queue}
        bindings:
          - {{source: orders, destination: jobs, routing_key: "order.*"}}
    """


class Publisher(threading.Thread):
    """Publishes unique ids with confirms and mandatory until stopped; records what was confirmed."""

    def __init__(self, url: str, pause: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.pause = pause
        self.confirmed: list[str] = []
        self.returned: list[bytes] = []
        self.nacked = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            connection = pika.BlockingConnection(pika.URLParameters(self.url))
            channel = connection.channel()
            channel.confirm_delivery()
            channel.add_on_return_callback(lambda _ch, _m, _p, body: self.returned.append(body))
            number = 0
            while not self.stop.is_set():
                # Alternately through the declared binding and through the application's own.
                key = "order.new" if number % 2 else "app.key"
                body = f"new-{number}"
                try:
                    channel.basic_publish("orders", key, body.encode(), mandatory=True)
                except pika.exceptions.UnroutableError as exc:
                    self.returned.extend(m.body for m in exc.messages)
                except pika.exceptions.NackError:
                    self.nacked += 1
                else:
                    self.confirmed.append(body)
                number += 1
                time.sleep(self.pause)
            connection.close()
        except BaseException as exc:  # reported by the test
            self.error = exc


def _setup(broker: Any, vhost: str, topo: Any, queue_yaml: str) -> str:
    result = topo("apply", "--auto-approve", topology=_topology(vhost, queue_yaml))
    assert result.code == 0, result.output
    url = amqp_url(broker, vhost)
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_bind("jobs", "orders", "app.key")  # an application's own binding, undeclared
    channel.confirm_delivery()
    for number in range(PRELOADED):
        channel.basic_publish("", "jobs", f"old-{number}".encode())
    connection.close()
    return url


def _drain(url: str, queue: str) -> list[str]:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    bodies = []
    while True:
        method, _props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        bodies.append(body.decode())
    connection.close()
    return bodies


def _queue(broker: Any, vhost: str, name: str) -> dict[str, Any]:
    response = requests.get(f"{broker.url}/api/queues/{quote(vhost, safe='')}/{name}", auth=broker.auth, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _check(broker: Any, vhost: str, url: str, publisher: Publisher, queue_type: str, arguments: dict) -> None:
    info = _queue(broker, vhost, "jobs")
    assert info["type"] == queue_type
    for name, value in arguments.items():
        assert info["arguments"][name] == value
    bindings = requests.get(
        f"{broker.url}/api/queues/{quote(vhost, safe='')}/jobs/bindings", auth=broker.auth, timeout=30
    ).json()
    assert {(b["source"], b["routing_key"]) for b in bindings if b["source"]} == {
        ("orders", "order.*"),
        ("orders", "app.key"),
    }
    everything = requests.get(f"{broker.url}/api/exchanges/{quote(vhost, safe='')}", auth=broker.auth, timeout=30)
    assert not [e["name"] for e in everything.json() if migrate.is_temporary(e["name"])]
    queues = requests.get(f"{broker.url}/api/queues/{quote(vhost, safe='')}", auth=broker.auth, timeout=30).json()
    assert not [q["name"] for q in queues if migrate.is_temporary(q["name"])]
    bodies = _drain(url, "jobs")
    old = [b for b in bodies if b.startswith("old-")]
    assert old == [f"old-{n}" for n in range(PRELOADED)]  # all of them, once each, in their order
    new = sorted(b for b in bodies if b.startswith("new-"))
    assert new == sorted(publisher.confirmed), (len(new), len(publisher.confirmed))
    assert publisher.returned == [] and publisher.nacked == 0
    # Everything published before or during the migration follows the messages the queue held.
    assert bodies[:PRELOADED] == old


@pytest.mark.parametrize(
    ("before", "after", "queue_type", "arguments"),
    [
        (
            "jobs: {migrate: true}",
            "jobs: {type: quorum, migrate: true, arguments: {x-max-length: 50000}}",
            "quorum",
            {"x-max-length": 50000},
        ),
        (
            "jobs: {arguments: {x-message-ttl: 3600000}}",
            "jobs: {arguments: {x-message-ttl: 7200000, x-max-length: 90000}}",
            "classic",
            {"x-message-ttl": 7200000, "x-max-length": 90000},
        ),
    ],
    ids=["classic-to-quorum", "arguments"],
)
def test_a_migration_keeps_every_message_while_a_publisher_runs(
    broker: Any, vhost_name: str, topo: Any, before: str, after: str, queue_type: str, arguments: dict
) -> None:
    url = _setup(broker, vhost_name, topo, before)
    flags = () if "migrate: true" in after else ("--migrate",)
    planned = topo("plan", *flags, topology=_topology(vhost_name, after))
    assert planned.code == 0, planned.output
    assert 'Migration of queue "jobs"' in planned.stdout and f"{PRELOADED} message(s)" in planned.stdout
    assert "Data loss" not in planned.stdout
    assert "+ binding" not in planned.stdout  # the migration moves the bindings back itself
    refused = topo("apply", "--auto-approve") if flags else None  # without --migrate: refused, as before
    if refused is not None:
        assert refused.code == 1 and "would destroy messages" in refused.output
    publisher = Publisher(url)
    publisher.start()
    time.sleep(0.5)
    began = time.monotonic()
    result: Result = topo("apply", "--auto-approve", *flags)
    seconds = time.monotonic() - began
    time.sleep(0.5)
    publisher.stop.set()
    publisher.join(30)
    assert publisher.error is None, publisher.error
    assert result.code == 0, result.output
    print(f"migrated {PRELOADED} messages in {seconds:.1f} s with {len(publisher.confirmed)} published meanwhile")
    assert len(publisher.confirmed) > 100
    _check(broker, vhost_name, url, publisher, queue_type, arguments)
    again = topo("plan", "--detailed-exitcode", *flags)
    assert again.code == 0, again.output


def test_the_temporaries_of_a_migration_are_out_of_scope_and_recorded() -> None:
    target = {"type": "quorum", "durable": True, "auto_delete": False, "arguments": {}}
    route = migrate.name("v", "jobs", "route")
    labels = {migrate.MIGRATES: "jobs", migrate.TARGET: '{"type": "quorum", "durable": true}'}
    objects = {
        Key(Kind.EXCHANGE, "v", route): Obj(Key(Kind.EXCHANGE, "v", route), {"arguments": labels}),
        Key(Kind.QUEUE, "v", migrate.name("v", "jobs", "old")): Obj(
            Key(Kind.QUEUE, "v", migrate.name("v", "jobs", "old")), {"arguments": labels, "type": "classic"}
        ),
    }
    found = migrate.record(Actual(OFFLINE, objects=objects))
    assert found == {("v", "jobs"): ({"type": "quorum", "durable": True}, ("old", "route"))}
    assert migrate.name("v", "jobs", "old") != migrate.name("w", "jobs", "old")
    assert target["type"] == "quorum"
    from topo.ownership import out_of_scope

    assert out_of_scope(objects[Key(Kind.EXCHANGE, "v", route)], objects, ())


def _plan_json(topo: Any, topology: str) -> dict[str, Any]:
    planned = topo("plan", "--json", topology=topology)
    assert planned.code == 0, planned.output
    return json.loads(planned.stdout)


def test_a_killed_migrations_shovel_is_not_an_application_consumer(
    broker: Any, vhost_name: str, topo: Any
) -> None:
    """A shovel that a killed apply left running (named topo.migrate.*) reads the queue: the finishing
    plan must neither count it as a consumer (which would refuse without --allow-disruption) nor list its
    parameter as unmanaged; an application's consumer beside it still counts."""
    result = topo("apply", "--auto-approve", topology=_topology(vhost_name, "jobs: {migrate: true}"))
    assert result.code == 0, result.output
    where = quote(vhost_name, safe="")
    sink = requests.put(f"{broker.url}/api/queues/{where}/sink", json={"durable": True}, auth=broker.auth, timeout=30)
    assert sink.status_code in (201, 204), sink.text
    shovel = migrate.name(vhost_name, "jobs", "shovel")
    vhost_uri = "amqp:///" + where
    value = {"src-uri": vhost_uri, "src-queue": "jobs", "dest-uri": vhost_uri, "dest-queue": "sink"}
    created = requests.put(
        f"{broker.url}/api/parameters/shovel/{where}/{shovel}", json={"value": value}, auth=broker.auth, timeout=30
    )
    assert created.status_code in (201, 204), created.text
    try:
        changed = _topology(vhost_name, "jobs: {migrate: true, arguments: {x-max-length: 10}}")
        deadline = time.monotonic() + 30
        # Until the broker lists the shovel's consumer (statistics lag): only then is the check meaningful.
        while not requests.get(f"{broker.url}/api/consumers/{where}", auth=broker.auth, timeout=30).json():
            assert time.monotonic() < deadline, "the shovel's consumer never appeared"
            time.sleep(0.2)
        time.sleep(6)  # and the queue's own consumers statistic, refreshed every few seconds
        plan = _plan_json(topo, changed)
        [change] = [c for c in plan["changes"] if c["kind"] == "queue" and c["name"] == "jobs"]
        assert change["consumers"] == 0, change
        assert migrate.PREFIX not in json.dumps(plan["unmanaged"]), plan["unmanaged"]
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url(broker, vhost_name)))
        channel = connection.channel()
        channel.basic_consume("jobs", lambda *_: None)
        try:
            deadline = time.monotonic() + 30
            while True:
                listed = requests.get(f"{broker.url}/api/consumers/{where}", auth=broker.auth, timeout=30).json()
                if len(listed) >= 2:
                    break
                assert time.monotonic() < deadline, listed
                connection.process_data_events(0.2)
            plan = _plan_json(topo, changed)
            [change] = [c for c in plan["changes"] if c["kind"] == "queue" and c["name"] == "jobs"]
            assert change["consumers"] == 1, change
        finally:
            connection.close()
    finally:
        requests.delete(f"{broker.url}/api/parameters/shovel/{where}/{shovel}", auth=broker.auth, timeout=30)


@pytest.mark.parametrize(
    ("before", "after", "queue_type", "arguments"),
    [
        ("jobs: {type: quorum, migrate: true}", "jobs: {migrate: true}", "classic", {}),
        (
            "jobs: {type: quorum, migrate: true}",
            "jobs: {type: quorum, migrate: true, arguments: {x-max-length: 50000}}",
            "quorum",
            {"x-max-length": 50000},
        ),
    ],
    ids=["quorum-to-classic", "quorum-arguments"],
)
def test_a_migration_from_a_quorum_queue_moves_each_message_once(
    broker: Any, vhost_name: str, topo: Any, before: str, after: str, queue_type: str, arguments: dict
) -> None:
    """Without a publisher: the shovels out of and back into the queue must not duplicate a message
    (a quorum source once gave hundreds of extra copies, docs/migrate.md)."""
    url = _setup(broker, vhost_name, topo, before)
    began = time.monotonic()
    result = topo("apply", "--auto-approve", topology=_topology(vhost_name, after))
    seconds = time.monotonic() - began
    assert result.code == 0, result.output
    print(f"migrated {PRELOADED} messages in {seconds:.1f} s")
    info = _queue(broker, vhost_name, "jobs")
    assert info["type"] == queue_type
    for key, value in arguments.items():
        assert info["arguments"][key] == value
    bodies = _drain(url, "jobs")
    assert len(bodies) == PRELOADED, f"{len(bodies) - PRELOADED} extra"
    assert bodies == [f"old-{n}" for n in range(PRELOADED)]

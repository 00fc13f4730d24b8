"""Classic -> stream migration (issue 11 item 1) against the real node, with a confirming publisher
(mandatory) running: afterwards the stream holds every message the queue held, in order, then every
confirmed publish once; nothing returned. A stream is read with a consumer from offset "first" (it
refuses basic.get)."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import pika
import requests
from test_migrate import PRELOADED, Publisher, _queue, _setup, _topology


def _read_stream(url: str, queue: str, expected: int, timeout: float = 60.0) -> list[str]:
    """Everything in the stream from its first offset; stops when `expected` were read and nothing more
    arrives for a second."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    bodies: list[str] = []

    def take(ch: Any, method: Any, _props: Any, body: bytes) -> None:
        bodies.append(body.decode())
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(queue, take, arguments={"x-stream-offset": "first"})
    deadline = time.monotonic() + timeout
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        connection.process_data_events(0.2)
        if len(bodies) != seen:
            seen, quiet_since = len(bodies), time.monotonic()
        elif len(bodies) >= expected and time.monotonic() - quiet_since > 1.0:
            break
    connection.close()
    return bodies


def test_a_classic_queue_becomes_a_stream_with_every_message(broker: Any, vhost_name: str, topo: Any) -> None:
    url = _setup(broker, vhost_name, topo, "jobs: {migrate: true}")
    after = _topology(vhost_name, "jobs: {type: stream, migrate: true, arguments: {x-max-age: 7D}}")
    planned = topo("plan", topology=after)
    assert planned.code == 0, planned.output
    assert 'Migration of queue "jobs"' in planned.stdout and f"{PRELOADED} message(s)" in planned.stdout
    publisher = Publisher(url)
    publisher.start()
    time.sleep(0.5)
    result = topo("apply", "--auto-approve")
    time.sleep(0.5)
    publisher.stop.set()
    publisher.join(30)
    assert publisher.error is None, publisher.error
    assert result.code == 0, result.output
    info = _queue(broker, vhost_name, "jobs")
    assert info["type"] == "stream" and info["arguments"]["x-max-age"] == "7D"
    where = quote(vhost_name, safe="")
    bindings = requests.get(f"{broker.url}/api/queues/{where}/jobs/bindings", auth=broker.auth, timeout=30).json()
    assert {(b["source"], b["routing_key"]) for b in bindings if b["source"]} == {
        ("orders", "order.*"),
        ("orders", "app.key"),  # the application's own binding, undeclared, kept
    }
    bodies = _read_stream(url, "jobs", PRELOADED + len(publisher.confirmed))
    old = [f"old-{n}" for n in range(PRELOADED)]
    assert bodies[:PRELOADED] == old  # all of them, once each, in their order, before any new one
    new = bodies[PRELOADED:]
    assert len(new) == len(set(new)), "duplicates"
    assert sorted(new) == sorted(publisher.confirmed), (len(new), len(publisher.confirmed))
    assert len(publisher.confirmed) > 100
    assert publisher.returned == [] and publisher.nacked == 0
    again = topo("plan", "--detailed-exitcode")
    assert again.code == 0, again.output

"""The broker fixture really provides a live RabbitMQ (guards the test setup itself)."""

import requests

from rabbitmq_node import Broker


def test_broker_fixture_gives_a_live_broker(broker: Broker) -> None:
    resp = requests.get(f"{broker.url}/api/overview", auth=broker.auth, timeout=30)
    assert resp.status_code == 200, resp.text
    assert resp.json()["rabbitmq_version"]

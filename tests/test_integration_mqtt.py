"""Topic permissions applied by topo really confine an MQTT client (RabbitMQ's MQTT plugin)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import requests

from broker_api import Api
from cli_runner import broker_env, run_topo

pytestmark = pytest.mark.broker


def mqtt_port(broker: Any) -> int:
    if broker.node is not None:
        return int(broker.node.mqtt_port)
    return int(os.environ.get("TOPO_TEST_MQTT_PORT", "1883"))


def publish(broker: Any, vhost: str, user: str, password: str, topic: str) -> None:
    """Publishes one QoS 1 message and waits until it is acknowledged or the broker drops us."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"topo-{time.monotonic_ns()}")
    # RabbitMQ's MQTT plugin takes the vhost in the user name: "vhost:user".
    client.username_pw_set(f"{vhost}:{user}", password)
    client.connect("127.0.0.1", mqtt_port(broker), keepalive=10)
    client.loop_start()
    try:
        info = client.publish(topic, b"21.5", qos=1)
        deadline = time.monotonic() + 5
        while not info.is_published() and client.is_connected() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a refused publish closes the connection shortly after
    finally:
        client.loop_stop()
        client.disconnect()


def count(api: Api, vhost: str, queue: str) -> int:
    deadline = time.monotonic() + 10
    while True:
        response = requests.get(
            api._url("queues", vhost),
            params={"disable_stats": "true", "enable_queue_totals": "true", "columns": "name,messages"},
            auth=api.auth,
            timeout=30,
        )
        found = next(int(q.get("messages") or 0) for q in response.json() if q["name"] == queue)
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_topic_permissions_confine_an_mqtt_client(topo, api: Api, broker: Any, vhost_name: str) -> None:
    user, password = f"{vhost_name}-sensor", "sensor-Pw-77"
    topology = f"""
    users:
      {json.dumps(user)}: {{password: {json.dumps(password)}}}
    vhosts:
      {json.dumps(vhost_name)}:
        prune: true
        queues:
          readings: {{}}
          commands: {{}}
        bindings:
          - {{source: amq.topic, destination: readings, routing_key: "sensors.#"}}
          - {{source: amq.topic, destination: commands, routing_key: "actuators.#"}}
        permissions:
          {json.dumps(user)}: {{configure: ".*", write: ".*", read: ".*"}}
        topic_permissions:
          {json.dumps(user)}:
            amq.topic: {{write: "^sensors\\\\.", read: ".*"}}
    """
    try:
        applied = topo("apply", "--auto-approve", topology=topology)
        assert applied.code == 0, applied.output
        publish(broker, vhost_name, user, password, "sensors/t1")  # MQTT "a/b" is routing key "a.b"
        assert count(api, vhost_name, "readings") == 1
        publish(broker, vhost_name, user, password, "actuators/x")
        time.sleep(1)
        assert count(api, vhost_name, "commands") == 0  # refused by the topic permission

        # A persistent MQTT session makes an mqtt-subscription-* queue: never drift, never pruned.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="topo-sub", clean_session=False)
        client.username_pw_set(f"{vhost_name}:{user}", password)
        client.connect("127.0.0.1", mqtt_port(broker), keepalive=10)
        client.loop_start()
        client.subscribe("sensors/#", qos=1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(q["name"].startswith("mqtt-subscription-") for q in api.get("queues", vhost_name)):
                break
            time.sleep(0.2)
        client.loop_stop()
        client.disconnect()
        assert any(q["name"].startswith("mqtt-subscription-") for q in api.get("queues", vhost_name))
        plan = topo("plan", "--json", "--detailed-exitcode")
        assert plan.code == 0, plan.stdout
        assert json.loads(plan.stdout)["unmanaged"] == []

        # Nor exported: the session queue and its binding to amq.topic are the plugin's.
        exported = run_topo("export", "--vhost", vhost_name, "--keep-hashes", env=broker_env(broker))
        assert exported.code == 0, exported.output
        assert "mqtt-subscription" not in exported.stdout
        assert "readings: {}" in exported.stdout
        assert topo("plan", "--detailed-exitcode", topology=exported.stdout).code == 0
    finally:
        requests.delete(api._url("users", user), auth=api.auth, timeout=30)
